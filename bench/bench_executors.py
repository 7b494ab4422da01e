"""Local pool against Ray on one machine: overhead, per-task throughput and the scaling it predicts.

    python bench/bench_executors.py --size-mb 50 --shard-mb 8

Runs the same corpus and recipe (the `qckit prepare` defaults) with the ``local`` executor and the
``ray`` executor, in this process, in the same run, and checks that both outputs are byte-identical.
Ray is timed twice: *cold* (qckit starts a local Ray instance and shuts it down, as `qckit prepare
--executor ray` does) and *warm* (a Ray instance already running, as on a cluster). From the Ray
run it prints the median throughput of one shard task (read from the completion records) and the
driver's CPU cost per MB (it reads results in corpus order, deduplicates, spools and writes), and from
those the throughput to expect with more CPUs: ``min(tasks × task rate, driver rate)``.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def digest(out: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(out.iterdir()):
        if p.name.startswith(("train", "val")):
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def run(corpus: Path, out: Path, executor: dict, workers: int) -> tuple[float, float, dict]:
    """(wall seconds, driver CPU seconds, stats) of one prepare run in this process."""
    from qckit.prepare import run_prepare
    from qckit.recipe import build_recipe

    shutil.rmtree(out, ignore_errors=True)
    recipe = build_recipe(
        {"prepare": {"inputs": [str(corpus)], "output": str(out), "workers": workers, "executor": executor}}
    )
    assert recipe.prepare is not None
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    result = run_prepare(recipe.prepare)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, result.stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=float, default=50)
    ap.add_argument("--shard-mb", type=float, default=8, help="Ray shard size")
    ap.add_argument("--workers", type=int, default=0, help="0: every core")
    ap.add_argument("--keep", help="directory to keep the corpus and outputs in")
    args = ap.parse_args()

    from make_corpus import make_corpus

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="qckit-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / f"corpus_{int(args.size_mb)}mb.txt"
    if not corpus.exists():
        make_corpus(corpus, args.size_mb, seed=0)
    size_mb = corpus.stat().st_size / 1e6
    workers = args.workers or os.cpu_count() or 1
    print(f"corpus: {size_mb:.1f} MB, {workers} workers, load average {os.getloadavg()[0]:.1f}")
    ray_executor = {"use": "ray", "shard_bytes": int(args.shard_mb * (1 << 20))}

    local_wall, _, _ = run(corpus, work / "local", {"use": "local"}, workers)
    print(f"local        : {local_wall:6.2f} s  {size_mb / local_wall:6.2f} MB/s")
    cold_wall, _, _ = run(corpus, work / "ray-cold", ray_executor, workers)
    print(
        f"ray (cold)   : {cold_wall:6.2f} s  {size_mb / cold_wall:6.2f} MB/s   (starts and stops a local Ray)"
    )
    import ray

    started = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    startup = time.perf_counter() - started
    try:
        warm_wall, driver_cpu, stats = run(corpus, work / "ray-warm", ray_executor, workers)
    finally:
        ray.shutdown()
    print(
        f"ray (warm)   : {warm_wall:6.2f} s  {size_mb / warm_wall:6.2f} MB/s   (Ray already running; its start took {startup:.1f} s)"
    )
    same = digest(work / "local") == digest(work / "ray-cold") == digest(work / "ray-warm")
    print(f"outputs byte-identical: {same}")
    print(f"overhead ray/local: cold {cold_wall / local_wall:.2f}x, warm {warm_wall / local_wall:.2f}x")

    task_rate = stats["executor"].get("task_mb_s", 0.0)
    driver_rate = size_mb / driver_cpu if driver_cpu else float("inf")
    print(
        f"{stats['executor']['shards']} shards; one task: {task_rate:.1f} MB/s; "
        f"driver: {driver_cpu:.2f} s CPU = {driver_rate:.0f} MB/s of input at most"
    )
    print("expected throughput with more CPUs (tasks x task rate, capped by the driver):")
    for tasks in (2, 8, 32, 128, 512):
        expected = min(tasks * task_rate, driver_rate)
        bound = "driver-bound" if tasks * task_rate >= driver_rate else ""
        hours = 1e6 / expected / 3600 if expected else float("inf")
        print(f"  {tasks:4d} tasks: {expected:8.1f} MB/s  {hours:7.2f} h per TB  {bound}")


if __name__ == "__main__":
    main()
