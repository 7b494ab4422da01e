"""Where the prepare workers' CPU goes: ``qckit.prepare.work.process`` profiled per component.

    python bench/profile_prepare.py --size-mb 50        # the corpus bench_prepare.py uses

Runs what one worker does to every batch of the corpus (parse, normalize, filter, fingerprint, format
the output lines), in this one process, with the recipe ``qckit prepare`` builds from its default
flags, every component's methods wrapped with a CPU timer. Prints the CPU seconds of the whole pass and
each component's share; the driver's work (reading, the dedup decisions in corpus order, writing) is
not in it. It is a profile, not a race: the ratio
against the seed comes from ``bench_prepare.py``; this says which component a speed-up has to touch.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


METHODS = (
    "parse",
    "parse_batch",
    "parse_block",
    "normalize",
    "normalize_batch",
    "drop_reason",
    "drop_reason_batch",
    "fingerprint",
    "fingerprint_batch",
    "format",
    "format_batch",
)


def _time_components(stage) -> dict[str, float]:
    """Wrap every component instance's per-document and batch methods with a CPU timer (outermost call
    only, so a batch method that calls the per-document one counts once); return the running totals."""
    spent: dict[str, float] = {}
    named = [(f"reader {name}", inst) for name, (_, inst) in stage.readers.items()]
    named += [(name, inst) for name, _, inst in [*stage.normalizers, *stage.filters, *stage.stateful]]
    named += [(f"writer {name}", inst) for name, _, inst in stage.writers]
    for label, inst in named:
        spent[label] = 0.0
        depth = [0]
        for method in METHODS:
            bound = getattr(inst, method, None)
            if bound is None:
                continue

            def timed(*a, _bound=bound, _label=label, _depth=depth, **k):
                if _depth[0]:
                    return _bound(*a, **k)
                _depth[0] += 1
                t = time.process_time()
                try:
                    return _bound(*a, **k)
                finally:
                    spent[_label] += time.process_time() - t
                    _depth[0] -= 1

            setattr(inst, method, timed)
    return spent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=float, default=50)
    ap.add_argument("--keep", help="a directory to keep the generated corpus in (reused when present)")
    ap.add_argument(
        "--default-malloc",
        action="store_true",
        help="keep glibc's default allocator settings (the workers keep freed memory: see the local executor)",
    )
    ap.add_argument(
        "--gc-threshold",
        type=int,
        default=None,
        help="the young-generation GC threshold to run with (default: the local executor's workers' own)",
    )
    args = ap.parse_args()

    from make_corpus import make_corpus

    from qckit.cli.main import build_parser
    from qckit.cli.prepare import prepare_flags_to_recipe
    from qckit.prepare import inputs
    from qckit.prepare.pipeline import PreparePipeline
    from qckit.prepare.work import process, warm_up
    from qckit.recipe import build_recipe

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="qckit-profile-"))
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / f"corpus_{int(args.size_mb)}mb.txt"
    if not corpus.exists():
        make_corpus(corpus, args.size_mb, seed=0)
    ns = build_parser().parse_args(["prepare", "--input", str(corpus), "--output", str(work / "out")])
    plan = build_recipe(prepare_flags_to_recipe(ns)).prepare
    assert plan is not None
    pipeline = PreparePipeline(plan)
    stage = pipeline.file_stage
    settings = plan.settings
    files = inputs.input_files([corpus], plan.reader_table, settings.merge)

    from qckit_builtins.executors.local import _GC_YOUNG, tune_worker_process

    started = time.perf_counter()
    warm_up(stage)
    warm = time.perf_counter() - started
    young = _GC_YOUNG if args.gc_threshold is None else args.gc_threshold
    tune_worker_process(
        keep_freed_memory=not args.default_malloc, gc_young=young
    )  # as a worker, after warm-up
    spent = _time_components(stage)
    cpu = time.process_time()
    n_batches = 0
    for batch in inputs.file_batches(files, plan.reader_table, settings.batch_bytes, settings.max_line_bytes):
        process(stage, batch)
        n_batches += 1
    cpu = time.process_time() - cpu
    print(
        f"corpus {corpus.stat().st_size / 1e6:.1f} MB, {n_batches} batches of ~{settings.batch_bytes // 1024} KiB; "
        f"warm-up (lookup tables) {warm:.2f} s"
    )
    from qckit_builtins import accelerated

    built = ", ".join(name for name, on in accelerated.available().items() if on) or "none"
    print(f"C accelerators in use: {built} (QCKIT_NO_EXTENSIONS=1 turns them off)")
    malloc = "glibc defaults" if args.default_malloc else "freed memory kept, as in the workers"
    malloc += f"; young-generation GC every {young:,} allocations"
    print(f"process() over every batch, one process ({malloc}): {cpu:.2f} CPU-s")
    print(f"{'component':28s} {'CPU-s':>8s} {'share':>7s}")
    for name, seconds in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"{name:28s} {seconds:8.2f} {seconds / cpu:7.1%}")
    rest = cpu - sum(spent.values())
    print(
        f"{'rest of process()':28s} {rest:8.2f} {rest / cpu:7.1%}  (batch bookkeeping, surrogate checks, columns)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
