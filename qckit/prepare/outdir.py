"""The output directory of a prepare run: one run at a time, and outputs that appear together or not at all.

Layout (``out`` is ``[prepare] output``)::

    out/train.txt -> .qckit/current/train.txt     each output is a symbolic link into the current generation
    out/.qckit/lock                                held by the running run: pid, host, start time
    out/.qckit/current -> gen-<id>                 the generation of the last run that finished
    out/.qckit/gen-<id>/                           its files: train/val in every format, rejects, stats
    out/.qckit/run-<id>/                           a running run's spool and staged outputs
    out/.qckit/work/                               a resumable run's shards and completion records

A run holds the lock from start to end (a second run fails at once naming the holder; the lock of a
dead run is taken over, with a warning), writes everything into its own ``run-<id>/``, and publishes
it by renaming that directory into a generation and then replacing the ``current`` link: one rename
switches every output at once, so a reader, a crash or a ``kill -9`` sees the previous run's files
or the new run's, never a mix. Links of the previous run's outputs that this run did not write are
removed; regular files left by older versions are moved to ``.qckit/replaced/``. Whatever a dead run
left (its ``run-<id>/``, an unpublished generation) is removed by the next run.

Nothing outside the directory is ever touched, and only what qckit made is deleted: a ``.qckit`` that
is a link, a lock, ``current``, ``gen-*``, ``run-*``, ``work`` or ``replaced`` entry that is a link
(``current`` only as qckit makes it: a link to a plain ``gen-<id>`` name that is a real directory
beside it) is refused at the start with one line naming it (:func:`qckit._fs.refuse_link`), and every
deletion goes through a descriptor of ``.qckit`` or ``out`` opened without following a link
(:func:`qckit._fs.remove_entry`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import time
import uuid
from pathlib import Path

from qckit._fs import FileLock, LockHeld, fsync_path, path_error, refuse_link, remove_entry, replace_symlink
from qckit.errors import InputError
from qckit.progress import Observer
from qckit.settings import STATE_DIR

CURRENT = "current"
LOCK = "lock"
#: the work directory of executors that read their own shards (plan, results, completion records)
WORK_DIR = "work"
REPLACED_DIR = "replaced"
#: the entries of ``.qckit`` that qckit makes as directories or files, never as links (``current`` aside)
_OWN_NAMES = (LOCK, WORK_DIR, REPLACED_DIR)
_OWN_PREFIXES = ("gen-", "run-")
#: what ``current`` may point to: a generation's plain name, beside it (no ``/``, no ``..``)
_GENERATION = re.compile(r"gen-[A-Za-z0-9._-]+")
#: where legacy regular-file outputs (and the spools of older versions) are recognised
_LEGACY_SPOOL_PREFIX = ".qckit-prepare-"


class OutputDir:
    """One run's hold on an output directory (see the module docstring). Use as a context manager."""

    def __init__(self, path: Path, names: list[str], stats_file: str, observer: Observer) -> None:
        self.path = path
        self.names = names  # the outputs this run will write
        self.state = path / STATE_DIR
        self.stats_file = stats_file
        self.observer = observer
        self.run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.run_dir = self.state / f"run-{self.run_id}"
        self.staging = self.run_dir / "out"  # the files of the new generation
        self._lock = FileLock(self.state / LOCK)

    # -- start: directories, lock, leftovers of dead runs ----------------------------------------

    def __enter__(self) -> OutputDir:
        _mkdir(self.path)
        for name in self.names:
            target = self.path / name
            if target.is_dir() and not target.is_symlink():
                raise InputError(target, "is a directory; the output of this name cannot be written")
        if self.state.is_symlink():
            raise refuse_link(self.state)
        _mkdir(self.state)
        try:
            self._refuse_links()
        except OSError as exc:
            raise path_error(exc, self.state) from None
        try:
            stale = self._lock.acquire()
        except LockHeld as held:
            who = f" ({held.holder})" if held.holder else ""
            raise InputError(
                self.path, f"in use by another qckit prepare run{who}; wait for it to finish"
            ) from None
        except OSError as exc:
            raise path_error(exc, self.state / LOCK) from None
        try:
            if stale is not None:
                self.observer.warn(f"{self.path}: took over the lock of a run that did not finish ({stale})")
            self._remove_leftovers()
            _mkdir(self.staging)
        except BaseException:
            self._lock.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            remove_entry(self.state, self.run_dir.name)
            # Nothing published and nothing to resume (a first run failed): leave no trace.
            empty = self._current() is None and not any(e.name != LOCK for e in self.state.iterdir())
        except OSError:
            empty = False
        self._lock.release(remove=empty)
        if empty:
            with contextlib.suppress(OSError):
                self.state.rmdir()

    def _refuse_links(self) -> None:
        """Refuse (one line naming it) a link where qckit keeps an entry of its own: following it would
        have a run truncate, fill or delete what it points to (see the module docstring)."""
        work = self.state / WORK_DIR
        for entry in sorted(os.scandir(self.state), key=lambda e: e.name):
            if entry.is_symlink() and (entry.name in _OWN_NAMES or entry.name.startswith(_OWN_PREFIXES)):
                raise refuse_link(entry.path)
        if _is_real_dir(work):
            for entry in sorted(os.scandir(work), key=lambda e: e.name):  # everything in work/ is qckit's
                if entry.is_symlink():
                    raise refuse_link(entry.path)
        try:
            os.readlink(self.state / CURRENT)
        except FileNotFoundError:
            pass
        except OSError:  # there, but not a link (EINVAL): not one qckit made
            raise refuse_link(self.state / CURRENT) from None
        else:
            if self._current() is None and not self._dangling_current():
                raise refuse_link(self.state / CURRENT)

    def _dangling_current(self) -> bool:
        """Whether ``current`` is a link qckit made to a generation that no longer exists (removed by hand):
        harmless, the next publication replaces it."""
        target = os.readlink(self.state / CURRENT)
        return bool(_GENERATION.fullmatch(target)) and not os.path.lexists(self.state / target)

    def _remove_leftovers(self) -> None:
        """What dead runs left: their run directories, unpublished generations, temporary links, the spools
        of older versions, and links to outputs the current generation does not have."""
        current = self._current()
        for entry in self.state.iterdir():
            if entry.name.startswith("run-") or (entry.name.startswith("gen-") and entry.name != current):
                remove_entry(self.state, entry.name)
            elif entry.name.endswith(".tmp") and entry.is_symlink():
                entry.unlink(missing_ok=True)
        for entry in self.path.iterdir():
            if entry.name.startswith(_LEGACY_SPOOL_PREFIX) and entry.is_dir() and not entry.is_symlink():
                remove_entry(self.path, entry.name)
            elif self._is_our_link(entry) and not entry.exists():
                entry.unlink(missing_ok=True)
            elif (
                entry.name.startswith(".") and entry.name.endswith(".tmp") and self._points_into_state(entry)
            ):
                entry.unlink(missing_ok=True)  # a link being made when its run died

    # -- publish ----------------------------------------------------------------------------------

    def publish(self) -> list[Path]:
        """Make the staged files the outputs, all at once; return their paths in ``out``."""
        names = self.names
        for name in names:
            fsync_path(self.staging / name)
        fsync_path(self.staging)
        previous = self._current()
        old_names = set(os.listdir(self.state / previous)) if previous else set()
        gen = f"gen-{self.run_id}"
        try:
            os.rename(self.staging, self.state / gen)
            # Links the new set needs are created first (dangling until the switch); an older version's
            # regular file under an output name is only replaced after the switch.
            legacy = []
            for name in names:
                link = self.path / name
                if self._is_our_link(link):
                    continue
                if link.exists() or link.is_symlink():
                    legacy.append(name)
                else:
                    os.symlink(self._link_target(name), link)
            replace_symlink(self.state / CURRENT, gen)  # the switch: every output at once
            fsync_path(self.state)
        except OSError as exc:
            raise path_error(exc, self.path) from None
        self._after_switch(previous, old_names - set(names), legacy)
        return [self.path / name for name in names]

    def _after_switch(self, previous: str | None, gone: set[str], legacy: list[str]) -> None:
        """Tidy up once the new generation is current: nothing done here can mix the two runs."""
        replaced = self.state / REPLACED_DIR
        listed = self._legacy_outputs(previous)  # read before the stats file below becomes a link
        for name in legacy:
            with contextlib.suppress(OSError):
                target = self.path / name
                if target.is_file() and not target.is_symlink():
                    replaced.mkdir(exist_ok=True)
                    os.replace(target, replaced / name)
                replace_symlink(target, self._link_target(name))
        for name in listed:
            if name not in legacy and (self.path / name).is_file() and not (self.path / name).is_symlink():
                with contextlib.suppress(OSError):
                    replaced.mkdir(exist_ok=True)
                    os.replace(self.path / name, replaced / name)
        for name in gone:
            link = self.path / name
            if self._is_our_link(link):
                link.unlink(missing_ok=True)
        if previous:
            remove_entry(self.state, previous)
        fsync_path(self.path)

    def _legacy_outputs(self, previous: str | None) -> list[str]:
        """Outputs that a run of an older version wrote as regular files, as its stats file lists them."""
        stats = self.path / self.stats_file
        if previous or stats.is_symlink() or not stats.is_file():
            return []
        try:
            listed = json.loads(stats.read_text(encoding="utf-8")).get("outputs", [])
        except (OSError, ValueError, AttributeError):
            return []
        return [Path(p).name for p in listed if isinstance(p, str) and Path(p).parent == self.path]

    # -- helpers ----------------------------------------------------------------------------------

    def _current(self) -> str | None:
        """The name of the current generation, if ``current`` is a link qckit made: to a plain
        ``gen-<id>`` name that is a real directory (not a link) beside it."""
        try:
            target = os.readlink(self.state / CURRENT)
        except OSError:
            return None
        if not _GENERATION.fullmatch(target) or not _is_real_dir(self.state / target):
            return None
        return target

    @staticmethod
    def _link_target(name: str) -> str:
        return f"{STATE_DIR}/{CURRENT}/{name}"

    @staticmethod
    def _points_into_state(path: Path) -> bool:
        try:
            return os.readlink(path).startswith(f"{STATE_DIR}/{CURRENT}/")
        except OSError:
            return False

    def _is_our_link(self, path: Path) -> bool:
        try:
            return os.readlink(path) == self._link_target(path.name)
        except OSError:
            return False


def _is_real_dir(path: Path) -> bool:
    """Whether ``path`` is a directory itself, not a link to one."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _mkdir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise InputError(path, "exists and is not a directory") from None
    except OSError as exc:
        raise path_error(exc, path) from None
