"""Line reading shared by the built-in readers: streaming, BOM and line endings, UTF-8 with a cp1252 fallback.

``records`` streams raw lines in the main process (1 MiB reads, constant memory); ``parse`` decodes one
line in a worker. Decoding is strict UTF-8; a line that is not valid UTF-8 is decoded on its own with
its invalid bytes read as Windows-1252 (bytes that cp1252 leaves undefined become the Latin-1 character
of the same number), and counted as ``decoded_cp1252``. One bad line never costs the rest of the file.

Line numbers are 1-based and count ``\\n`` line endings (``\\r\\n`` and a final ``\\r`` are stripped).
Blank lines are skipped and counted under the issue kind ``blank_line`` so that every input line is
accounted for; they are normal in text files, so a report may show that kind as information only.
"""

from __future__ import annotations

import codecs
import gzip
import itertools
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

from qckit.components import IssueLog
from qckit.errors import InputError

#: bytes read at a time by ``records``
CHUNK_SIZE = 1 << 20
_BOM = b"\xef\xbb\xbf"

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


def check_input_file(path: str | os.PathLike[str]) -> None:
    """Raise :class:`~qckit.errors.InputError` if ``path`` is missing, a directory, unreadable or empty."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise InputError(p, "no such file") from None
    except PermissionError:
        raise InputError(p, "permission denied") from None
    except OSError as e:
        raise InputError(p, f"cannot read: {e.strerror or e}") from None
    if p.is_dir():
        raise InputError(p, "is a directory, expected a file")
    if st.st_size == 0:
        raise InputError(p, "file is empty")
    if not os.access(p, os.R_OK):
        raise InputError(p, "permission denied")


def _open(path: Path):
    try:
        if path.name.lower().endswith(".gz"):
            return gzip.open(path, "rb")
        return open(path, "rb", buffering=0)
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except IsADirectoryError:
        raise InputError(path, "is a directory, expected a file") from None
    except PermissionError:
        raise InputError(path, "permission denied") from None
    except OSError as e:
        raise InputError(path, f"cannot open: {e.strerror or e}") from None


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


def byte_ranges(path: str | os.PathLike[str], size: int) -> list[tuple[int, int]]:
    """Consecutive ``(start, end)`` ranges of about ``size`` bytes covering ``path``, each starting at a
    line start; ``[]`` for a compressed file (it cannot be read from the middle)."""
    path = Path(path)
    if _is_compressed(path):
        return []
    total = path.stat().st_size
    cuts = [0]
    with _open(path) as f:
        target = size
        while target < total:
            start = _next_line_start(f, path, target)
            if start >= total:
                break
            cuts.append(start)
            target = max(start, target) + size
    return [(a, b) for a, b in zip(cuts, [*cuts[1:], total], strict=True)]


def _next_line_start(f, path: Path, pos: int) -> int:
    """The first line start at or after ``pos`` (> 0): the byte after the first ``\n`` at or after ``pos - 1``."""
    f.seek(pos - 1)
    offset = pos - 1
    for chunk in _chunks(f, path, 1 << 16):
        i = chunk.find(b"\n")
        if i >= 0:
            return offset + i + 1
        offset += len(chunk)
    return offset


def iter_lines(
    path: str | os.PathLike[str], chunk_size: int = CHUNK_SIZE, start: int = 0, end: int | None = None
) -> Iterator[bytes]:
    """Yield the lines of ``path`` (gzip-decompressed when its name ends with ``.gz``) as bytes without their
    line ending, a UTF-8 BOM removed from the first. Memory stays bounded by ``chunk_size`` plus the longest
    line. With ``start``/``end`` (an uncompressed file, a range from :func:`byte_ranges`): only the lines
    that start in ``[start, end)``. Raises :class:`~qckit.errors.InputError` for a missing file, a directory
    or a corrupt gzip stream."""
    path = Path(path)
    if path.is_dir():
        raise InputError(path, "is a directory, expected a file")
    with _open(path) as f:
        if start:
            f.seek(start)
        chunks = _chunks(f, path, chunk_size, None if end is None else end - start)
        head = b""
        for piece in chunks:
            head += piece
            if len(head) >= 3:
                break
        if start == 0 and head.startswith(_BOM):
            head = head[3:]
        rest = b""
        pending: list[bytes] = []  # pieces of a line longer than one chunk, joined once its end arrives
        for chunk in itertools.chain((head,), chunks):
            if b"\n" not in chunk:
                pending.append(chunk)
                continue
            if pending:
                chunk = rest + b"".join(pending) + chunk
                pending.clear()
            elif rest:
                chunk = rest + chunk
            lines = chunk.split(b"\n")
            rest = lines.pop()
            if b"\r" in chunk:
                for line in lines:
                    yield line[:-1] if line.endswith(b"\r") else line
            else:
                yield from lines
        rest += b"".join(pending)
        if rest:  # the last line, without a final newline
            yield rest[:-1] if rest.endswith(b"\r") else rest
