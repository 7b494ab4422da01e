"""Where a prepare run's documents come from: input files (read in corpus order, cut into batches by
bytes) or in-memory items.

Reading raw records is cheap I/O; decoding them is the readers' ``parse`` in
:func:`qckit.prepare.work.process`. :func:`record_batches` cuts a reader's records into batches, for
the driver (whole files) and for shard workers (byte ranges) alike; :func:`block_batches` makes the same
batches from a reader's blocks of records (``record_blocks``), without a Python step per record.
"""

from __future__ import annotations

import inspect
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qckit.components import Document, RecordBlock, SkippedRecord
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


#: what a path that is not a regular file is, by the file type bits of its mode
_NOT_REGULAR = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def not_regular_error(path: object, mode: int) -> InputError | None:
    """The error for an input whose ``st_mode`` is not a regular file's, naming what it is ("is a FIFO
    (named pipe), not a regular file"), else ``None``. Such a file has no size to read up to (a FIFO
    reads as empty once its writer is gone, a device never ends), so it is refused, never read."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return InputError(path, "is a directory, expected a file")
    what = next((what for test, what in _NOT_REGULAR if test(mode)), "a special file")
    return InputError(path, f"is {what}, not a regular file")


def check_input_file(path: Path) -> None:
    """Raise :class:`InputError` (one line: the path and what is wrong) for an input that cannot be read."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        # qckit reads files whose size it knows at the start; "-" does not mean standard input
        hint = " (standard input cannot be an input: give a file)" if str(path) == "-" else ""
        raise InputError(path, f"no such file{hint}") from None
    except OSError as exc:  # a parent directory that cannot be searched, a name too long …
        raise InputError(path, exc.strerror or str(exc)) from None
    error = not_regular_error(path, st.st_mode)
    if error is not None:
        raise error
    if st.st_size == 0:
        raise InputError(path, "file is empty")
    if not os.access(path, os.R_OK):
        raise InputError(path, "permission denied")


def check_distinct(paths: Sequence[str | os.PathLike[str]]) -> None:
    """Raise :class:`InputError` naming both spellings, as given, when two inputs are the same file (the
    same name twice, ``a.txt`` and ``./a.txt``, a hard or symbolic link; compared by device and inode):
    its documents would be read twice, and the second copy's ``train_N``/``val_N`` left empty by
    deduplication."""
    seen: dict[tuple[int, int], int] = {}
    for i, path in enumerate(paths):
        st = os.stat(path)
        first = seen.setdefault((st.st_dev, st.st_ino), i)
        if first != i:
            other = paths[first]
            same = "given twice" if str(other) == str(path) else f"is the same file as {other}"
            raise InputError(path, f"{same}; list each input once")


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


def input_files(
    given: Sequence[str | os.PathLike[str]], readers: dict[str, Any], merge: bool
) -> list[InputFile]:
    """Check every input and pick its reader; raises :class:`InputError` for the first unusable one, or
    for an input given twice. Each input's size is recorded here, at planning."""
    paths = [Path(p) for p in given]
    for path in paths:
        check_input_file(path)
    check_distinct(given)
    return [
        InputFile(i, 0 if merge else i, str(path), reader_for(path, readers), path.stat().st_size)
        for i, path in enumerate(paths)
    ]


def _read_error(exc: Exception, inp: InputFile, reader: Any, line: int) -> QckitError:
    """What an error while reading ``inp`` at ``line`` becomes: an OS error one :class:`InputError`
    naming the file and line, anything else the reader's fault."""
    if isinstance(exc, OSError):
        return InputError(inp.path, f"cannot read: {exc.strerror or exc}", line)
    return ComponentError("reader", inp.reader, reader.owner, f"{inp.path}:{line}", exc)


def record_batches(
    records: Iterable[bytes | SkippedRecord], inp: InputFile, reader: Any, first_line: int, batch_bytes: int
) -> Iterator[Batch]:
    """Cut ``records`` of ``inp`` (the first one numbered ``first_line``) into batches of about
    ``batch_bytes`` (a batch ends with the record that makes its size, each record counted with one byte
    for its line end, reach ``batch_bytes``); a record the reader skipped ends a batch and is counted in
    the next one. A read error becomes one :class:`InputError` naming the file and line."""
    batch: list[bytes] = []
    skipped: list[tuple[int, str, str]] = []
    size = 0
    first = first_line
    line = first_line - 1  # the last record read

    def cut() -> Batch:
        return Batch(inp.set_index, inp.file_index, inp.path, inp.reader, first, batch, size, skipped)

    try:
        for line, record in enumerate(records, start=first_line):  # noqa: B007 - line is used after the loop
            if record.__class__ is not bytes and isinstance(record, SkippedRecord):
                if batch:
                    yield cut()
                    batch, size, skipped = [], 0, []
                skipped.append((line, record.kind, record.message))
                first = line + 1
                continue
            batch.append(record)
            size += len(record) + 1
            if size >= batch_bytes:
                yield cut()
                batch, size, first, skipped = [], 0, line + 1, []
    except QckitError:
        raise
    except Exception as exc:
        raise _read_error(exc, inp, reader, line + 1) from exc
    if batch or skipped:
        yield cut()


def read_records(reader: Any, path: Path, max_bytes: int) -> Iterator[bytes | SkippedRecord]:
    """``reader.records(path, max_bytes)``. A reader written before ``records`` took the limit gets
    its over-long records replaced here (counted the same way, but they were held in memory once)."""
    try:
        takes_limit = len(inspect.signature(reader.records).parameters) >= 2
    except (TypeError, ValueError):
        takes_limit = True
    if takes_limit:
        return reader.records(path, max_bytes)
    return _limited(reader.records(path), max_bytes)


def _limited(records: Iterable[Any], max_bytes: int) -> Iterator[Any]:
    for record in records:
        if isinstance(record, bytes) and len(record) > max_bytes:
            yield SkippedRecord.too_long(len(record), max_bytes)
        else:
            yield record


def block_batches(
    blocks: Iterable[RecordBlock | SkippedRecord],
    inp: InputFile,
    reader: Any,
    first_line: int,
    batch_bytes: int,
) -> Iterator[Batch]:
    """:func:`record_batches` for a reader's :meth:`~qckit.components.Reader.record_blocks`: the same
    batches, each holding its records as one :class:`~qckit.components.RecordBlock`, cut with searches
    for line ends instead of a step per record."""
    parts: list[bytes] = []  # pieces of the batch's block, each a whole number of records
    count = 0
    skipped: list[tuple[int, str, str]] = []
    size = 0
    first = first_line
    line = first_line - 1  # the last record read

    def cut() -> Batch:
        block: RecordBlock | list[bytes] = RecordBlock(b"\n".join(parts), count) if count else []
        return Batch(inp.set_index, inp.file_index, inp.path, inp.reader, first, block, size, skipped)

    try:
        for item in blocks:
            if item.__class__ is not RecordBlock:
                assert isinstance(item, SkippedRecord)
                if count:
                    yield cut()
                    parts, count, size, skipped = [], 0, 0, []
                line += 1
                skipped.append((line, item.kind, item.message))
                first = line + 1
                continue
            data, left = item.data, item.count  # type: ignore[union-attr]
            pos = 0  # where the next record of the block starts
            while left:
                # The batch ends with the record whose line end brings it to batch_bytes: the first line
                # end at or after pos + need - 1, or the block's last record.
                need = batch_bytes - size
                end = data.find(b"\n", pos + need - 1)
                if end < 0:
                    parts.append(data[pos:] if pos else data)
                    count += left
                    size += len(data) - pos + 1
                    line += left
                    left = 0
                    if size >= batch_bytes:
                        yield cut()
                        parts, count, size, first, skipped = [], 0, 0, line + 1, []
                    break
                taken = data.count(b"\n", pos, end) + 1
                parts.append(data[pos:end])
                count += taken
                size += end - pos + 1
                line += taken
                left -= taken
                yield cut()
                parts, count, size, first, skipped = [], 0, 0, line + 1, []
                pos = end + 1
    except QckitError:
        raise
    except Exception as exc:
        raise _read_error(exc, inp, reader, line + 1) from exc
    if count or skipped:
        yield cut()


def file_batches(
    files: list[InputFile], readers: dict[str, Any], batch_bytes: int, max_line_bytes: int
) -> Iterator[Batch]:
    """The records of every input, in corpus order, in batches of about ``batch_bytes`` (with a reader's
    ``record_blocks`` when it has them)."""
    for inp in files:
        reader = readers[inp.reader]
        blocks = getattr(reader.instance, "record_blocks", None)
        if blocks is not None:
            yield from block_batches(blocks(Path(inp.path), max_line_bytes), inp, reader, 1, batch_bytes)
            continue
        records = read_records(reader.instance, Path(inp.path), max_line_bytes)
        yield from record_batches(records, inp, reader, 1, batch_bytes)


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
