"""Line reading shared by the built-in readers: streaming, BOM and line endings, UTF-8 with a cp1252 fallback.

``records`` streams raw lines in the main process (1 MiB reads, constant memory); ``parse`` decodes one
line in a worker. Decoding is strict UTF-8; a line that is not valid UTF-8 is decoded on its own with
its invalid bytes read as Windows-1252 (bytes that cp1252 leaves undefined become the Latin-1 character
of the same number), and counted as ``decoded_cp1252``. One bad line never costs the rest of the file.

Line numbers are 1-based; ``\\n``, ``\\r\\n`` and ``\\r`` each end a line (mixed too). A UTF-8 byte-order
mark is dropped; a UTF-16 or UTF-32 one makes the file decoded as such; a line longer than
``[prepare] max_line_bytes`` is skipped while streaming and counted as ``line_too_long``. A file is
read up to its size when it was opened, never past it; a FIFO, socket or device is refused.
Blank lines are skipped and counted under the issue kind ``blank_line`` so that every input line is
accounted for; they are normal in text files, so a report may show that kind as information only.
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import io
import itertools
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from qckit.components import IssueLog, RecordBlock, SkippedRecord
from qckit.errors import InputError
from qckit.prepare.inputs import not_regular_error
from qckit.settings import MAX_LINE_BYTES

#: bytes read at a time by ``records``
CHUNK_SIZE = 1 << 20

# Windows-1252 for the bytes 0x80-0x9F; the five bytes it leaves undefined (0x81 0x8D 0x8F 0x90 0x9D) keep
# their Latin-1 meaning (a C1 control character), so decoding never fails.
_CP1252_HIGH = {b: bytes([b]).decode("cp1252", errors="ignore") or chr(b) for b in range(0x80, 0xA0)}
_LATIN1_TO_CP1252 = str.maketrans({chr(b): ch for b, ch in _CP1252_HIGH.items()})
_ERROR_HANDLER = "qckit.cp1252"


def _cp1252_fallback(err: UnicodeError) -> tuple[str, int]:
    if not isinstance(err, UnicodeDecodeError):
        raise err
    bad = err.object[err.start : err.end]
    return bytes(bad).decode("latin-1").translate(_LATIN1_TO_CP1252), err.end


codecs.register_error(_ERROR_HANDLER, _cp1252_fallback)


def decode_line(record: bytes, source: str, line: int, issues: IssueLog) -> str:
    """Decode ``record`` as UTF-8; bytes that are not valid UTF-8 are read as cp1252 and the line is
    counted under ``decoded_cp1252``."""
    try:
        return record.decode("utf-8")
    except UnicodeDecodeError:
        issues.add("decoded_cp1252", source, line, "not valid UTF-8, decoded as cp1252")
        return record.decode("utf-8", errors=_ERROR_HANDLER)


#: open without waiting: a FIFO would block until a writer came (it is refused once opened)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[tuple[BinaryIO, int]]:
    """``path`` open for reading (gzip-decompressed when its name ends with ``.gz``) and its size in
    bytes when it was opened. Nothing past that size is read, so a file that grows while it is read
    (a log still being written) gives what it held at open (the pipeline reports the growth). A
    directory, FIFO, socket or device is refused, naming what it is, before anything is read."""
    try:
        fd = os.open(path, os.O_RDONLY | _NONBLOCK)  # no effect on a regular file's reads
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except PermissionError:
        raise InputError(path, "permission denied") from None
    except OSError as e:  # a socket cannot be opened (ENXIO): say what it is
        try:
            error = not_regular_error(path, os.stat(path).st_mode)
        except OSError:
            error = None
        raise (error or InputError(path, f"cannot open: {e.strerror or e}")) from None
    try:
        st = os.fstat(fd)
        error = not_regular_error(path, st.st_mode)
        if error is not None:
            raise error
        raw = os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise
    with raw:
        if not _is_compressed(path):
            yield raw, st.st_size
            return
        with gzip.GzipFile(fileobj=_UpTo(raw, st.st_size), mode="rb") as gz:
            yield gz, st.st_size


class _UpTo(io.RawIOBase):
    """The first ``size`` bytes of ``raw`` (what a compressed file held when it was opened)."""

    def __init__(self, raw: BinaryIO, size: int) -> None:
        self._raw, self._left = raw, size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self._left)
        if want <= 0:
            return 0
        got = self._raw.readinto(memoryview(buffer)[:want]) or 0  # type: ignore[attr-defined]
        self._left -= got
        return got


def _chunks(f, path: Path, chunk_size: int, limit: int | None = None) -> Iterator[bytes]:
    """Read ``f`` in pieces of ``chunk_size`` bytes (at most ``limit`` bytes in all, when given)."""
    gz = isinstance(f, gzip.GzipFile)
    while limit is None or limit > 0:
        want = chunk_size if limit is None else min(chunk_size, limit)
        try:
            chunk = f.read(want)
        except (EOFError, zlib.error) as e:
            raise InputError(path, f"corrupt gzip file: {e}") from None
        except OSError as e:  # gzip.BadGzipFile is an OSError
            if gz:
                raise InputError(path, f"corrupt gzip file: {e}") from None
            raise InputError(path, f"read error: {e.strerror or e}") from None
        if not chunk:
            return
        if limit is not None:
            limit -= len(chunk)
        yield chunk


def _is_compressed(path: Path) -> bool:
    return path.name.lower().endswith(".gz")


# -- encodings ---------------------------------------------------------------------------------------

_UTF8_BOM = b"\xef\xbb\xbf"
# longest first: the UTF-32 LE mark begins with the UTF-16 LE one
_WIDE_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32-le", "UTF-32"),
    (b"\x00\x00\xfe\xff", "utf-32-be", "UTF-32"),
    (b"\xff\xfe", "utf-16-le", "UTF-16"),
    (b"\xfe\xff", "utf-16-be", "UTF-16"),
)


def _encoding(head: bytes) -> tuple[str, int, str]:
    """(codec, length of its byte-order mark, name) for a file that starts with ``head``."""
    if head.startswith(_UTF8_BOM):
        return "utf-8", 3, "UTF-8"
    for bom, codec, label in _WIDE_BOMS:
        if head.startswith(bom):
            return codec, len(bom), label
    return "utf-8", 0, "UTF-8"


def _looks_wide(head: bytes) -> bool:
    """Text without a byte-order mark that is mostly NUL bytes: UTF-16/32 (or not text at all)."""
    return len(head) >= 64 and head.count(0) * 4 >= len(head)


def _transcode(chunks: Iterator[bytes], codec: str, label: str, path: Path) -> Iterator[bytes]:
    """UTF-16/32 chunks as UTF-8; invalid text refuses the file in one line."""
    decoder = codecs.getincrementaldecoder(codec)(errors="strict")
    done = 0
    try:
        for chunk in chunks:
            text = decoder.decode(chunk)
            done += len(chunk)
            if text:
                yield text.encode("utf-8")
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as e:
        where = done + e.start
        raise InputError(
            path, f"not valid {label} (it starts with a {label} byte-order mark) at byte {where:,}"
        ) from None


# -- lines ---------------------------------------------------------------------------------------------


def _split(chunks: Iterator[bytes], limit: int) -> Iterator[bytes | SkippedRecord]:
    """The lines of a byte stream, one at a time (see :func:`_split_blocks`)."""
    for item in _split_blocks(chunks, limit):
        if item.__class__ is RecordBlock:
            yield from item.records()  # type: ignore[union-attr]
        else:
            yield item


def _split_blocks(chunks: Iterator[bytes], limit: int) -> Iterator[RecordBlock | SkippedRecord]:
    """The lines of a byte stream in blocks: ``\n``, ``\r\n`` and ``\r`` end a line (also mixed, also
    across chunk boundaries); a line longer than ``limit`` bytes is never joined: its pieces are counted
    and dropped as they come, and a :class:`SkippedRecord` takes its place. The lines that lie wholly
    inside one chunk come out as one block, the one that a chunk boundary cuts as a block of its own."""
    pending: list[bytes] = []  # pieces of the current line
    size = 0  # its length so far
    skipping = False  # the current line is too long: count, do not keep
    after_cr = False  # the previous chunk ended with \r: a \n opening this chunk belongs to it
    for chunk in chunks:
        if after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
            after_cr = False
            if not chunk:
                continue
        if b"\r" in chunk:
            after_cr = chunk.endswith(b"\r")
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        else:
            after_cr = False
        first_end = chunk.find(b"\n")
        if first_end < 0:
            size += len(chunk)
            if skipping or size > limit:
                skipping = True
                pending.clear()
            else:
                pending.append(chunk)
            continue
        last_end = chunk.rfind(b"\n")
        first = chunk[:first_end]
        size += len(first)
        if skipping or size > limit:
            yield SkippedRecord.too_long(size, limit)
        elif pending:
            pending.append(first)
            yield RecordBlock(b"".join(pending), 1)
        else:
            yield RecordBlock(first, 1)
        if last_end > first_end:
            middle = chunk[first_end + 1 : last_end]
            if len(chunk) <= limit:  # no line inside one chunk can be too long
                yield RecordBlock(middle, middle.count(b"\n") + 1)
            else:
                yield from _blocks_within(middle.split(b"\n"), limit)
        pending.clear()
        last = chunk[last_end + 1 :]
        size = len(last)
        skipping = size > limit
        if last and not skipping:
            pending.append(last)
    if skipping:
        yield SkippedRecord.too_long(size, limit)
    elif size:  # the last line, without a line ending
        yield RecordBlock(b"".join(pending), 1)


def _blocks_within(lines: list[bytes], limit: int) -> Iterator[RecordBlock | SkippedRecord]:
    """``lines`` as blocks of consecutive lines of at most ``limit`` bytes, the longer ones skipped."""
    run: list[bytes] = []
    for line in lines:
        if len(line) <= limit:
            run.append(line)
            continue
        if run:
            yield RecordBlock(b"\n".join(run), len(run))
            run = []
        yield SkippedRecord.too_long(len(line), limit)
    if run:
        yield RecordBlock(b"\n".join(run), len(run))


def iter_lines(
    path: str | os.PathLike[str],
    chunk_size: int = CHUNK_SIZE,
    start: int = 0,
    end: int | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> Iterator[bytes | SkippedRecord]:
    """Yield the lines of ``path`` as bytes without their line ending (``\n``, ``\r\n`` or ``\r``),
    gzip-decompressed when the name ends with ``.gz``; a UTF-8 byte-order mark is removed, a UTF-16 or
    UTF-32 one makes the file decoded as such (the lines come out as UTF-8). A line longer than
    ``max_line_bytes`` is skipped while streaming (:class:`~qckit.components.SkippedRecord`), so memory
    stays bounded by ``chunk_size`` plus ``max_line_bytes``. With ``start``/``end`` (an uncompressed
    file, a range from :func:`byte_ranges`): only the lines that start in ``[start, end)``. Raises
    :class:`~qckit.errors.InputError` for a missing file, a directory, FIFO, socket or device, a corrupt
    gzip stream, invalid UTF-16/32, or text that looks like UTF-16/32 without a byte-order mark. Reads
    up to the file's size when it was opened (a file that grows meanwhile is not read past it)."""
    return _split(_text_chunks(Path(path), chunk_size, start, end), max_line_bytes)


def iter_blocks(
    path: str | os.PathLike[str],
    chunk_size: int = CHUNK_SIZE,
    start: int = 0,
    end: int | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> Iterator[RecordBlock | SkippedRecord]:
    """:func:`iter_lines` in blocks of lines (:class:`~qckit.components.RecordBlock`): the same lines and
    skipped lines in the same order, without a Python step per line."""
    return _split_blocks(_text_chunks(Path(path), chunk_size, start, end), max_line_bytes)


def _text_chunks(path: Path, chunk_size: int, start: int, end: int | None) -> Iterator[bytes]:
    """The bytes of ``path`` (or of ``[start, end)``) in chunks, as UTF-8 without a byte-order mark (see
    :func:`iter_lines`); the whole file up to its size at open (:func:`_opened`)."""
    with _opened(path) as (f, size):
        if start:
            f.seek(start)
        # a compressed file's size at open bounds the bytes that _opened decompresses
        limit = None if _is_compressed(path) else (size if end is None else end) - start
        chunks = _chunks(f, path, chunk_size, limit)
        head = b""
        for piece in chunks:
            head += piece
            if len(head) >= 4096:
                break
        if start == 0:
            codec, skip, label = _encoding(head)
            head = head[skip:]
            if codec != "utf-8":
                yield from _transcode(itertools.chain((head,), chunks), codec, label, path)
                return
            if not skip and _looks_wide(head):
                raise InputError(
                    path,
                    "looks like UTF-16 or UTF-32 text without a byte-order mark (many NUL bytes); convert it to UTF-8",
                )
        yield head
        yield from chunks


def byte_ranges(path: str | os.PathLike[str], size: int) -> list[tuple[int, int]]:
    """Consecutive ``(start, end)`` ranges of about ``size`` bytes covering ``path``, each starting at a
    line start; ``[]`` when the file cannot be read from the middle (compressed, UTF-16/32)."""
    path = Path(path)
    if _is_compressed(path):
        return []
    with _opened(path) as (f, total):
        if _encoding(f.read(4))[0] != "utf-8":
            return []
        cuts = [0]
        target = size
        while target < total:
            start = _next_line_start(f, path, target)
            if start >= total:
                break
            cuts.append(start)
            target = max(start, target) + size
    return [(a, b) for a, b in zip(cuts, [*cuts[1:], total], strict=True)]


def _next_line_start(f, path: Path, pos: int) -> int:
    """The first line start at or after ``pos`` (> 0): a line starts after ``\\n``, and after a ``\\r``
    that no ``\\n`` follows."""
    f.seek(pos - 1)
    offset = pos - 1
    prev_cr = False
    for chunk in _chunks(f, path, 1 << 16):
        if prev_cr:
            return offset + (1 if chunk[:1] == b"\n" else 0)
        hits = [i for i in (chunk.find(b"\n"), chunk.find(b"\r")) if i >= 0]
        if not hits:
            offset += len(chunk)
            continue
        i = min(hits)
        if chunk[i] == 0x0A:  # \n
            return offset + i + 1
        if i + 1 < len(chunk):  # \r, and a \n right after it belongs to it
            return offset + i + (2 if chunk[i + 1] == 0x0A else 1)
        prev_cr = True
        offset += len(chunk)
    return offset


class LineRecords:
    """The record methods of a reader whose records are the lines of its file: streaming, byte ranges
    cut at line starts (so one big file spreads over shards), and the lines of one range."""

    def records(self, path: Path, max_bytes: int = MAX_LINE_BYTES) -> Iterator[bytes | SkippedRecord]:
        return iter_lines(path, max_line_bytes=max_bytes)

    def record_blocks(
        self, path: Path, max_bytes: int = MAX_LINE_BYTES
    ) -> Iterator[RecordBlock | SkippedRecord]:
        return iter_blocks(path, max_line_bytes=max_bytes)

    def byte_ranges(self, path: Path, size: int) -> list[tuple[int, int]]:
        return byte_ranges(path, size)

    def records_between(
        self, path: Path, start: int, end: int, max_bytes: int = MAX_LINE_BYTES
    ) -> Iterator[bytes | SkippedRecord]:
        return iter_lines(path, start=start, end=end, max_line_bytes=max_bytes)
