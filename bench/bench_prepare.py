"""Prepare-stage throughput and peak memory: qckit against a faithful re-implementation of the seed.

    python bench/bench_prepare.py --size-mb 50            # ratio on a 50 MB corpus
    python bench/bench_prepare.py --size-mb 1000 --skip-seed   # qckit's peak RSS on 1 GB

Both run as separate processes on the same generated corpus, in the same run. Peak RSS is sampled
every 20 ms over the whole process tree (main process + workers, summed) with psutil. qckit runs the
`qckit prepare` defaults: the seed's four filters, exact deduplication, mojibake repair (ftfy on
flagged lines), URL/e-mail removal, NFC, and the Quebec-marker tagger, on all cores.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def run_measured(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd``; return (wall seconds, peak RSS of the process tree in MB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    root = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
            total = 0
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
            peak = max(peak, total)
        except psutil.Error:
            pass
        time.sleep(0.02)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr.read().decode()[-2000:]}")
    return wall, peak / 1e6


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=float, default=50)
    ap.add_argument("--workers", type=int, default=0, help="qckit workers (0 = one per core)")
    ap.add_argument(
        "--skip-seed", action="store_true", help="only measure qckit (e.g. for the 1 GB memory check)"
    )
    ap.add_argument("--keep", help="directory to keep the corpus and outputs in")
    args = ap.parse_args()

    from make_corpus import make_corpus

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="qckit-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / f"corpus_{int(args.size_mb)}mb.txt"
    if not corpus.exists():
        t = time.perf_counter()
        make_corpus(corpus, args.size_mb, seed=0)
        print(f"generated {corpus} in {time.perf_counter() - t:.1f} s")
    size_mb = corpus.stat().st_size / 1e6
    print(f"corpus: {size_mb:.1f} MB, {os.cpu_count()} cores, python {sys.version.split()[0]}")

    qckit_cmd = [
        sys.executable,
        "-m",
        "qckit",
        "prepare",
        "--input",
        str(corpus),
        "--output",
        str(work / "qckit"),
        "--workers",
        str(args.workers),
    ]
    q_wall, q_rss = run_measured(qckit_cmd)
    print(f"qckit prepare : {q_wall:7.2f} s  {size_mb / q_wall:7.2f} MB/s  peak RSS {q_rss:7.1f} MB (tree)")
    if args.skip_seed:
        return
    seed_cmd = [
        sys.executable,
        str(HERE / "seed_prepare.py"),
        "--input",
        str(corpus),
        "--output",
        str(work / "seed"),
    ]
    s_wall, s_rss = run_measured(seed_cmd)
    print(f"seed (re-impl): {s_wall:7.2f} s  {size_mb / s_wall:7.2f} MB/s  peak RSS {s_rss:7.1f} MB")
    print(f"speed ratio qckit/seed: {s_wall / q_wall:.2f}x   memory ratio qckit/seed: {q_rss / s_rss:.2f}x")
    kept_q = count_lines(work / "qckit" / "train_1.txt") + count_lines(work / "qckit" / "val_1.txt")
    kept_s = count_lines(work / "seed" / "train_1.txt") + count_lines(work / "seed" / "val_1.txt")
    print(f"documents kept: qckit {kept_q:,} (deduplicated, repaired)  seed {kept_s:,}")


if __name__ == "__main__":
    main()
