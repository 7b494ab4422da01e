"""The ``txt`` reader: plain text, one document per line (optionally gzip-compressed)."""

from __future__ import annotations

import operator
from itertools import compress, count, repeat
from typing import ClassVar

from qckit.components import BLANK_LINE, Document, IssueLog, RecordBlock
from qckit_builtins.readers.lines import LineRecords, decode_line


class TxtReader(LineRecords):
    """Plain text, one document per line (``.txt``, ``.txt.gz``). Blank lines are skipped (counted as
    ``blank_line``); the text is kept as written, surrounding spaces included."""

    name: ClassVar[str] = "txt"
    surrogate_free: ClassVar[bool] = True  # UTF-8 or cp1252 decoding never makes one
    suffixes: ClassVar[tuple[str, ...]] = (".txt", ".txt.gz")

    def parse(self, record: bytes, source: str, line: int, issues: IssueLog) -> Document | None:
        text = decode_line(record, source, line, issues)
        if not text or text.isspace():
            issues.add(BLANK_LINE, source, line, "blank line skipped")
            return None
        return Document(text, source, line)

    def parse_batch(
        self, records: list[bytes], source: str, first_line: int, issues: IssueLog
    ) -> list[Document | None]:
        """Same as ``parse`` on each record; decodes the whole batch at once when it is valid UTF-8."""
        return self.parse_block(RecordBlock(b"\n".join(records), len(records)), source, first_line, issues)

    def parse_block(
        self, block: RecordBlock, source: str, first_line: int, issues: IssueLog
    ) -> list[Document | None]:
        """``parse_batch(block.records(), …)``, decoding the block's bytes at once when they are valid UTF-8."""
        if not block.count:
            return []
        try:
            texts = block.data.decode("utf-8").split("\n")
        except UnicodeDecodeError:
            return [self.parse(r, source, first_line + i, issues) for i, r in enumerate(block.records())]
        out: list[Document | None] = list(map(Document, texts, repeat(source), count(first_line)))
        # Blank lines (few): "" or only whitespace
        for k in compress(count(), map(operator.or_, map(operator.not_, texts), map(str.isspace, texts))):
            issues.add(BLANK_LINE, source, first_line + k, "blank line skipped")
            out[k] = None
        return out
