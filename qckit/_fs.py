"""The one atomic-file helper of qckit: files and directories appear complete or not at all.

Everything qckit writes for a user (prepare outputs, packing caches, summaries, merged models) goes
through here: the content is written beside its destination (same directory, so the final rename
stays on one file system) and renamed into place only when it is complete. A crash leaves at most a
hidden ``.<name>.*.tmp`` sibling, never a half-written file under the real name.

Also here: :func:`replace_symlink` (a link that points elsewhere in one step), :func:`fsync_path`
(durability before a rename that publishes), and :class:`FileLock` (one process at a time per
directory, with a record of the holder).

Files and directories made here follow the umask (``0o666 & ~umask``, ``0o777 & ~umask``: what
``open`` and ``mkdir`` would give), not the ``0600``/``0700`` of :mod:`tempfile`. Nothing here follows
a link in the last component of a path it creates, truncates or deletes: the lock is opened with
``O_NOFOLLOW``, temporary files are made with ``O_EXCL``, renames and unlinks act on the link itself,
and :func:`remove_entry` deletes through a directory descriptor; :func:`refuse_link` is the one error
for a link found where qckit keeps its own files.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import socket
import stat
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "FileLock",
    "LockHeld",
    "LockHolder",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "dir_mode",
    "file_mode",
    "follow_umask",
    "fsync_path",
    "jsonable",
    "path_error",
    "refuse_link",
    "remove_entry",
    "replace_dir",
    "replace_symlink",
    "staging_dir",
    "staging_file",
    "umask",
]

_UMASK_LOCK = threading.Lock()


def umask() -> int:
    """The process's umask, read without changing it where the kernel reports it (Linux
    ``/proc/self/status``); elsewhere set and restored at once, under a lock (``os.umask`` is the only
    way to read it there, and it is process-global)."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o077)  # restrictive for the instant it is set
        os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: ``0o666`` less the umask."""
    return 0o666 & ~umask()


def dir_mode() -> int:
    """The mode ``mkdir`` gives a new directory: ``0o777`` less the umask."""
    return 0o777 & ~umask()


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8, ``\\n`` newlines) to ``path`` through a temporary sibling, then rename."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary sibling, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, file_mode())  # mkstemp makes it 0600
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


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes (its content, never its size or modification time), read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


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
    try:
        os.fchmod(fd, file_mode())  # mkstemp makes it 0600; a library writer reopening it keeps the mode
    finally:
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
        os.chmod(tmp, dir_mode())  # mkdtemp makes it 0700
        yield tmp
    finally:
        remove_entry(tmp.parent, tmp.name)


def replace_dir(staged: Path, target: Path, *, keep_existing: bool = False) -> bool:
    """Move the complete directory ``staged`` to ``target``; returns whether ``staged`` was moved.

    An existing ``target`` is swapped out (renamed aside, then removed), so readers see the old or the
    new directory, never a mix. With ``keep_existing`` an existing ``target`` wins and ``staged`` is
    left for the caller to discard (a cache filled by a concurrent writer). A ``target`` that is a link
    is replaced as a link: the rename moves the link, and only the link is deleted. The files of
    ``staged`` get the mode the umask gives first (:func:`follow_umask`: libraries may write 0600).
    """
    follow_umask(os.path.join(parent, name) for parent, _, names in os.walk(staged) for name in names)
    if os.path.lexists(target):
        if keep_existing and not target.is_symlink():
            return False
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:12]}")
        target.rename(old)
        try:
            staged.rename(target)
        except BaseException:
            old.rename(target)
            raise
        remove_entry(old.parent, old.name)
        return True
    try:
        staged.rename(target)
    except OSError:
        if keep_existing and target.exists():  # a concurrent writer got there first
            return False
        raise
    return True


def fsync_path(path: str | os.PathLike[str]) -> None:
    """Flush a file's or a directory's content to the disk (a no-op where the file system cannot)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def follow_umask(paths: Iterable[str | os.PathLike[str]]) -> None:
    """Give the regular files ``paths`` the mode the umask gives (:func:`file_mode`, execute bits kept):
    for files a library wrote through a temporary file of its own, 0600 (``safetensors`` does). Never
    through a link; a path that is gone or not a regular file is skipped."""
    mode = file_mode()
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode):
                os.fchmod(fd, mode | (st.st_mode & 0o111))
        except OSError:
            pass
        finally:
            os.close(fd)


def remove_entry(directory: str | os.PathLike[str], name: str, *, ignore_errors: bool = True) -> None:
    """Delete ``name`` in ``directory`` -- a file, a link (never what it points to) or a whole tree --
    through a descriptor of ``directory`` opened without following a link, so that neither ``name`` nor
    anything below it is reached through a link; a ``directory`` that is itself a link is left alone.
    A missing ``name`` is no error; other errors are ignored (a clean-up: what could not be removed
    stays) unless ``ignore_errors`` is false."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        if ignore_errors:
            return
        raise
    try:
        if stat.S_ISDIR(os.lstat(name, dir_fd=fd).st_mode):
            shutil.rmtree(name, ignore_errors=ignore_errors, dir_fd=fd)  # fd-based: links inside are unlinked
        else:
            os.unlink(name, dir_fd=fd)
    except FileNotFoundError:
        pass
    except OSError:
        if not ignore_errors:
            raise
    finally:
        os.close(fd)


def refuse_link(path: str | os.PathLike[str], advice: str = "choose another output") -> Any:
    """The :class:`~qckit.errors.InputError` for a link found where qckit keeps files of its own (a lock,
    a generation, a checkpoint …): one line naming the link and where it points, e.g. ``out/.qckit/current:
    is a link to /etc, not one qckit made: remove it or choose another output`` (``is not a file qckit
    made`` for something else there that qckit would not make: a FIFO, a directory)."""
    from qckit.errors import InputError

    try:
        what = f"a link to {os.readlink(path)}, not one"
    except OSError:
        what = "not a file"
    return InputError(path, f"is {what} qckit made: remove it or {advice}")


def replace_symlink(link: str | os.PathLike[str], target: str) -> None:
    """Make ``link`` a symbolic link to ``target`` in one step, whatever ``link`` was before (readers see
    the old or the new target, never nothing): a fresh link beside it, renamed over it."""
    link = Path(link)
    tmp = link.with_name(f".{link.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or held) a :class:`FileLock`."""

    pid: int
    host: str
    started: str  # local time, ISO 8601

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host}, started {self.started}"

    def alive(self) -> bool:
        """Whether the holder process still runs (assumed so when it ran on another host)."""
        if self.host != socket.gethostname():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


class LockHeld(Exception):
    """The lock is held by another process (``holder``, when it left a readable record)."""

    def __init__(self, path: Path, holder: LockHolder | None) -> None:
        self.path, self.holder = path, holder
        super().__init__(f"{path}: locked by {holder or 'another process'}")


class FileLock:
    """An exclusive lock on ``path`` (``flock``), with the holder's pid, host and start time in the file.

    The kernel releases the lock when the holder dies, however it dies; the record it leaves then
    names a run that did not finish, which :meth:`acquire` returns so the caller can say so. Worker
    processes forked while the lock is held share it until they exit.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self, wait_for_dead: float = 5.0) -> LockHolder | None:
        """Take the lock or raise :class:`LockHeld` (:class:`~qckit.errors.InputError` when ``path`` is a
        link or not a regular file: :func:`refuse_link`). Returns the record of an earlier holder that died
        without releasing it (``None`` after a clean release). A lock whose recorded holder is dead is
        still held for a moment by its exiting worker processes: wait up to ``wait_for_dead`` seconds."""
        import fcntl

        deadline = time.monotonic() + wait_for_dead
        while True:
            # never through a link (a planted one would have us truncate the file it names), never a FIFO
            flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
            try:
                fd = os.open(self.path, flags, 0o644)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise refuse_link(self.path) from None
                raise
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise refuse_link(self.path)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._read(fd)
                os.close(fd)
                if holder is not None and not holder.alive() and time.monotonic() < deadline:
                    time.sleep(0.1)
                    continue
                raise LockHeld(self.path, holder) from None
            except BaseException:
                os.close(fd)
                raise
            try:  # the holder before us may have removed the file (remove()): lock the one at the path
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        try:
            stale = self._read(fd)
            mine = LockHolder(os.getpid(), socket.gethostname(), time.strftime("%Y-%m-%d %H:%M:%S"))
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(asdict(mine)) + "\n").encode(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return stale

    def release(self, remove: bool = False) -> None:
        """Clear the record and release the lock (a clean end: the next holder hears of no dead run);
        with ``remove``, delete the lock file too (while still holding it)."""
        if self._fd is None:
            return
        import fcntl

        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
            if remove:
                self.path.unlink(missing_ok=True)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @staticmethod
    def _read(fd: int) -> LockHolder | None:
        try:
            data = json.loads(os.pread(fd, 4096, 0) or b"null")
            return LockHolder(int(data["pid"]), str(data["host"]), str(data["started"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None


def path_error(exc: OSError, path: str | os.PathLike[str]) -> Any:
    """An :class:`~qckit.errors.InputError` for ``exc``: one line naming the file (the one the error
    names, else ``path``) and what is wrong (``No space left on device``, ``Permission denied`` …)."""
    from qckit.errors import InputError

    where = exc.filename if isinstance(exc.filename, str) and exc.filename else os.fspath(path)
    return InputError(where, exc.strerror or str(exc) or type(exc).__name__)


@contextlib.contextmanager
def errors_name(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn a file-system error (disk full, file too large …) in the block into one line naming ``path``
    (:func:`path_error`)."""
    try:
        yield
    except OSError as exc:
        raise path_error(exc, path) from None
