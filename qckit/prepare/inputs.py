"""Where a prepare run's documents come from: input files (read in corpus order, cut into batches by
bytes) or in-memory items.

Reading raw records is cheap I/O; decoding them is the readers' ``parse`` in
:func:`qckit.prepare.work.process`. :func:`record_batches` is the one place that cuts records into
batches, for the driver (whole files) and for shard workers (byte ranges) alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qckit.components import Document
from qckit.errors import ComponentError, InputError, QckitError
from qckit.prepare.work import Batch

MEMORY_SOURCE = "<memory>"


@dataclass(frozen=True)
class InputFile:
    """One input of a run, in corpus order."""

    file_index: int
    set_index: int  # the output set it goes to (0 when merged)
    path: str
    reader: str  # the name of the reader that handles it
    size: int


def check_input_file(path: Path) -> None:
    """Raise :class:`InputError` for a missing, directory or empty input."""
    if not path.exists():
        raise InputError(path, "no such file")
    if path.is_dir():
        raise InputError(path, "is a directory, expected a file")
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty")


def reader_for(path: Path, readers: dict[str, Any]) -> str:
    """The name of the reader whose ``suffixes`` match ``path``'s name longest (``readers``: name → spec)."""
    name = path.name.lower()
    best = None
    for reader_name, spec in readers.items():
        for suffix in getattr(spec.instance, "suffixes", ()):
            if name.endswith(suffix) and (best is None or len(suffix) > best[1]):
                best = (reader_name, len(suffix))
    if best is None:
        known = sorted({s for spec in readers.values() for s in spec.instance.suffixes})
        raise InputError(path, f"unsupported file type; readers handle: {', '.join(known)}")
    return best[0]


def input_files(paths: list[Path], readers: dict[str, Any], merge: bool) -> list[InputFile]:
    """Check every input and pick its reader; raises :class:`InputError` for the first unusable one."""
    for path in paths:
        check_input_file(path)
    return [
        InputFile(i, 0 if merge else i, str(path), reader_for(path, readers), path.stat().st_size)
        for i, path in enumerate(paths)
    ]


def record_batches(
    records: Iterable[bytes], inp: InputFile, reader: Any, first_line: int, batch_bytes: int
) -> Iterator[Batch]:
    """Cut ``records`` of ``inp`` (the first one numbered ``first_line``) into batches of about
    ``batch_bytes``; a read error becomes one :class:`InputError` naming the file and line."""
    batch: list[bytes] = []
    size = 0
    first = first_line
    line = first_line - 1  # the last record read
    try:
        for line, record in enumerate(records, start=first_line):  # noqa: B007 - line is used after the loop
            batch.append(record)
            size += len(record) + 1
            if size >= batch_bytes:
                yield Batch(inp.set_index, inp.file_index, inp.path, inp.reader, first, batch, size)
                batch, size, first = [], 0, line + 1
    except QckitError:
        raise
    except OSError as exc:
        raise InputError(inp.path, f"cannot read: {exc}", line + 1) from exc
    except Exception as exc:
        raise ComponentError("reader", inp.reader, reader.owner, f"{inp.path}:{line + 1}", exc) from exc
    if batch:
        yield Batch(inp.set_index, inp.file_index, inp.path, inp.reader, first, batch, size)


def file_batches(files: list[InputFile], readers: dict[str, Any], batch_bytes: int) -> Iterator[Batch]:
    """The records of every input, in corpus order, in batches of about ``batch_bytes``."""
    for inp in files:
        reader = readers[inp.reader]
        yield from record_batches(reader.instance.records(Path(inp.path)), inp, reader, 1, batch_bytes)


def memory_documents(items: Iterable[str | dict | Document]) -> Iterator[Document]:
    """Documents from in-memory texts, ``{"text": …}`` dicts (other keys become ``meta``) or Documents."""
    for i, item in enumerate(items, start=1):
        if isinstance(item, Document):
            yield item
        elif isinstance(item, str):
            yield Document(item, MEMORY_SOURCE, i)
        elif isinstance(item, dict) and isinstance(item.get("text"), str):
            meta = {k: v for k, v in item.items() if k != "text"}
            yield Document(item["text"], MEMORY_SOURCE, i, meta=meta)
        else:
            raise InputError(
                MEMORY_SOURCE, f"item {i} is not a string, a dict with a 'text' string, or a Document", i
            )


def memory_batches(docs: Iterable[Document], batch_bytes: int) -> Iterator[Batch]:
    """In-memory documents in batches of about ``batch_bytes`` characters."""
    batch: list[Document] = []
    size = 0
    for doc in docs:
        batch.append(doc)
        size += len(doc.text) + 1
        if size >= batch_bytes:
            yield Batch(0, 0, MEMORY_SOURCE, None, batch[0].line, batch, size)
            batch, size = [], 0
    if batch:
        yield Batch(0, 0, MEMORY_SOURCE, None, batch[0].line, batch, size)
