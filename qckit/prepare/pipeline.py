"""The prepare pipeline: files → records → documents → normalized → filtered → deduplicated → split → written.

Data flows one way and in batches:

* the driver reads raw records (cheap I/O) and cuts them into batches of ``batch_bytes``
  (:mod:`~qckit.prepare.inputs`), or, for an executor whose workers read their own input, cuts the
  inputs into shards (:mod:`~qckit.prepare.shards`);
* workers parse, normalize, run the stateless filters, compute dedup fingerprints and format the
  writers' lines (:mod:`~qckit.prepare.work`), wherever the recipe's executor places them;
* the driver receives the results **in corpus order**, runs the stateful filters, counts everything
  (:mod:`~qckit.prepare.stats`) and spools the kept lines; when every input is read, the splitter
  assigns each kept document to train or validation and the lines go to their files
  (:mod:`~qckit.prepare.output`), which are published all at once (:mod:`~qckit.prepare.outdir`).

Because results are consumed in corpus order and components are pure functions of their input, the
output is byte-identical whatever the number of workers, shards or machines. Memory stays bounded:
a bounded number of batches is in flight, a line longer than ``max_line_bytes`` is never held,
dedup keeps fixed-size fingerprints, and the splitter needs only the document count.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qckit._fs import atomic_write_json, errors_name
from qckit.components import BLANK_LINE, Document
from qckit.errors import ComponentError, InputError, QckitError
from qckit.prepare import inputs, shards
from qckit.prepare.inputs import InputFile
from qckit.prepare.outdir import WORK_DIR, OutputDir
from qckit.prepare.output import MemorySink, RejectsFile, Spool, split_set, write_sets
from qckit.prepare.stats import Funnel
from qckit.prepare.work import BatchResult, Stage, StatefulFilters, process, warm_up
from qckit.progress import NullObserver, Observer
from qckit.recipe import PreparePlan, build_recipe
from qckit.settings import REJECTS_FILE, set_suffixes


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
        # For files the workers also format the writers' lines; the driver then needs the documents
        # themselves only for a splitter that reads them, and the texts for rejects of stateful filters.
        reads_docs = not hasattr(plan.splitter.instance, "is_val_batch")
        self.file_stage = dataclasses.replace(
            self.stage,
            writers=[(w.name, w.owner, w.instance) for w in plan.writers],
            keep_texts=reads_docs or bool(stateful and self.settings.rejects),
            keep_meta=reads_docs,
        )

        self.executor = plan.executor

    def run(self) -> PrepareResult:
        """Process the recipe's input files and publish train/val files, all at once, into the output directory."""
        settings = self.settings
        paths = [Path(p) for p in settings.inputs]
        readers = self.plan.reader_table
        files = checked_inputs(self.plan)
        set_names = set_suffixes(settings.merge, len(files))
        names = settings.output_names(len(files), [w.instance.suffix for w in self.plan.writers])
        with OutputDir(Path(settings.output), names, settings.stats_file, self.observer) as out:
            work_dir = out.state / WORK_DIR

            def results(executor: Any, funnel: Funnel) -> Iterator[BatchResult]:
                if getattr(executor, "reads_inputs", False):
                    return self._shard_results(executor, files, work_dir, funnel)
                batches = inputs.file_batches(files, readers, settings.batch_bytes, settings.max_line_bytes)
                return executor.map(process, batches, self.file_stage)

            rejects = RejectsFile(out.staging / REJECTS_FILE) if settings.rejects else None
            total = sum(f.size for f in files)
            stats, spool = self._consume(
                results, self.file_stage, len(set_names), out.run_dir, total, [f.path for f in files], rejects
            )
            self._report_growth(files, stats)
            self._check_files_had_documents(paths, stats)
            self._check_kept(stats)
            write_sets(
                spool,
                set_names,
                self.plan.splitter,
                self.plan.writers,
                out.staging,
                stats,
                self.stateful.clusters,
            )
            spool.remove()
            stats["outputs"] = [
                str(out.path / name) for name in names if name not in (REJECTS_FILE, settings.stats_file)
            ]
            with errors_name(out.staging / settings.stats_file):
                atomic_write_json(out.staging / settings.stats_file, stats)
            outputs = out.publish()
            shards.clear(work_dir)  # published: nothing left to resume
        return PrepareResult(stats=stats, outputs=[p for p in outputs if p.name != settings.stats_file])

    def run_documents(self, items: Iterable[str | dict | Document]) -> PrepareResult:
        """Run on in-memory texts (or ``{"text": …}`` dicts, or Documents); return kept documents and stats.

        Nothing touches the disk except a temporary spool that is removed before returning.
        """
        with tempfile.TemporaryDirectory(prefix="qckit-prepare-") as tmp:
            batches = inputs.memory_batches(inputs.memory_documents(items), self.settings.batch_bytes)

            def results(executor: Any, funnel: Funnel) -> Iterator[BatchResult]:
                return executor.map(process, batches, self.stage)

            stats, spool = self._consume(
                results, self.stage, 1, Path(tmp), None, [inputs.MEMORY_SOURCE], None
            )
            sink = MemorySink()
            n = stats["sets"][0]["kept"]
            clusters = self.stateful.clusters
            followed = clusters.for_sets([n])[0] if clusters else None
            counts = split_set(spool.batches(0), n, 0, self.plan.splitter, sink, followed)
            stats["sets"][0].update(train=counts["train"], val=counts["val"])
            if "clustered" in counts:
                stats["sets"][0]["clustered"] = counts["clustered"]
            return PrepareResult(stats=stats, train=sink.train, val=sink.val)

    def _consume(
        self,
        results: Callable[[Any, Funnel], Iterator[BatchResult]],
        stage: Stage,
        n_sets: int,
        tmp: Path,
        total_bytes: int | None,
        sources: list[str],
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
        spool = Spool(tmp, n_sets, with_docs=not stage.writers or stage.keep_meta)
        self.stateful.begin()
        obs = self.observer
        obs.start("prepare", total=total_bytes, unit="B")
        try:
            for result in self._executed(results, stage, funnel):
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
        self, results: Callable[[Any, Funnel], Iterator[BatchResult]], stage: Stage, funnel: Funnel
    ) -> Iterator[BatchResult]:
        """The batch results in corpus order, from wherever the executor runs them."""
        spec = self.executor
        executor = spec.instance
        try:
            funnel.workers = executor.start(self.settings.workers)
            warm_up(stage)
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
                "max_line_bytes": settings.max_line_bytes,
                "max_examples": settings.max_examples,
                "rejects": settings.rejects,
                "shard_bytes": executor.shard_bytes,
            },
        )
        ctx = shards.ShardContext(
            self.file_stage, readers, settings.batch_bytes, settings.max_line_bytes, str(work_dir)
        )
        plan = shards.load_plan(work_dir, print_) if settings.resume else None
        if plan is None:
            if settings.resume:
                self.observer.warn(f"nothing to resume in {work_dir}: starting from the beginning")
            shards.clear(work_dir)
            cuts = shards.cut(files, readers, executor.shard_bytes)
            counts = list(executor.map(shards.count_records, shards.needs_count(cuts), ctx))
            plan = shards.number(cuts, counts)
            with errors_name(work_dir):
                work_dir.mkdir(parents=True)
                shards.save_plan(work_dir, print_, plan)
            done: set[int] = set()
        else:
            done = {s.index for s in plan if shards.is_complete(work_dir, s)}
        funnel.executor.update(shards=len(plan), resumed=len(done))
        todo = [s for s in plan if s.index not in done]
        finished = executor.map(shards.run_shard, todo, ctx)
        rates = []  # MB/s of each shard's task, for the report and the scaling estimate of bench/
        try:
            for shard in plan:
                if shard.index not in done:
                    record = next(finished)  # this shard's completion (map yields in the order of todo)
                    if record["seconds"] > 0:
                        rates.append(record["bytes_read"] / 1e6 / record["seconds"])
                yield from shards.read_results(work_dir, shard)
        finally:
            close = getattr(finished, "close", None)
            if close is not None:
                close()
        if rates:
            funnel.executor["task_mb_s"] = float(f"{statistics.median(rates):.3g}")

    def _report_growth(self, files: list[InputFile], stats: dict) -> None:
        """The readers read each input up to its size when they opened it: an input that grew during the
        run (a log still being written) gets ``grew_bytes`` in its stats and a warning, since some of
        what was added is not in the outputs."""
        for inp, info in zip(files, stats["inputs"], strict=True):
            try:
                now = os.stat(inp.path).st_size
            except OSError:  # gone by now: it was read; what it became is not this run's concern
                continue
            if now > inp.size:
                info["grew_bytes"] = now - inp.size
                self.observer.warn(
                    f"{inp.path}: grew during the run by {now - inp.size:,} bytes "
                    f"(from {inp.size:,} to {now:,}); it was read up to its size when it was opened"
                )

    def _check_kept(self, stats: dict) -> None:
        """A run that keeps nothing fails (and publishes nothing) instead of writing empty files."""
        if stats["kept"]:
            return
        inputs = self.settings.inputs
        where = inputs[0] if len(inputs) == 1 else f"{inputs[0]} and {len(inputs) - 1} other input(s)"
        drops = ", ".join(f"{n} {f['dropped']:,}" for n, f in stats["filters"].items() if f["dropped"])
        raise InputError(where, f"no document kept: the filters dropped all {stats['documents']:,} ({drops})")

    def _check_files_had_documents(self, paths: list[Path], stats: dict) -> None:
        for path, info in zip(paths, stats["inputs"], strict=True):
            if info["documents"] == 0:
                problems = sum(c for kind, c in info["issues"].items() if kind != BLANK_LINE)
                detail = f" ({problems} unusable records)" if problems else " (only blank lines)"
                raise InputError(path, f"no documents found{detail}")


def checked_inputs(plan: PreparePlan) -> list[InputFile]:
    """The recipe's inputs, checked before any work starts (``qckit run --check`` too): each one a
    readable, non-empty regular file that a reader handles, none listed twice; else one
    :class:`InputError` naming the first unusable input and what is wrong with it."""
    if not plan.settings.inputs:
        raise InputError("[prepare].inputs", "no input files given")
    return inputs.input_files(plan.settings.inputs, plan.reader_table, plan.settings.merge)


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
