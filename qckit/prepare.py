"""The prepare pipeline: files → records → documents → normalized → filtered → deduplicated → split → written.

Data flows one way and in batches:

* the main process reads raw lines (cheap I/O) and groups them into batches of ``batch_bytes`` (256 KiB by default);
* worker processes parse, normalize, run the stateless filters and compute dedup fingerprints;
* the main process receives the batches **in corpus order**, runs the stateful filters, and spools
  the kept documents to a temporary file; when every input is read, the splitter assigns each kept
  document to train or validation and the writers format them into temporary files that are renamed
  into place only when everything succeeded.

Because batches are cut by bytes in the main process and results are consumed in order, the output is
byte-identical whatever the number of workers. Memory stays bounded: at most ``2 × workers`` batches
are in flight, dedup keeps fixed-size fingerprints, and the splitter needs only the document count.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import operator
import os
import pickle
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qckit._fs import atomic_write_json
from qckit.components import BLANK_LINE, Document, IssueLog, _document
from qckit.errors import ComponentError, InputError, QckitError, RecordError
from qckit.progress import NullObserver, Observer
from qckit.recipe import ComponentSpec, PreparePlan

STATS_FILE = "prepare_stats.json"
REJECTS_FILE = "rejected.jsonl"


@dataclass
class PrepareSettings:
    """The ``[prepare]`` table of a recipe (components are configured in its sub-tables)."""

    inputs: list[str] = field(default_factory=list)
    output: str = "./data"
    merge: bool = False
    workers: int = 0  # 0 = one per CPU core
    batch_bytes: int = 256 * 1024  #: input bytes per batch handed to a worker
    max_examples: int = 5  # examples kept per drop reason / reader problem
    rejects: bool = False  # also write rejected.jsonl: every dropped document with its filter and reason
    stats_file: str = STATS_FILE

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise ValueError("workers: must be 0 (one per core) or more")
        if self.batch_bytes < 1024:
            raise ValueError("batch_bytes: must be at least 1024")
        if self.max_examples < 0:
            raise ValueError("max_examples: must be 0 or more")


@dataclass
class PrepareResult:
    """What a prepare run produced: output paths (or documents, in memory) and the stats funnel."""

    stats: dict[str, Any]
    outputs: list[Path] = field(default_factory=list)
    train: list[Document] | None = None
    val: list[Document] | None = None


# -- the per-batch work, shared by workers and the in-process path ----------------------------------


@dataclass
class _Stage:
    """The components a worker needs, with their owner labels for error messages."""

    readers: dict[str, tuple[str, Any]]  # reader name → (owner, instance)
    normalizers: list[tuple[str, str, Any]]  # (name, owner, instance)
    filters: list[tuple[str, str, Any]]  # stateless
    stateful: list[tuple[str, str, Any]]
    max_examples: int
    keep_rejects: bool = False


@dataclass
class _Batch:
    set_index: int
    file_index: int
    source: str
    reader: str | None  # None: documents given in memory
    first_line: int
    records: list[Any]  # raw bytes, or Documents
    nbytes: int


@dataclass
class _BatchResult:
    set_index: int
    file_index: int
    nbytes: int
    records: int
    documents: int
    issues: IssueLog
    changed: list[int]
    drops: dict[tuple[str, str], int]
    drop_examples: dict[tuple[str, str], list[str]]
    source: str
    # Kept documents as columns, which pickle several times faster than objects or dicts:
    texts: list[str]
    lines: list[int]
    metas: list[dict | None] | None  # None when no document has meta
    metric_keys: list[str]
    metric_values: Any  # float64 array [documents, keys], or None
    fingerprints: list[list[Any]]  # per stateful filter, aligned with the kept documents
    rejected: list[tuple[int, str, str, str]]  # (line, filter, reason, text) when the recipe asks for rejects


def _process(stage: _Stage, batch: _Batch) -> _BatchResult:
    issues = IssueLog(stage.max_examples)
    docs: list[Document] = []
    if batch.reader is None:
        docs = batch.records
    else:
        owner, reader = stage.readers[batch.reader]
        parse_batch = getattr(reader, "parse_batch", None)
        if parse_batch is not None:
            try:
                parsed = parse_batch(batch.records, batch.source, batch.first_line, issues)
            except Exception as exc:
                where = f"{batch.source}:{batch.first_line}"
                raise ComponentError("reader", batch.reader, owner, where, exc) from exc
            docs = [doc for doc in parsed if doc is not None]
        for offset, record in enumerate(batch.records if parse_batch is None else ()):
            line = batch.first_line + offset
            try:
                doc = reader.parse(record, batch.source, line, issues)
            except RecordError as exc:
                issues.add(exc.kind, batch.source, line, str(exc))
                continue
            except Exception as exc:
                raise ComponentError("reader", batch.reader, owner, f"{batch.source}:{line}", exc) from exc
            if doc is not None:
                docs.append(doc)
    n_docs = len(docs)

    texts = [doc.text for doc in docs]
    changed = []
    for name, owner, normalizer in stage.normalizers:
        new = _call_batch(normalizer, "normalize_batch", "normalize", texts, docs, "normalizer", name, owner)
        changed.append(sum(map(operator.ne, texts, new)))
        texts = new
    for doc, text in zip(docs, texts, strict=True):
        doc.text = text

    drops: dict[tuple[str, str], int] = {}
    examples: dict[tuple[str, str], list[str]] = {}
    rejected: list[tuple[int, str, str, str]] = []
    alive = docs
    for name, owner, flt in stage.filters:
        reasons = _call_batch(flt, "drop_reason_batch", "drop_reason", alive, alive, "filter", name, owner)
        if reasons.count(None) == len(reasons):  # the common case: this filter dropped nothing here
            continue
        survivors = []
        for doc, reason in zip(alive, reasons, strict=True):
            if reason is None:
                survivors.append(doc)
                continue
            _count_drop(drops, examples, stage.max_examples, (name, reason), doc.where)
            if stage.keep_rejects:
                rejected.append((doc.line, name, reason, doc.text))
        alive = survivors
    kept = alive

    fingerprints = [
        _call_batch(flt, "fingerprint_batch", "fingerprint", kept, kept, "filter", name, owner)
        for name, owner, flt in stage.stateful
    ]
    metas = [d.meta or None for d in kept]
    metric_keys = sorted({k for d in kept if d.metrics for k in d.metrics})
    values = None
    if metric_keys:
        values = np.array([[d.metrics.get(k, 0.0) for k in metric_keys] for d in kept], dtype=np.float64)
    return _BatchResult(
        batch.set_index,
        batch.file_index,
        batch.nbytes,
        len(batch.records),
        n_docs,
        issues,
        changed,
        drops,
        examples,
        batch.source,
        [d.text for d in kept],
        [d.line for d in kept],
        metas if any(m is not None for m in metas) else None,
        metric_keys,
        values,
        fingerprints,
        rejected,
    )


def _call_batch(
    component: Any,
    batch_method: str,
    method: str,
    items: list,
    docs: list[Document],
    kind: str,
    name: str,
    owner: str,
) -> list:
    """Call the component's batch method if it has one, else its per-item method.

    If the batch call fails, redo the batch item by item so the error names the document's position.
    """
    batch_fn = getattr(component, batch_method, None)
    batch_error: Exception | None = None
    if batch_fn is not None:
        try:
            return batch_fn(items)
        except Exception as exc:
            batch_error = exc  # find the culprit below
    fn = getattr(component, method)
    out = []
    for item, doc in zip(items, docs, strict=True):
        try:
            out.append(fn(item))
        except Exception as exc:
            raise ComponentError(kind, name, owner, doc.where, exc) from exc
    if batch_error is not None:  # every item works alone: the batch method itself is broken
        where = f"{docs[0].where}..{docs[-1].line}" if docs else None
        raise ComponentError(kind, f"{name}.{batch_method}", owner, where, batch_error) from batch_error
    return out


# Worker processes hold their stage in this module-level slot; it is set once per worker process by
# the pool initializer and never touched in the main process.
_WORKER_STAGE: _Stage | None = None


def _init_worker(stage: _Stage) -> None:
    global _WORKER_STAGE
    _WORKER_STAGE = stage


def _work(batch: _Batch) -> _BatchResult:
    assert _WORKER_STAGE is not None
    return _process(_WORKER_STAGE, batch)


# -- the pipeline --------------------------------------------------------------------------------


class PreparePipeline:
    """Runs one validated :class:`~qckit.recipe.PreparePlan`. Reusable; holds no global state."""

    def __init__(self, plan: PreparePlan, observer: Observer | None = None):
        self.plan = plan
        self.settings = plan.settings
        self.observer = observer or NullObserver()
        self.readers = {spec.name: spec for spec in plan.readers}
        self._all_readers = _reader_table(plan)
        stateless = [s for s in plan.filters if not getattr(s.instance, "stateful", False)]
        stateful = [s for s in plan.filters if getattr(s.instance, "stateful", False)]
        self.stage = _Stage(
            readers={name: (spec.owner, spec.instance) for name, spec in self._all_readers.items()},
            normalizers=[(s.name, s.owner, s.instance) for s in plan.normalizers],
            filters=[(s.name, s.owner, s.instance) for s in stateless],
            stateful=[(s.name, s.owner, s.instance) for s in stateful],
            max_examples=self.settings.max_examples,
            keep_rejects=self.settings.rejects,
        )
        self.stateful_specs = stateful

    # public entry points ------------------------------------------------------------------------

    def run(self) -> PrepareResult:
        """Process the recipe's input files and write train/val files atomically into the output directory."""
        inputs = [Path(p) for p in self.settings.inputs]
        if not inputs:
            raise InputError("[prepare].inputs", "no input files given")
        for path in inputs:
            _check_input_file(path)
        readers = [self._reader_for(path) for path in inputs]
        out_dir = Path(self.settings.output)
        if out_dir.exists() and not out_dir.is_dir():
            raise InputError(out_dir, "output path exists and is not a directory")
        out_dir.mkdir(parents=True, exist_ok=True)
        merge = self.settings.merge
        set_names = ["" if merge else f"_{i + 1}" for i in range(1 if merge else len(inputs))]
        tmp = Path(tempfile.mkdtemp(prefix=".qckit-prepare-", dir=out_dir))
        try:
            total = sum(p.stat().st_size for p in inputs)
            batches = self._file_batches(inputs, readers, merge)
            slim = not any(getattr(w.instance, "uses_metadata", True) for w in self.plan.writers)
            stats, spools = self._run_batches(
                batches, len(set_names), tmp, total, [str(p) for p in inputs], slim
            )
            self._check_files_had_documents(inputs, stats)
            staged = self._split_and_write(spools, set_names, tmp, stats)
            stats_path = tmp / "stats.json"
            stats["outputs"] = [str(out_dir / final) for _, final in staged]
            atomic_write_json(stats_path, stats)
            outputs = []
            for temp_path, final in staged:  # everything succeeded: move into place
                os.replace(temp_path, out_dir / final)
                outputs.append(out_dir / final)
            if self.settings.rejects:
                os.replace(tmp / REJECTS_FILE, out_dir / REJECTS_FILE)
                outputs.append(out_dir / REJECTS_FILE)
            os.replace(stats_path, out_dir / self.settings.stats_file)
            return PrepareResult(stats=stats, outputs=outputs)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def run_documents(self, items: Iterable[str | dict | Document]) -> PrepareResult:
        """Run on in-memory texts (or ``{"text": …}`` dicts, or Documents); return kept documents and stats.

        Nothing touches the disk except a temporary spool that is removed before returning.
        """

        def documents() -> Iterator[Document]:
            for i, item in enumerate(items, start=1):
                if isinstance(item, Document):
                    yield item
                elif isinstance(item, str):
                    yield Document(item, "<memory>", i)
                elif isinstance(item, dict) and isinstance(item.get("text"), str):
                    meta = {k: v for k, v in item.items() if k != "text"}
                    yield Document(item["text"], "<memory>", i, meta=meta)
                else:
                    raise InputError(
                        "<memory>", f"item {i} is not a string, a dict with a 'text' string, or a Document", i
                    )

        with tempfile.TemporaryDirectory(prefix="qckit-prepare-") as tmp:
            batches = self._memory_batches(documents())
            stats, spools = self._run_batches(batches, 1, Path(tmp), None, ["<memory>"])
            splitter = self.plan.splitter.instance
            n = stats["sets"][0]["kept"]
            splitter.start(n, 0)
            train: list[Document] = []
            val: list[Document] = []
            index = 0
            for docs in _read_spool(spools[0]):
                for doc in docs:
                    (val if splitter.is_val(index, doc) else train).append(doc)
                    index += 1
            stats["sets"][0].update(train=len(train), val=len(val))
            return PrepareResult(stats=stats, train=train, val=val)

    # batching ------------------------------------------------------------------------------------

    def _reader_for(self, path: Path) -> str:
        name = path.name.lower()
        best = None
        for reader_name, spec in self._all_readers.items():
            for suffix in getattr(spec.instance, "suffixes", ()):
                if name.endswith(suffix) and (best is None or len(suffix) > best[1]):
                    best = (reader_name, len(suffix))
        if best is None:
            known = sorted({s for spec in self._all_readers.values() for s in spec.instance.suffixes})
            raise InputError(path, f"unsupported file type; readers handle: {', '.join(known)}")
        return best[0]

    def _file_batches(self, inputs: list[Path], readers: list[str], merge: bool) -> Iterator[_Batch]:
        limit = self.settings.batch_bytes
        for file_index, (path, reader_name) in enumerate(zip(inputs, readers, strict=True)):
            set_index = 0 if merge else file_index
            reader = self._all_readers[reader_name]
            records: list[bytes] = []
            size = 0
            first = 1
            line = 0
            try:
                for line, record in enumerate(reader.instance.records(path), start=1):
                    records.append(record)
                    size += len(record) + 1
                    if size >= limit:
                        yield _Batch(set_index, file_index, str(path), reader_name, first, records, size)
                        records, size, first = [], 0, line + 1
            except QckitError:
                raise
            except OSError as exc:
                raise InputError(path, f"cannot read: {exc}", line + 1) from exc
            except Exception as exc:
                raise ComponentError("reader", reader_name, reader.owner, f"{path}:{line + 1}", exc) from exc
            if records:
                yield _Batch(set_index, file_index, str(path), reader_name, first, records, size)

    def _memory_batches(self, docs: Iterable[Document]) -> Iterator[_Batch]:
        batch: list[Document] = []
        size = 0
        for doc in docs:
            batch.append(doc)
            size += len(doc.text) + 1
            if size >= self.settings.batch_bytes:
                yield _Batch(0, 0, "<memory>", None, batch[0].line, batch, size)
                batch, size = [], 0
        if batch:
            yield _Batch(0, 0, "<memory>", None, batch[0].line, batch, size)

    def _results(self, batches: Iterator[_Batch]) -> Iterator[_BatchResult]:
        workers = self.settings.workers or os.cpu_count() or 1
        if workers == 1:
            for batch in batches:
                yield _process(self.stage, batch)
            return
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        if method == "fork":
            # Components build lookup tables and load models lazily; do it once here so that every
            # forked worker inherits them instead of building its own.
            warm = [Document("Bonjour, c'est une phrase pour préchauffer les composants.", "<warm-up>", 1)]
            with contextlib.suppress(Exception):  # a component that fails will fail again, with its position
                _process(self.stage, _Batch(0, 0, "<warm-up>", None, 1, warm, 64))
        ctx = multiprocessing.get_context(method)
        with ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_init_worker, initargs=(self.stage,)
        ) as pool:
            pending: deque[Future] = deque()
            try:
                for batch in batches:
                    pending.append(pool.submit(_work, batch))
                    if len(pending) >= 2 * workers:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:
                for fut in pending:
                    fut.cancel()

    # main loop -------------------------------------------------------------------------------------

    def _run_batches(
        self,
        batches: Iterator[_Batch],
        n_sets: int,
        tmp: Path,
        total_bytes: int | None,
        sources: list[str],
        slim: bool = False,
    ) -> tuple[dict[str, Any], list[Path]]:
        """Consume batch results in order; ``slim`` spools texts only (no writer needs metadata)."""
        started = time.perf_counter()
        issues = IssueLog(self.settings.max_examples)
        changed = [0] * len(self.stage.normalizers)
        drops: dict[tuple[str, str], int] = {}
        drop_examples: dict[tuple[str, str], list[str]] = {}
        metrics: dict[str, float] = {}
        per_file: list[dict[str, Any]] = [
            {"path": s, "records": 0, "documents": 0, "bytes": 0, "issues": {}} for s in sources
        ]
        kept_per_set = [0] * n_sets
        spool_paths = [tmp / f"spool-{i}.pkl" for i in range(n_sets)]
        spools = [open(p, "wb") for p in spool_paths]  # noqa: SIM115 - closed in the finally below
        rejects = open(tmp / REJECTS_FILE, "w", encoding="utf-8") if self.settings.rejects else None  # noqa: SIM115
        obs = self.observer
        obs.start("prepare", total=total_bytes, unit="B")
        try:
            for result in self._results(batches):
                issues.merge(result.issues)
                for i, count in enumerate(result.changed):
                    changed[i] += count
                _merge_counts(
                    drops, drop_examples, result.drops, result.drop_examples, self.settings.max_examples
                )
                f = per_file[result.file_index]
                f["records"] += result.records
                f["documents"] += result.documents
                f["bytes"] += result.nbytes
                for kind, count in result.issues.counts.items():
                    f["issues"][kind] = f["issues"].get(kind, 0) + count
                kept = self._stateful(result, drops, drop_examples)
                if result.metric_values is not None and kept:
                    sums = result.metric_values[kept].sum(axis=0)
                    for key, value in zip(result.metric_keys, sums.tolist(), strict=True):
                        metrics[key] = metrics.get(key, 0.0) + value
                kept_per_set[result.set_index] += len(kept)
                if kept:
                    pickle.dump(
                        _spool_record(result, kept, slim), spools[result.set_index], pickle.HIGHEST_PROTOCOL
                    )
                if rejects is not None and result.rejected:
                    rejects.write("".join(_reject_line(result.source, *r) for r in sorted(result.rejected)))
                obs.advance("prepare", result.nbytes, kept=sum(kept_per_set))
        finally:
            for s in spools:
                s.close()
            if rejects is not None:
                rejects.close()
            obs.finish("prepare")
        elapsed = time.perf_counter() - started
        read_bytes = sum(f["bytes"] for f in per_file)
        stats: dict[str, Any] = {
            "inputs": per_file,
            "records": sum(f["records"] for f in per_file),
            "documents": sum(f["documents"] for f in per_file),
            "reader_issues": issues.as_dict(),
            "normalizers": {
                name: count for (name, _, _), count in zip(self.stage.normalizers, changed, strict=True)
            },
            "filters": _filter_stats(self.plan, drops, drop_examples),
            "kept": sum(kept_per_set),
            "sets": [{"kept": k} for k in kept_per_set],
            "metrics": metrics,
            "summaries": self._summaries(metrics),
            "workers": self.settings.workers or os.cpu_count() or 1,
            "elapsed_s": round(elapsed, 3),
            "throughput_mb_s": round(read_bytes / 1e6 / elapsed, 2) if elapsed > 0 else None,
        }
        return stats, spool_paths

    def _stateful(self, result: _BatchResult, drops: dict, examples: dict) -> list[int]:
        """Run the stateful filters; return the indices of the documents they keep."""
        alive = list(range(len(result.texts)))
        for j, spec in enumerate(self.stateful_specs):
            fps = [result.fingerprints[j][i] for i in alive]
            try:
                reasons = spec.instance.drop_reasons(fps)
            except Exception as exc:
                where = f"{result.source}:{result.lines[alive[0]]}" if alive else None
                raise ComponentError("filter", spec.name, spec.owner, where, exc) from exc
            survivors = []
            for i, reason in zip(alive, reasons, strict=True):
                if reason is None:
                    survivors.append(i)
                    continue
                where = f"{result.source}:{result.lines[i]}"
                _count_drop(drops, examples, self.settings.max_examples, (spec.name, reason), where)
                if self.settings.rejects:
                    result.rejected.append((result.lines[i], spec.name, reason, result.texts[i]))
            alive = survivors
        return alive

    def _summaries(self, metrics: dict[str, float]) -> dict[str, Any]:
        out = {}
        for spec in [*self.plan.normalizers, *self.plan.filters]:
            summary = getattr(spec.instance, "summary", None)
            if callable(summary):
                out[spec.name] = summary(metrics)
        return out

    def _check_files_had_documents(self, inputs: Sequence[Path], stats: dict) -> None:
        for path, info in zip(inputs, stats["inputs"], strict=True):
            if info["documents"] == 0:
                problems = sum(c for kind, c in info["issues"].items() if kind != BLANK_LINE)
                detail = f" ({problems} unusable records)" if problems else " (only blank lines)"
                raise InputError(path, f"no documents found{detail}")

    def _split_and_write(
        self, spools: list[Path], set_names: list[str], tmp: Path, stats: dict
    ) -> list[tuple[Path, str]]:
        splitter = self.plan.splitter
        writers = self.plan.writers
        staged: list[tuple[Path, str]] = []
        for set_index, (spool, suffix) in enumerate(zip(spools, set_names, strict=True)):
            n = stats["sets"][set_index]["kept"]
            splitter.instance.start(n, set_index)
            files = {}
            for w in writers:
                for part in ("train", "val"):
                    final = f"{part}{suffix}{w.instance.suffix}"
                    files[(w.name, part)] = (tmp / final, final)
            counts = {"train": 0, "val": 0}
            text_bytes = 0
            is_val = splitter.instance.is_val
            index = 0
            with contextlib.ExitStack() as stack:
                handles = {
                    key: stack.enter_context(open(path, "w", encoding="utf-8", newline="\n"))
                    for key, (path, _) in files.items()
                }
                for docs in _read_spool(spool):
                    try:
                        flags = [is_val(i, doc) for i, doc in enumerate(docs, start=index)]
                    except Exception as exc:
                        raise ComponentError("splitter", splitter.name, splitter.owner, None, exc) from exc
                    index += len(docs)
                    n_val = sum(flags)
                    text_bytes += len("".join([doc.text for doc in docs]).encode("utf-8"))
                    counts["val"] += n_val
                    counts["train"] += len(docs) - n_val
                    for w in writers:
                        lines = [w.instance.format(doc) for doc in docs]
                        handles[(w.name, "train")].write(
                            "".join(t for t, v in zip(lines, flags, strict=True) if not v)
                        )
                        if n_val:
                            handles[(w.name, "val")].write(
                                "".join(t for t, v in zip(lines, flags, strict=True) if v)
                            )
            stats["sets"][set_index].update(name=f"train{suffix}/val{suffix}", bytes=text_bytes, **counts)
            staged.extend(files.values())
        return staged


# -- helpers ---------------------------------------------------------------------------------------


def _reader_table(plan: PreparePlan) -> dict[str, ComponentSpec]:
    """Every registered reader, built with defaults unless the recipe configured it."""
    from qckit.recipe import build_component

    table = {spec.name: spec for spec in plan.readers}
    for name in plan.host.names("reader"):
        if name not in table:
            table[name] = build_component(
                plan.host, "reader", {"use": name}, f"prepare.readers.{name}", "<defaults>"
            )
    return table


def _check_input_file(path: Path) -> None:
    if not path.exists():
        raise InputError(path, "no such file")
    if path.is_dir():
        raise InputError(path, "is a directory, expected a file")
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty")


def _spool_record(result: _BatchResult, kept: list[int], slim: bool) -> tuple:
    """What the second pass needs of a batch's kept documents.

    Slim (no writer reads metadata): the texts joined into one string, which pickles with a single
    UTF-8 encode instead of one per document; otherwise full rows.
    """
    texts = [result.texts[i] for i in kept] if len(kept) != len(result.texts) else result.texts
    if slim:
        joined = _SEP.join(texts)
        if joined.count(_SEP) == len(texts) - 1:
            return (result.source, "joined", joined)
        return (result.source, "texts", texts)
    metas = result.metas
    rows = []
    for n, i in enumerate(kept):
        metrics = None
        if result.metric_values is not None:
            metrics = dict(zip(result.metric_keys, result.metric_values[i].tolist(), strict=True))
        rows.append((texts[n], result.lines[i], metas[i] if metas is not None else None, metrics))
    return (result.source, "rows", rows)


_SEP = "\x00"


def _read_spool(path: Path) -> Iterator[list[Document]]:
    """The kept documents, batch by batch, in corpus order."""
    with open(path, "rb") as f:
        while True:
            try:
                source, form, data = pickle.load(f)
            except EOFError:
                return
            if form == "joined":
                yield [Document(text, source) for text in data.split(_SEP)]
            elif form == "texts":
                yield [Document(text, source) for text in data]
            else:
                yield [_document(text, source, line, meta, metrics) for text, line, meta, metrics in data]


def _reject_line(source: str, line: int, filter_name: str, reason: str, text: str) -> str:
    record = {"source": source, "line": line, "filter": filter_name, "reason": reason, "text": text}
    return json.dumps(record, ensure_ascii=False) + "\n"


def _count_drop(drops: dict, examples: dict, limit: int, key: tuple[str, str], where: str) -> None:
    """Count one dropped document under (filter, reason) and keep its position among the first examples."""
    drops[key] = drops.get(key, 0) + 1
    ex = examples.setdefault(key, [])
    if len(ex) < limit:
        ex.append(where)


def _merge_counts(drops, examples, new_drops, new_examples, limit) -> None:
    for key, count in new_drops.items():
        drops[key] = drops.get(key, 0) + count
        ex = examples.setdefault(key, [])
        room = limit - len(ex)
        if room > 0:
            ex.extend(new_examples.get(key, [])[:room])


def _filter_stats(plan: PreparePlan, drops: dict, examples: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for spec in plan.filters:
        reasons = {r: c for (name, r), c in sorted(drops.items()) if name == spec.name}
        out[spec.name] = {
            "dropped": sum(reasons.values()),
            "reasons": reasons,
            "examples": {r: examples.get((spec.name, r), []) for r in reasons},
        }
    return out


def run_prepare(plan: PreparePlan, observer: Observer | None = None) -> PrepareResult:
    """Run the prepare stage of a validated recipe (see :func:`qckit.recipe.load_recipe`)."""
    return PreparePipeline(plan, observer).run()


def prepare_texts(
    items: Iterable[str | dict | Document],
    recipe: dict[str, Any] | None = None,
    *,
    host: Any = None,
    observer: Observer | None = None,
) -> PrepareResult:
    """Library entry point: run the prepare pipeline on in-memory texts without touching the disk.

    ``recipe`` is a recipe dict (``{"prepare": {...}}``, as TOML would give); omitted parts use the
    defaults. Returns a :class:`PrepareResult` with ``train``, ``val`` (lists of Documents) and ``stats``.

    >>> result = prepare_texts(["Salut, c'est moi pis mon chum icitte.", "lol"])
    >>> [d.text for d in result.train + result.val]
    ["Salut, c'est moi pis mon chum icitte."]
    """
    from qckit.recipe import build_recipe

    data = dict(recipe or {})
    data.setdefault("prepare", {})
    data["prepare"] = dict(data["prepare"])
    data["prepare"].setdefault("workers", 1)
    built = build_recipe(
        {"prepare": data["prepare"], **{k: v for k, v in data.items() if k == "plugins"}},
        source="<library>",
        host=host,
    )
    assert built.prepare is not None
    return PreparePipeline(built.prepare, observer).run_documents(items)
