"""Reading eval files: one row (JSON Lines) or one document (text) per line, bad rows counted with
``file:line`` and a reason, never fatal; ``{field}`` templates over a row. Imports nothing heavy
(evaluator constructors use it at recipe load).

A row's values are whatever JSON holds: the readers take only what they need from a row and check its
type, and messages describe a value with :func:`brief` (never a whole, possibly huge or deeply nested,
``repr``). Text is usable only when it encodes as UTF-8: JSON's ``\\ud800`` escapes decode to lone
surrogates, which no tokenizer (and no UTF-8 byte count) accepts.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeGuard

from qckit.components import IssueLog
from qckit.errors import InputError

__all__ = [
    "iter_rows",
    "iter_lines",
    "no_usable",
    "is_text",
    "text_field",
    "scalar_text",
    "brief",
    "template_fields",
]


def iter_rows(path: str | Path, issues: IssueLog) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line, row)`` for every line of ``path`` that holds a JSON object (1-based line numbers).

    Blank lines are skipped silently. A line that is not UTF-8 (``not_utf8``), not JSON
    (``invalid_json``, which includes an integer of more digits than Python converts), nested deeper
    than the JSON decoder recurses (``too_deep``) or not an object (``not_an_object``) is noted in
    ``issues`` and skipped. Raises :class:`~qckit.errors.InputError` when the file is missing.
    """
    source = str(path)
    for number, line in iter_lines(path, issues):
        try:
            row = json.loads(line)
        except RecursionError:
            issues.add("too_deep", source, number, "JSON nested too deeply to read")
            continue
        except ValueError as exc:  # JSONDecodeError, or an integer beyond int()'s digit limit
            issues.add("invalid_json", source, number, f"invalid JSON: {getattr(exc, 'msg', exc)}")
            continue
        if not isinstance(row, dict):
            issues.add("not_an_object", source, number, f"expected a JSON object, got {brief(row)}")
            continue
        yield number, row


def iter_lines(path: str | Path, issues: IssueLog) -> Iterator[tuple[int, str]]:
    """``(line, text)`` for every non-blank line of ``path``, stripped (1-based line numbers; split on
    ``\\n`` only, as training reads text). A line that is not UTF-8 is noted in ``issues``
    (``not_utf8``) and skipped. Raises :class:`~qckit.errors.InputError` when the file is missing."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "not a file" if path.exists() else "file not found")
    source = str(path)
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                issues.add("not_utf8", source, number, f"not valid UTF-8 ({exc.reason} at byte {exc.start})")
                continue
            if line:
                yield number, line


def no_usable(source: str, what: str, issues: IssueLog) -> InputError:
    """The error for a file none of whose rows could be used: ``no usable <what>; N bad row(s), first: …``."""
    detail = f"; {issues.total()} bad row(s), first: {issues.first_example()}" if issues else ""
    return InputError(source, f"no usable {what}{detail}")


def is_text(value: Any) -> TypeGuard[str]:
    """Whether ``value`` is a string that encodes as UTF-8 (no lone surrogate from a ``\\ud800`` escape)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def text_field(row: dict[str, Any], key: str) -> str | None:
    """``row[key]`` stripped when it is a non-empty string that :func:`is_text`, else ``None``."""
    value = row.get(key)
    text = value.strip() if is_text(value) else ""
    return text or None


def scalar_text(value: Any) -> str | None:
    """A string, number or boolean as text (``str(value)``), for a label or a template field; ``None``
    for a list, an object, ``null`` or a string that is not :func:`is_text`."""
    if isinstance(value, (bool, int, float)):
        return str(value)
    return value if is_text(value) else None


def brief(value: Any, limit: int = 40) -> str:
    """A short description of a JSON value for a message: the ``repr`` of a scalar, cut to ``limit``
    characters; only the type of a list or an object (their ``repr`` may be huge or nested too deep)."""
    if isinstance(value, (list, dict)):
        return f"a JSON {'array' if isinstance(value, list) else 'object'} of {len(value)} item(s)"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**limit:
        return "an integer too long to show"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def template_fields(template: str) -> list[str]:
    """The field names of a ``{field}`` template. Only plain names are allowed (no ``{a.b}``,
    ``{a[0]}``, conversions or format specs: a template is data); ``{{`` and ``}}`` are braces."""
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"invalid template: {exc}") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise ValueError(
                f"template placeholders must be plain field names like {{sentence}}, got {{{name}}}"
            )
        names.append(name)
    return names
