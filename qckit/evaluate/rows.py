"""Reading JSON Lines eval files: one row per line, bad rows counted with ``file:line``, never fatal;
``{field}`` templates over a row. Imports nothing heavy (evaluator constructors use it at recipe load)."""

from __future__ import annotations

import json
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from qckit.components import IssueLog
from qckit.errors import InputError

__all__ = ["iter_rows", "text_field", "template_fields"]


def iter_rows(path: str | Path, issues: IssueLog) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line, row)`` for every line of ``path`` that holds a JSON object (1-based line numbers).

    Blank lines are skipped silently. A line that is not UTF-8 (``not_utf8``), not JSON
    (``invalid_json``) or not an object (``not_an_object``) is noted in ``issues`` and skipped.
    Raises :class:`~qckit.errors.InputError` when the file is missing.
    """
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
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                issues.add("invalid_json", source, number, f"invalid JSON: {exc.msg}")
                continue
            if not isinstance(row, dict):
                issues.add(
                    "not_an_object", source, number, f"expected a JSON object, got {type(row).__name__}"
                )
                continue
            yield number, row


def no_usable(source: str, what: str, issues: IssueLog) -> InputError:
    """The error for a file none of whose rows could be used: ``no usable <what>; N bad row(s), first: …``."""
    detail = f"; {issues.total()} bad row(s), first: {issues.first_example()}" if issues else ""
    return InputError(source, f"no usable {what}{detail}")


def text_field(row: dict[str, Any], key: str) -> str | None:
    """``row[key]`` stripped when it is a non-empty string, else ``None``."""
    value = row.get(key)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


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
