"""Built-in readers: plain text (``txt``) and JSON Lines (``jsonl``), optionally gzip-compressed.

``records`` streams raw lines in the main process (1 MiB reads, constant memory); ``parse`` decodes one
line in a worker. See :mod:`qckit_builtins.readers.lines` for decoding and line numbering.
"""

from __future__ import annotations

from qckit import hookimpl
from qckit.prepare.inputs import check_input_file  # the one the pipeline runs on every input
from qckit_builtins.readers.jsonl import JsonlReader
from qckit_builtins.readers.lines import decode_line, iter_lines
from qckit_builtins.readers.txt import TxtReader

READERS = (TxtReader, JsonlReader)

__all__ = ["READERS", "JsonlReader", "TxtReader", "check_input_file", "decode_line", "iter_lines"]


@hookimpl
def register_readers(register) -> None:
    for component in READERS:
        register(component)
