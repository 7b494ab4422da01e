"""The prepare pipeline: files → records → documents → normalized → filtered → deduplicated → split → written.

Data flows one way and in batches:

* the driver reads raw records (cheap I/O) and cuts them into batches of ``batch_bytes``
  (:mod:`~qckit.prepare.inputs`);
* workers parse, normalize, run the stateless filters and compute dedup fingerprints
  (:mod:`~qckit.prepare.work`), wherever the recipe's executor places them (``[prepare.executor]``);
* the driver receives the results **in corpus order**, runs the stateful filters, counts everything
  (:mod:`~qckit.prepare.stats`) and spools the kept documents; when every input is read, the splitter
  assigns each kept document to train or validation and the writers format them into temporary files
  that are renamed into place only when everything succeeded (:mod:`~qckit.prepare.output`).

Because batches are cut by bytes in the driver and results are consumed in order, the output is
byte-identical whatever the number of workers. Memory stays bounded: at most ``2 × workers`` batches
are in flight, dedup keeps fixed-size fingerprints, and the splitter needs only the document count.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qckit.components import BLANK_LINE, Document
from qckit.errors import ComponentError, InputError, QckitError
from qckit.prepare import inputs, shards
from qckit.prepare.inputs import InputFile
from qckit.prepare.output import MemorySink, RejectsFile, Spool, commit, split_set, write_sets
from qckit.prepare.stats import Funnel
from qckit.prepare.work import BatchResult, Stage, StatefulFilters, process, warm_up
from qckit.progress import NullObserver, Observer
from qckit.recipe import PreparePlan, build_recipe
from qckit.settings import REJECTS_FILE

#: the work directory of executors that read their own shards (plan, results, completion records)
WORK_DIR = Path(".qckit") / "work"


@dataclass
class PrepareResult:
    """What a prepare run produced: output paths (or documents, in memory) and the stats funnel."""

    stats: dict[str, Any]
    outputs: list[Path] = field(default_factory=list)
    train: list[Document] | None = None
    val: list[Document] | None = None


class PreparePipeline:
    """Runs one validated :class:`~qckit.recipe.PreparePlan`. Reusable; holds no global state."""

    def __init__(self, plan: PreparePlan, observer: Observer | None = None):
        self.plan = plan
        self.settings = plan.settings
        self.observer = observer or NullObserver()
        stateless = [s for s in plan.filters if not getattr(s.instance, "stateful", False)]
        stateful = [s for s in plan.filters if getattr(s.instance, "stateful", False)]
        self.stage = Stage(
            readers={name: (spec.owner, spec.instance) for name, spec in plan.reader_table.items()},
            normalizers=[(s.name, s.owner, s.instance) for s in plan.normalizers],
            filters=[(s.name, s.owner, s.instance) for s in stateless],
            stateful=[(s.name, s.owner, s.instance) for s in stateful],
            max_examples=self.settings.max_examples,
            keep_rejects=self.settings.rejects,
        )
        self.stateful = StatefulFilters(stateful, self.settings.rejects, self.settings.max_examples)

        self.executor = plan.executor

    def run(self) -> PrepareResult:
        """Process the recipe's input files and write train/val files atomically into the output directory."""
        paths = [Path(p) for p in self.settings.inputs]
        if not paths:
            raise InputError("[prepare].inputs", "no input files given")
        readers = self.plan.reader_table
        files = inputs.input_files(paths, readers, self.settings.merge)
        out_dir = Path(self.settings.output)
        if out_dir.exists() and not out_dir.is_dir():
            raise InputError(out_dir, "output path exists and is not a directory")
        out_dir.mkdir(parents=True, exist_ok=True)
        set_names = [""] if self.settings.merge else [f"_{i + 1}" for i in range(len(files))]
        work_dir = out_dir / WORK_DIR
        tmp = Path(tempfile.mkdtemp(prefix=".qckit-prepare-", dir=out_dir))
        try:

            def results(executor: Any, funnel: Funnel) -> Iterator[BatchResult]:
                if getattr(executor, "reads_inputs", False):
                    return self._shard_results(executor, files, work_dir, funnel)
                batches = inputs.file_batches(files, readers, self.settings.batch_bytes)
                return executor.map(process, batches, self.stage)

            slim = not any(getattr(w.instance, "uses_metadata", True) for w in self.plan.writers)
            rejects = RejectsFile(tmp / REJECTS_FILE) if self.settings.rejects else None
            total = sum(f.size for f in files)
            stats, spool = self._consume(
                results, len(set_names), tmp, total, [f.path for f in files], slim, rejects
            )
            self._check_files_had_documents(paths, stats)
            staged = write_sets(spool, set_names, self.plan.splitter, self.plan.writers, tmp, stats)
            extra = [(tmp / REJECTS_FILE, REJECTS_FILE)] if rejects is not None else []
            outputs = commit(staged, extra, stats, tmp, out_dir, self.settings.stats_file)
            shards.clear(work_dir)  # committed: nothing left to resume
            return PrepareResult(stats=stats, outputs=outputs)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def run_documents(self, items: Iterable[str | dict | Document]) -> PrepareResult:
        """Run on in-memory texts (or ``{"text": …}`` dicts, or Documents); return kept documents and stats.

        Nothing touches the disk except a temporary spool that is removed before returning.
        """
        with tempfile.TemporaryDirectory(prefix="qckit-prepare-") as tmp:
            batches = inputs.memory_batches(inputs.memory_documents(items), self.settings.batch_bytes)

            def results(executor: Any, funnel: Funnel) -> Iterator[BatchResult]:
                return executor.map(process, batches, self.stage)

            stats, spool = self._consume(results, 1, Path(tmp), None, [inputs.MEMORY_SOURCE], False, None)
            sink = MemorySink()
            counts = split_set(spool.batches(0), stats["sets"][0]["kept"], 0, self.plan.splitter, sink)
            stats["sets"][0].update(train=counts["train"], val=counts["val"])
            return PrepareResult(stats=stats, train=sink.train, val=sink.val)

    def _consume(
        self,
        results: Callable[[Any, Funnel], Iterator[BatchResult]],
        n_sets: int,
        tmp: Path,
        total_bytes: int | None,
        sources: list[str],
        slim: bool,
        rejects: RejectsFile | None,
    ) -> tuple[dict[str, Any], Spool]:
        """Take the batch results in corpus order: decide, count, spool; return the stats and the spool."""
        funnel = Funnel(
            sources=sources,
            n_sets=n_sets,
            normalizers=[name for name, _, _ in self.stage.normalizers],
            filters=[spec.name for spec in self.plan.filters],
            summarizers=[
                (spec.name, spec.instance)
                for spec in [*self.plan.normalizers, *self.plan.filters]
                if callable(getattr(spec.instance, "summary", None))
            ],
            max_examples=self.settings.max_examples,
            workers=1,
        )
        funnel.executor["use"] = self.executor.name
        spool = Spool(tmp, n_sets, slim)
        obs = self.observer
        obs.start("prepare", total=total_bytes, unit="B")
        try:
            for result in self._executed(results, funnel):
                self.stateful.decide(result)
                funnel.add(result)
                spool.add(result)
                if rejects is not None:
                    rejects.add(result)
                obs.advance("prepare", result.nbytes, kept=funnel.kept)
        finally:
            spool.close()
            if rejects is not None:
                rejects.close()
            obs.finish("prepare")
        funnel.finish()
        return funnel.as_dict(), spool

    def _executed(
        self, results: Callable[[Any, Funnel], Iterator[BatchResult]], funnel: Funnel
    ) -> Iterator[BatchResult]:
        """The batch results in corpus order, from wherever the executor runs them."""
        spec = self.executor
        executor = spec.instance
        try:
            funnel.workers = executor.start(self.settings.workers)
            warm_up(self.stage)
            stream = results(executor, funnel)
            try:
                yield from stream
            finally:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()
        except QckitError:
            raise
        except Exception as exc:
            raise ComponentError("executor", spec.name, spec.owner, None, exc) from exc
        finally:
            executor.stop()

    def _shard_results(
        self, executor: Any, files: list[InputFile], work_dir: Path, funnel: Funnel
    ) -> Iterator[BatchResult]:
        """Results of an executor whose workers read their own shards: plan (or resume), map, read back."""
        settings = self.settings
        readers = self.plan.reader_table
        used_readers = [readers[name] for name in dict.fromkeys(f.reader for f in files)]
        print_ = shards.fingerprint(
            files,
            [*used_readers, *self.plan.normalizers, *self.plan.filters],
            {
                "batch_bytes": settings.batch_bytes,
                "max_examples": settings.max_examples,
                "rejects": settings.rejects,
                "shard_bytes": executor.shard_bytes,
            },
        )
        ctx = shards.ShardContext(self.stage, readers, settings.batch_bytes, str(work_dir))
        plan = shards.load_plan(work_dir, print_) if settings.resume else None
        if plan is None:
            if settings.resume:
                self.observer.warn(f"nothing to resume in {work_dir}: starting from the beginning")
            shards.clear(work_dir)
            work_dir.mkdir(parents=True)
            cuts = shards.cut(files, readers, executor.shard_bytes)
            counts = list(executor.map(shards.count_records, shards.needs_count(cuts), ctx))
            plan = shards.number(cuts, counts)
            shards.save_plan(work_dir, print_, plan)
            done: set[int] = set()
        else:
            done = {s.index for s in plan if shards.is_complete(work_dir, s)}
        funnel.executor.update(shards=len(plan), resumed=len(done))
        todo = [s for s in plan if s.index not in done]
        finished = executor.map(shards.run_shard, todo, ctx)
        try:
            for shard in plan:
                if shard.index not in done:
                    next(finished)  # this shard's completion (map yields in the order of todo)
                yield from shards.read_results(work_dir, shard)
        finally:
            close = getattr(finished, "close", None)
            if close is not None:
                close()

    def _check_files_had_documents(self, paths: list[Path], stats: dict) -> None:
        for path, info in zip(paths, stats["inputs"], strict=True):
            if info["documents"] == 0:
                problems = sum(c for kind, c in info["issues"].items() if kind != BLANK_LINE)
                detail = f" ({problems} unusable records)" if problems else " (only blank lines)"
                raise InputError(path, f"no documents found{detail}")


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
