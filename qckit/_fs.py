"""The one atomic-file helper of qckit: files and directories appear complete or not at all.

Everything qckit writes for a user (prepare outputs, packing caches, summaries, merged models) goes
through here: the content is written beside its destination (same directory, so the final rename
stays on one file system) and renamed into place only when it is complete. A crash leaves at most a
hidden ``.<name>.*.tmp`` sibling, never a half-written file under the real name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_write_text",
    "atomic_write_bytes",
    "atomic_write_json",
    "jsonable",
    "staging_file",
    "staging_dir",
    "replace_dir",
]


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8, ``\\n`` newlines) to ``path`` through a temporary sibling, then rename."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary sibling, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def jsonable(value: Any) -> Any:
    """``value`` with paths, numpy/torch scalars and other objects turned into JSON-serialisable values."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented UTF-8 JSON (non-finite numbers as ``NaN``/``Infinity``), atomically."""
    text = json.dumps(jsonable(data), indent=2, ensure_ascii=False, allow_nan=True) + "\n"
    return atomic_write_text(path, text)


@contextlib.contextmanager
def staging_file(target: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside ``target`` to write a large file into (by path, e.g. a library writer);
    renamed to ``target`` when the block ends without an exception, removed otherwise."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


@contextlib.contextmanager
def staging_dir(target: str | os.PathLike[str]) -> Iterator[Path]:
    """A fresh temporary directory beside ``target``, removed on exit unless it was renamed away.

    Fill it, then publish it with :func:`replace_dir` inside the ``with`` block.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(staged: Path, target: Path, *, keep_existing: bool = False) -> bool:
    """Move the complete directory ``staged`` to ``target``; returns whether ``staged`` was moved.

    An existing ``target`` is swapped out (renamed aside, then removed), so readers see the old or the
    new directory, never a mix. With ``keep_existing`` an existing ``target`` wins and ``staged`` is
    left for the caller to discard (a cache filled by a concurrent writer).
    """
    if target.exists():
        if keep_existing:
            return False
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:12]}")
        target.rename(old)
        try:
            staged.rename(target)
        except BaseException:
            old.rename(target)
            raise
        shutil.rmtree(old, ignore_errors=True)
        return True
    try:
        staged.rename(target)
    except OSError:
        if keep_existing and target.exists():  # a concurrent writer got there first
            return False
        raise
    return True
