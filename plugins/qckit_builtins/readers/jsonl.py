"""The ``jsonl`` reader: JSON Lines, one object per line, the text in a configurable field."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from qckit.components import (
    BLANK_LINE,
    LONE_SURROGATE,
    Document,
    IssueLog,
    has_surrogates,
    repair_surrogates,
)
from qckit.errors import RecordError
from qckit_builtins.readers.lines import LineRecords, decode_line

#: the issue kind of a line that began with a byte-order mark (U+FEFF), removed: two files joined with
#: ``cat`` put the second one's mark at the start of a line, where JSON does not allow it
LEADING_BOM = "leading_bom"

_JSON_TYPES = {
    dict: "an object",
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


class JsonlReader(LineRecords):
    """JSON Lines, one object per line (``.jsonl``, ``.jsonl.gz``); the document text is the string in
        ``field``. When ``fallback_fields`` is not given and ``field`` is ``"text"``, the fields ``"content"``
        then ``"sentence"`` are tried next, as the original script did; an explicit list replaces that rule.
        An ``"id"`` string or integer is kept in ``meta["id"]``. Lone surrogate escapes (``"\\ud800"``) in the
    text or the id are replaced by U+FFFD and counted (``lone_surrogate``); a byte-order mark that opens
    a line (a second file joined after the first) is removed and counted (``leading_bom``). Bad lines raise
        :class:`~qckit.errors.RecordError` (``invalid_json``, ``not_an_object``, ``missing_text``,
        ``null_text``, ``text_not_string``); blank lines and empty texts are skipped and counted."""

    name: ClassVar[str] = "jsonl"
    surrogate_free: ClassVar[bool] = True  # lone surrogate escapes are repaired in parse
    suffixes: ClassVar[tuple[str, ...]] = (".jsonl", ".jsonl.gz")

    def __init__(self, field: str = "text", fallback_fields: list[str] | None = None) -> None:
        if not isinstance(field, str) or not field:
            raise ValueError("field must be a non-empty string")
        if fallback_fields is None:
            fallback_fields = ["content", "sentence"] if field == "text" else []
        if not all(isinstance(f, str) and f for f in fallback_fields):
            raise ValueError("fallback_fields must be a list of non-empty strings")
        self.field = field
        self.fallback_fields = list(fallback_fields)
        self.fields = tuple(dict.fromkeys([field, *fallback_fields]))

    def parse(self, record: bytes, source: str, line: int, issues: IssueLog) -> Document | None:
        raw = decode_line(record, source, line, issues)
        if raw.startswith("\ufeff"):
            raw = raw.lstrip("\ufeff")
            issues.add(LEADING_BOM, source, line, "byte-order mark at the start of the line removed")
        if not raw or raw.isspace():
            issues.add(BLANK_LINE, source, line, "blank line skipped")
            return None
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            raise RecordError("invalid_json", f"invalid JSON: {e.msg} (column {e.colno})") from None
        except RecursionError:
            raise RecordError("invalid_json", "invalid JSON: nested too deeply") from None
        if not isinstance(obj, dict):
            raise RecordError("not_an_object", f"expected a JSON object, got {_json_type(obj)}")
        for key in self.fields:
            if key in obj:
                break
        else:
            tried = ", ".join(f'"{k}"' for k in self.fields)
            raise RecordError("missing_text", f"no text field (tried {tried})")
        text = obj[key]
        if text is None:
            raise RecordError("null_text", f'field "{key}" is null')
        if not isinstance(text, str):
            raise RecordError("text_not_string", f'field "{key}" is {_json_type(text)}, expected a string')
        if not text or text.isspace():
            issues.add("empty_text", source, line, f'field "{key}" is empty, record skipped')
            return None
        ident = obj.get("id")
        if "\\u" in raw:  # a JSON escape is the only way to a lone surrogate
            fixed = False
            if has_surrogates(text):
                text, fixed = repair_surrogates(text), True
            if isinstance(ident, str) and has_surrogates(ident):
                ident, fixed = repair_surrogates(ident), True
            if fixed:
                issues.add(LONE_SURROGATE, source, line, "lone surrogate escape replaced by U+FFFD")
        doc = Document(text, source, line)
        if isinstance(ident, (str, int)) and not isinstance(ident, bool):
            doc.meta["id"] = ident
        return doc
