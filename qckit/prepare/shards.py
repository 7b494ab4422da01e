"""Shards: the unit of work of executors whose workers read their own input, with completion records.

A shard is one input file, or a byte range of a big one when its reader can cut it (the
``byte_ranges`` and ``records_between`` abilities of :class:`~qckit.components.Reader`). A run:

1. **cut** (driver, cheap): the reader proposes ranges of about ``shard_bytes`` starting at record starts;
2. **count** (workers, in parallel): the records of every range but the last of its file, so that each
   shard knows the number of its first record and documents keep their exact line numbers;
3. **map** (workers): each shard is read, cut into batches and processed by
   :func:`qckit.prepare.work.process`; the worker writes the results into the run's work directory,
   then a completion record;
4. **decide** and **apply** (driver): the results are read back in corpus order, the stateful filters
   (deduplication) decide keep-first over the whole corpus, and the output stage writes what they kept.

So the output is byte-identical to the local executor's for any shard count. The plan and the
completion records stay in the work directory until the run commits; a run with ``resume`` whose
fingerprint (components, settings, input sizes and times) matches reuses them and reruns only the
shards without a record.

The work directory may be shared storage that others can write, so nothing read from it can run
code: results are data (:mod:`qckit.prepare.resultfile`, never pickle), opened without following a
link, and checked as they are read. A shard whose record is missing, unreadable or names another size
than its results is not complete (it runs again); results that are not what qckit writes stop the run
with one line naming the file (``run without resume to start over``).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from qckit import __version__
from qckit._fs import atomic_write_json, errors_name, path_error, refuse_link, remove_entry
from qckit.errors import ComponentError, InputError
from qckit.prepare import resultfile
from qckit.prepare.inputs import InputFile, read_records, record_batches
from qckit.prepare.work import BatchResult, Stage, process

PLAN_FILE = "plan.json"
SHARDS_DIR = "shards"
_FORMAT = 2  # of the work directory; a different one is never resumed (1: pickled results)
#: what a resumed run is told to do when the work directory holds what qckit did not write
_START_OVER = "run without resume to start over"


@dataclass(frozen=True)
class Shard:
    """One input file, or the records that start in the byte range ``[start, end)`` of one."""

    index: int  # position in corpus order
    file_index: int
    set_index: int
    path: str
    reader: str
    start: int = 0
    end: int | None = None  # None: the whole file, read with the reader's ``records``
    first_line: int = 1  # the number of its first record

    def __str__(self) -> str:
        if self.end is None:
            return f"shard {self.index} ({self.path})"
        return f"shard {self.index} ({self.path}, bytes {self.start:,}-{self.end:,})"


@dataclass
class ShardContext:
    """What every shard worker needs; sent to each worker once."""

    stage: Stage
    readers: dict[str, Any]  # reader name → ComponentSpec (owner labels for errors)
    batch_bytes: int
    max_line_bytes: int
    work_dir: str


def cut(files: list[InputFile], readers: dict[str, Any], shard_bytes: int) -> list[Shard]:
    """Shards of about ``shard_bytes`` (first lines still unknown past a file's first range)."""
    shards: list[Shard] = []
    for inp in files:
        reader = readers[inp.reader]
        instance = reader.instance
        ranges: list[tuple[int, int]] = []
        splittable = hasattr(instance, "byte_ranges") and hasattr(instance, "records_between")
        if splittable and inp.size > shard_bytes:
            try:
                ranges = instance.byte_ranges(Path(inp.path), shard_bytes)
            except (InputError, OSError):
                raise
            except Exception as exc:
                raise ComponentError("reader", inp.reader, reader.owner, inp.path, exc) from exc
        if len(ranges) <= 1:
            shards.append(Shard(len(shards), inp.file_index, inp.set_index, inp.path, inp.reader))
            continue
        for start, end in ranges:
            shards.append(Shard(len(shards), inp.file_index, inp.set_index, inp.path, inp.reader, start, end))
    return shards


def needs_count(shards: list[Shard]) -> list[Shard]:
    """The ranges whose record count the following range of the same file needs."""
    return [s for s, nxt in zip(shards, shards[1:], strict=False) if nxt.file_index == s.file_index]


def count_records(ctx: ShardContext, shard: Shard) -> int:
    """How many records start in the shard's range (runs on a worker)."""
    return sum(1 for _ in _records(ctx, shard))


def number(shards: list[Shard], counts: list[int]) -> list[Shard]:
    """``shards`` with their first line numbers, from the counts of :func:`needs_count`'s ranges."""
    by_index = dict(zip((s.index for s in needs_count(shards)), counts, strict=True))
    out: list[Shard] = []
    for shard in shards:
        first = 1
        if out and out[-1].file_index == shard.file_index:
            first = out[-1].first_line + by_index[out[-1].index]
        out.append(Shard(**{**asdict(shard), "first_line": first}))
    return out


def _records(ctx: ShardContext, shard: Shard) -> Iterator[Any]:
    reader = ctx.readers[shard.reader].instance
    path = Path(shard.path)
    if shard.end is None:
        return read_records(reader, path, ctx.max_line_bytes)
    return reader.records_between(path, shard.start, shard.end, ctx.max_line_bytes)


# -- the work directory ----------------------------------------------------------------------------


def results_path(work_dir: str | Path, shard: Shard) -> Path:
    return Path(work_dir) / SHARDS_DIR / f"{shard.index:06d}.results"


def record_path(work_dir: str | Path, shard: Shard) -> Path:
    return Path(work_dir) / SHARDS_DIR / f"{shard.index:06d}.done"


def _shards_dir(work_dir: str | Path) -> Path:
    """The work directory's ``shards/``, made if missing; refused if it is a link (a worker would write
    wherever it points)."""
    path = Path(work_dir) / SHARDS_DIR
    path.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        raise refuse_link(path, _START_OVER)
    return path


def run_shard(ctx: ShardContext, shard: Shard) -> dict[str, Any]:
    """Process one shard (runs on a worker): its batch results go to the work directory, then its
    completion record. Returns the record."""
    started = time.perf_counter()
    reader = ctx.readers[shard.reader]
    inp = InputFile(shard.file_index, shard.set_index, shard.path, shard.reader, 0)
    final = results_path(ctx.work_dir, shard)
    tmp = final.with_name(f"{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    batches = records = nbytes = 0
    try:
        _shards_dir(ctx.work_dir)
        # a fresh name, never through a link; the umask decides the mode, as for any output
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with os.fdopen(os.open(tmp, flags, 0o666), "wb") as f:
            f.write(resultfile.MAGIC)
            for batch in record_batches(_records(ctx, shard), inp, reader, shard.first_line, ctx.batch_bytes):
                result = process(ctx.stage, batch)
                try:
                    resultfile.write_result(f, result)
                except resultfile.UnstorableFingerprint as exc:
                    name, owner, _ = ctx.stage.stateful[exc.index]
                    raise ComponentError("filter", name, owner, shard.path, exc) from None
                except TypeError as exc:  # a tag a component put in a document's meta that is not data
                    raise InputError(shard.path, f"the results of {shard} cannot be stored: {exc}") from None
                batches += 1
                records += batch.n_records
                nbytes += batch.nbytes
        os.replace(tmp, final)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise path_error(exc, tmp) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    record = {
        "shard": str(shard),
        "batches": batches,
        "records": records,
        "bytes_read": nbytes,
        "results_bytes": final.stat().st_size,
        "seconds": round(time.perf_counter() - started, 3),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    with errors_name(record_path(ctx.work_dir, shard)):
        atomic_write_json(record_path(ctx.work_dir, shard), record)
    return record


def is_complete(work_dir: str | Path, shard: Shard) -> bool:
    """Whether the shard left a completion record and results of the size it names (a record that is
    missing, unreadable or not qckit's: not complete, the shard runs again)."""
    try:
        record = json.loads(record_path(work_dir, shard).read_text(encoding="utf-8"))
        size = record["results_bytes"]
        return type(size) is int and os.lstat(results_path(work_dir, shard)).st_size == size
    except (OSError, ValueError, KeyError, TypeError):
        return False


def read_results(work_dir: str | Path, shard: Shard) -> Iterator[BatchResult]:
    """A finished shard's batch results, in order: data only, checked as they are read
    (:class:`~qckit.errors.InputError` naming the file when it is not what qckit writes)."""
    path = results_path(work_dir, shard)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise refuse_link(path, _START_OVER) from None
        raise path_error(exc, path) from None
    with os.fdopen(fd, "rb") as f:
        try:
            yield from resultfile.read_results(f, os.fstat(fd).st_size)
        except ValueError as exc:
            raise InputError(path, f"not the results qckit writes ({exc}); {_START_OVER}") from None
        except OSError as exc:
            raise path_error(exc, path) from None


def fingerprint(files: list[InputFile], components: list[Any], settings: dict[str, Any]) -> dict[str, Any]:
    """What a shard's results depend on: inputs (path, size, modification time), the components that run
    in workers with their settings, plugins and the contents of the files they read (``resume_key``), and
    the settings that shape batches."""
    inputs = []
    for inp in files:
        st = os.stat(inp.path)
        inputs.append({"path": os.path.abspath(inp.path), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    comps = []
    for c in components:
        entry = {
            "kind": c.kind,
            "name": c.name,
            "params": c.params,
            "owner": c.owner,
            "class": _qualname(c.instance),
        }
        resume_key = getattr(c.instance, "resume_key", None)  # the contents of the files it read
        contents = resume_key() if resume_key is not None else ""
        if contents:  # none: the entry is as before resume_key existed
            entry["contents"] = contents
        comps.append(entry)
    return {
        "format": _FORMAT,
        "qckit": __version__,
        "inputs": inputs,
        "components": comps,
        "settings": settings,
    }


def _qualname(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def save_plan(work_dir: Path, print_: dict[str, Any], shards: list[Shard]) -> None:
    atomic_write_json(
        work_dir / PLAN_FILE,
        {"fingerprint": print_, "digest": digest(print_), "shards": [asdict(s) for s in shards]},
    )


def load_plan(work_dir: Path, print_: dict[str, Any]) -> list[Shard] | None:
    """The shards of the interrupted run in ``work_dir``, if it had this fingerprint; ``None`` when
    there is nothing to resume; :class:`InputError` naming what changed when it is another run's work."""
    path = work_dir / PLAN_FILE
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        old, shards = saved["fingerprint"], [Shard(**s) for s in saved["shards"]]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(path, f"cannot resume: unreadable plan ({exc}); {_START_OVER}") from None
    if digest(old) != digest(print_):
        raise InputError(
            work_dir, f"cannot resume: {_difference(old, print_)}; run without resume to start over"
        )
    return shards


def _difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    if old.get("format") != new.get("format") or old.get("qckit") != new.get("qckit"):
        return "the interrupted run was made by another qckit version"
    old_inputs = {i["path"]: i for i in old.get("inputs", [])}
    new_inputs = {i["path"]: i for i in new.get("inputs", [])}
    if list(old_inputs) != list(new_inputs):
        return "the interrupted run had other inputs"
    for path, info in new_inputs.items():
        if info != old_inputs[path]:
            return f"input {path} changed since the interrupted run (size or modification time)"
    old_parts, new_parts = old.get("components", []), new.get("components", [])
    if old_parts != new_parts:
        settings = [
            [{k: v for k, v in part.items() if k != "contents"} for part in parts]
            for parts in (old_parts, new_parts)
        ]
        if settings[0] == settings[1]:  # the same components and settings: what they read changed
            for was, now in zip(old_parts, new_parts, strict=True):
                if was.get("contents") != now.get("contents"):
                    return (
                        f"the files the {now['kind']} {now['name']!r} reads changed since the interrupted run"
                    )
        return "the recipe's readers, normalizers or filters changed since the interrupted run"
    return "the recipe's settings changed since the interrupted run"


def clear(work_dir: Path) -> None:
    """Remove a work directory (a finished run's, or one that will not be resumed), never through a link."""
    remove_entry(work_dir.parent, work_dir.name)
