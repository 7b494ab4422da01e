"""Derived lookup tables kept on disk between runs: ``$QCKIT_CACHE/tables/<name>-<key>.npy``.

Components build numpy tables over every Unicode character (how each one folds, whether NFC may change
it …) from :mod:`unicodedata`: 0.11 s per run before the workers start (``bench/profile_prepare.py``'s
warm-up line with ``QCKIT_CACHE=off``), 0.00 s from the cache. A table depends only on the code that builds it and
on the Python build (its Unicode database, its version), so the key is the SHA-256 of those: the
``sources`` files given (the modules of the builder), ``sys.version``, ``unicodedata.unidata_version``
and numpy's version. A changed builder, another Python or another Unicode version gets another entry.

Entries are written through a temporary file and a rename, so concurrent runs never see half an entry;
writing one removes the entries of the same name that no run has used for 30 days, so the folder stays
small while checkouts of different versions share it.
A missing, unreadable or malformed entry is rebuilt; a cache that cannot be written (read-only, full,
or a ``tables`` folder that is a link: nothing is written or deleted through it) is simply not used. ``QCKIT_CACHE=off`` disables it (see :mod:`qckit.gguf_cache` for the root).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import stat
import sys
import time
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from qckit._fs import atomic_write_bytes
from qckit.gguf_cache import cache_root

#: the folder of the table entries under the cache root
TABLES_DIR = "tables"
#: an entry of another key that has been neither read nor written for this long is removed
STALE_AFTER_S = 30 * 24 * 3600


@functools.cache
def _key(name: str, sources: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for part in (name, sys.version, unicodedata.unidata_version, np.__version__):
        digest.update(part.encode() + b"\x00")
    for source in sources:
        digest.update(_file_digest(source) + b"\x00")
    return digest.hexdigest()[:24]


@functools.cache
def _file_digest(source: str) -> bytes:
    """A source's SHA-256, read once per process (a data file may be a source of several tables)."""
    return hashlib.sha256(Path(source).read_bytes()).digest()


def cached_table(
    name: str, build: Callable[[], np.ndarray], sources: Sequence[str], mmap: bool = False
) -> np.ndarray:
    """The array ``build()`` returns, read from the cache when an entry for ``name`` and ``sources`` is
    there, else built and stored (see the module docstring). ``sources``: the files whose code decides
    the table (usually ``[__file__]`` of the builder's module and of the helpers it calls, or a data
    file it reads). ``mmap``: read the entry memory-mapped, read-only (for large tables: the processes
    that map it share its pages, and reading it costs nothing until it is used)."""
    root = cache_root()
    if root is None:
        return build()
    try:
        path = root / TABLES_DIR / f"{name}-{_key(name, tuple(sources))}.npy"
    except OSError:  # a source file that cannot be read: no key, no cache
        return build()
    if path.parent.is_symlink():  # never written or cleaned through a link
        return build()
    mode: Literal["r"] | None = "r" if mmap else None
    with contextlib.suppress(OSError, ValueError, EOFError):
        table = np.load(path, mmap_mode=mode, allow_pickle=False)
        if isinstance(table, np.ndarray):
            return table
    table = build()
    buffer = io.BytesIO()
    np.save(buffer, table, allow_pickle=False)
    with contextlib.suppress(OSError):
        atomic_write_bytes(path, buffer.getvalue())
        # entries of other builders or Pythons that nothing has read for a while (checkouts of
        # different versions may share the cache: each keeps its own entries while it is in use)
        stale = time.time() - STALE_AFTER_S
        for old in path.parent.glob(f"{name}-*.npy"):
            info = old.lstat()  # a link is not an entry qckit wrote: left alone
            if old != path and stat.S_ISREG(info.st_mode) and info.st_atime < stale and info.st_mtime < stale:
                old.unlink(missing_ok=True)
        if mmap:  # the mapped entry, so that this process reads it as the next ones will
            return np.load(path, mmap_mode=mode, allow_pickle=False)
    return table
