"""Built-in writers: plain text (one document per line) and JSON Lines.

Both guarantee one document per line for any line-splitting reader, including Python's
``str.splitlines``, which also breaks on ``\\v \\f \\x1c-\\x1e \\x85 \\u2028 \\u2029``.
"""

from __future__ import annotations

import functools
import json
import re
from typing import ClassVar

import numpy as np

from qckit import hookimpl
from qckit.components import Document
from qckit_builtins import accelerated

#: every character that ``str.splitlines`` treats as a line boundary
LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"
_TO_SPACE = str.maketrans({c: " " for c in LINE_BREAKS})
# str.translate with a dict costs ~20 µs on a non-ASCII line; a regex search finds the rare line that needs it.
_HAS_BREAK = re.compile("[" + re.escape(LINE_BREAKS) + "]").search
_HAS_JSON_RAW = re.compile("[\x85\u2028\u2029]").search
# json.dumps(ensure_ascii=False) escapes \n \r \v \f and \x1c-\x1e but writes these three raw.
_JSON_ESCAPE = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


@functools.cache
def _break_table() -> np.ndarray:
    """1 for each character of LINE_BREAKS, over the BMP (for ``_textscan.text_flags``)."""
    table = np.zeros(0x10000, dtype=np.uint8)
    table[[ord(c) for c in LINE_BREAKS]] = 1
    return table


class TxtWriter:
    """One document per line (``.txt``); line breaks inside a document become spaces."""

    name: ClassVar[str] = "txt"
    suffix: ClassVar[str] = ".txt"

    def format(self, doc: Document) -> str:
        text = doc.text
        return (text.translate(_TO_SPACE) if _HAS_BREAK(text) else text) + "\n"

    def format_batch(self, docs: list[Document]) -> list[str]:
        """``[self.format(d) for d in docs]``; one check of the whole batch for line breaks."""
        texts = [d.text for d in docs]
        scan = accelerated.textscan
        if scan is not None:  # one pass over each text finds the few with a line break
            lines = [t + "\n" for t in texts]
            for k in np.flatnonzero(
                np.frombuffer(scan.text_flags(texts, _break_table()), dtype=np.uint8)
            ).tolist():
                lines[k] = self.format(docs[k])
            return lines
        joined = " ".join(texts)
        # Every line break is unprintable, and isprintable is one C loop: most batches need no search.
        if not joined.isprintable() and _HAS_BREAK(joined):
            return [self.format(d) for d in docs]
        return [t + "\n" for t in texts]


class JsonlWriter:
    """One JSON object per line (``.jsonl``), UTF-8 unescaped: ``{"text", "source", "line"}`` plus ``"meta"``
    and ``"metrics"`` (keys sorted) when they are not empty; with ``metadata = false`` only ``{"text"}``."""

    name: ClassVar[str] = "jsonl"
    suffix: ClassVar[str] = ".jsonl"

    def __init__(self, metadata: bool = True) -> None:
        if not isinstance(metadata, bool):
            raise ValueError("metadata must be true or false")
        self.metadata = metadata

    def format(self, doc: Document) -> str:
        if self.metadata:
            obj: dict = {"text": doc.text, "source": doc.source, "line": doc.line}
            if doc.meta:
                obj["meta"] = doc.meta
            if doc.metrics:
                obj["metrics"] = dict(sorted(doc.metrics.items()))  # the same bytes whatever the filter order
        else:
            obj = {"text": doc.text}
        line = json.dumps(obj, ensure_ascii=False)
        return (line.translate(_JSON_ESCAPE) if _HAS_JSON_RAW(line) else line) + "\n"


@hookimpl
def register_writers(register) -> None:
    register(TxtWriter)
    register(JsonlWriter)
