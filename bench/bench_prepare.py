"""Prepare-stage throughput and peak memory: qckit against a faithful re-implementation of the seed.

    python bench/bench_prepare.py --size-mb 50                    # speed ratio on a 50 MB corpus (3 rounds)
    python bench/bench_prepare.py --size-mb 50 --python-too       # … and without the C accelerators
    python bench/bench_prepare.py --batch-bytes 262144 524288 1048576   # which [prepare] batch_bytes
    python bench/bench_prepare.py --size-mb 1000 --skip-seed      # qckit's peak RSS on 1 GB
    python bench/bench_prepare.py --one-line-mb 1000              # peak RSS on a file of one 1 GB line

They run as separate processes on the same generated corpus, in the same run, alternating
(seed, qckit, qckit, seed, qckit, qckit …) so that a change in the machine's load hits all; the ratios
printed last are the medians of the rounds. Each line also gives the CPU seconds of the whole process
tree, which a busy machine changes less than wall time. Peak RSS is sampled every 20 ms over the whole
process tree (main process + workers, summed) with psutil. qckit runs three times per round, on all cores:

* the seed's steps (``--all-languages --near-duplicates off``): the seed's four filters, exact
  deduplication, mojibake repair (ftfy on flagged lines), URL/e-mail removal, NFC and the Quebec-marker
  tagger, which never drops: the like-for-like comparison (the seed had neither a language filter nor
  near-duplicates). The sha256 of its train/val files is printed: the same corpus gives the same digest
  as before ``dialect_langid`` and the near-duplicate tagging were added (``--size-mb 50``: the digest
  in the README's Performance table);
* the seed's steps plus ``dialect_langid``, the language decision (``--near-duplicates off``). Its kept
  documents are checked to be among the first run's, the difference being what ``dialect_langid``
  dropped;
* the same plus near-duplicate tagging (``--near-duplicates tag``: clusters kept on one side of the
  split, none dropped), which is not a default: this run shows its cost. The defaults are the second run.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def run_measured(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float]:
    """Run ``cmd``; return (wall seconds, CPU seconds of its process tree, peak RSS of the tree in MB)."""
    # stderr goes to a file: a pipe read only at the end would block a child that writes more than it holds
    with tempfile.TemporaryFile() as errors:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errors, env=env)
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
        after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the child and the workers it waited for
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if proc.returncode != 0:
            errors.seek(0)
            raise SystemExit(f"{' '.join(cmd)} failed:\n{errors.read().decode(errors='replace')[-2000:]}")
    return wall, cpu, peak / 1e6


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def qckit_prepare(corpus: Path, out: Path, workers: int, batch_bytes: int | None = None) -> list[str]:
    extra = [] if batch_bytes is None else ["--set", f"prepare.batch_bytes={batch_bytes}"]
    return [*_qckit_prepare(corpus, out, workers), *extra]


#: ``qckit prepare`` with the seed's steps only (no language decision, no near-duplicates: the seed had neither)
SEED_STEPS = ["--all-languages", "--near-duplicates", "off"]
#: … and with the language decision (the defaults)
WITH_LANGUAGE = ["--near-duplicates", "off"]
#: … and with near-duplicate tagging too
WITH_NEAR_TAG = ["--near-duplicates", "tag"]


def outputs_digest(out: Path) -> str:
    """sha256 of the train and val files, in that order (the first 16 hex digits)."""
    digest = hashlib.sha256()
    for name in ("train_1.txt", "val_1.txt"):
        digest.update((out / name).read_bytes())
    return digest.hexdigest()[:16]


def check_language_drops(seed_steps: Path, defaults: Path) -> str:
    """The defaults' kept documents are among the seed steps' ones; what the language decision dropped."""
    lines: dict[Path, Counter[bytes]] = {}
    for out in (seed_steps, defaults):
        lines[out] = Counter(
            line for name in ("train_1.txt", "val_1.txt") for line in (out / name).read_bytes().splitlines()
        )
    extra = lines[defaults] - lines[seed_steps]
    if extra:
        raise SystemExit(f"the defaults kept {sum(extra.values())} documents the seed's steps did not")
    stats = json.loads((defaults / "prepare_stats.json").read_text(encoding="utf-8"))
    language = stats["filters"]["dialect_langid"]
    reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(language["reasons"].items(), key=lambda kv: -kv[1]))
    fewer = sum(lines[seed_steps].values()) - sum(lines[defaults].values())
    return (
        f"{fewer:,} fewer documents kept; dialect_langid dropped {language['dropped']:,} ({reasons}), "
        "the others being duplicates that exact_dedup drops otherwise"
    )


def _qckit_prepare(corpus: Path, out: Path, workers: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "qckit",
        "prepare",
        "--input",
        str(corpus),
        "--output",
        str(out),
        "--workers",
        str(workers),
    ]


def one_line_check(work: Path, size_mb: float, workers: int) -> None:
    """Peak RSS on a file holding one ``size_mb`` line, then two good lines (which must be kept)."""
    corpus = work / f"one_line_{int(size_mb)}mb.txt"
    good = [
        "Mon chum pis moi, on est allés magasiner au centre-ville samedi passé.",
        "Il fait frette en maudit à matin, mets ta tuque avant de sortir dehors.",
    ]
    if not corpus.exists():
        block = b"ab" * (1 << 19)  # 1 MiB without a line ending
        with open(corpus, "wb") as f:
            for _ in range(int(size_mb)):
                f.write(block)
            f.write(("\n" + "\n".join(good) + "\n").encode())
    out = work / "qckit-one-line"
    wall, cpu, rss = run_measured([*qckit_prepare(corpus, out, workers), "--val_split", "0"])
    kept = (out / "train_1.txt").read_text(encoding="utf-8").splitlines()
    status = "both good lines kept" if kept == good else f"KEPT {kept!r}"
    print(
        f"one {corpus.stat().st_size / 1e6:.0f} MB line + 2 lines: {wall:6.2f} s  peak RSS {rss:7.1f} MB (tree)  {status}"
    )


def sweep_batch_bytes(
    args: argparse.Namespace, corpus: Path, work: Path, seed_cmd: list[str], size_mb: float
) -> None:
    """Rounds of (seed, qckit with each batch size); the median wall time and ratio of each size."""
    walls: dict[int, list[float]] = {size: [] for size in args.batch_bytes}
    seeds = []
    for round_ in range(args.repeat):
        seeds.append(run_measured(seed_cmd)[0])
        for size in args.batch_bytes:
            walls[size].append(run_measured(qckit_prepare(corpus, work / "qckit", args.workers, size))[0])
        print(
            f"round {round_ + 1}: seed {seeds[-1]:.2f} s, "
            + ", ".join(f"{s // 1024} KiB {w[-1]:.2f} s" for s, w in walls.items())
        )
    seed = statistics.median(seeds)
    for size, times in walls.items():
        wall = statistics.median(times)
        print(
            f"batch_bytes {size // 1024:6d} KiB: {wall:.2f} s  {size_mb / wall:6.2f} MB/s  ratio to the seed {seed / wall:.2f}x"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=float, default=50)
    ap.add_argument("--workers", type=int, default=0, help="qckit workers (0 = one per core)")
    ap.add_argument(
        "--repeat", type=int, default=3, help="rounds of (seed, qckit); the median ratio is printed"
    )
    ap.add_argument(
        "--skip-seed", action="store_true", help="only measure qckit (e.g. for the 1 GB memory check)"
    )
    ap.add_argument("--one-line-mb", type=float, help="only the memory check on a file of one line this long")
    ap.add_argument("--keep", help="directory to keep the corpus and outputs in")
    ap.add_argument(
        "--batch-bytes",
        type=int,
        nargs="+",
        help="compare [prepare] batch_bytes values instead: each round runs qckit once per value (after "
        "the seed) and the median wall time of each is printed",
    )
    ap.add_argument(
        "--python-too",
        action="store_true",
        help="each round also runs qckit without its C accelerators (QCKIT_NO_EXTENSIONS=1), prints that "
        "ratio too and checks that both runs wrote the same bytes",
    )
    args = ap.parse_args()

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="qckit-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"{os.cpu_count()} cores, python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.1f}")
    from qckit_builtins import accelerated

    built = ", ".join(name for name, on in accelerated.available().items() if on) or "none"
    print(f"C accelerators built: {built}")
    if args.one_line_mb:
        one_line_check(work, args.one_line_mb, args.workers)
        return

    from make_corpus import make_corpus

    corpus = work / f"corpus_{int(args.size_mb)}mb.txt"
    if not corpus.exists():
        t = time.perf_counter()
        make_corpus(corpus, args.size_mb, seed=0)
        print(f"generated {corpus} in {time.perf_counter() - t:.1f} s")
    size_mb = corpus.stat().st_size / 1e6
    print(f"corpus: {size_mb:.1f} MB")
    seed_cmd = [
        sys.executable,
        str(HERE / "seed_prepare.py"),
        "--input",
        str(corpus),
        "--output",
        str(work / "seed"),
    ]
    if args.batch_bytes:
        sweep_batch_bytes(args, corpus, work, seed_cmd, size_mb)
        return
    ratios, python_ratios, seed_steps_ratios, language_ratios = [], [], [], []
    python_env = {**os.environ, "QCKIT_NO_EXTENSIONS": "1"}
    for round_ in range(1 if args.skip_seed else args.repeat):
        if not args.skip_seed:
            s_wall, s_cpu, s_rss = run_measured(seed_cmd)
            print(
                f"seed (re-impl): {s_wall:7.2f} s  {size_mb / s_wall:7.2f} MB/s  cpu {s_cpu:6.2f} s  peak RSS {s_rss:7.1f} MB"
            )
        a_wall, a_cpu, a_rss = run_measured(
            [*qckit_prepare(corpus, work / "qckit-seed-steps", args.workers), *SEED_STEPS]
        )
        print(
            f"qckit, seed's steps: {a_wall:7.2f} s  {size_mb / a_wall:7.2f} MB/s  cpu {a_cpu:6.2f} s  peak RSS {a_rss:7.1f} MB (tree)"
        )
        l_wall, l_cpu, l_rss = run_measured(
            [*qckit_prepare(corpus, work / "qckit-language", args.workers), *WITH_LANGUAGE]
        )
        print(
            f"  + language       : {l_wall:7.2f} s  {size_mb / l_wall:7.2f} MB/s  cpu {l_cpu:6.2f} s  peak RSS {l_rss:7.1f} MB (tree)"
        )
        q_wall, q_cpu, q_rss = run_measured(
            [*qckit_prepare(corpus, work / "qckit", args.workers), *WITH_NEAR_TAG]
        )
        print(
            f"  + near-dup tag   : {q_wall:7.2f} s  {size_mb / q_wall:7.2f} MB/s  cpu {q_cpu:6.2f} s  peak RSS {q_rss:7.1f} MB (tree)"
        )
        if args.python_too:
            p_wall, p_cpu, p_rss = run_measured(
                [*qckit_prepare(corpus, work / "qckit-python", args.workers), *WITH_NEAR_TAG], python_env
            )
            print(
                f"  same, no C       : {p_wall:7.2f} s  {size_mb / p_wall:7.2f} MB/s  cpu {p_cpu:6.2f} s  peak RSS {p_rss:7.1f} MB (tree)"
            )
            for name in ("train_1.txt", "val_1.txt"):
                if (work / "qckit" / name).read_bytes() != (work / "qckit-python" / name).read_bytes():
                    raise SystemExit(f"{name} differs with and without the C accelerators")
        if not args.skip_seed:
            ratios.append(s_wall / q_wall)
            seed_steps_ratios.append(s_wall / a_wall)
            language_ratios.append(s_wall / l_wall)
            print(
                f"  round {round_ + 1}: speed ratio qckit/seed: seed's steps {s_wall / a_wall:.2f}x, + language "
                f"{s_wall / l_wall:.2f}x, + near-dup tag {s_wall / q_wall:.2f}x  memory ratio {a_rss / s_rss:.2f}x, "
                f"{l_rss / s_rss:.2f}x, {q_rss / s_rss:.2f}x"
                + (f"  (+ near-dup tag without C {s_wall / p_wall:.2f}x)" if args.python_too else "")
            )
            if args.python_too:
                python_ratios.append(s_wall / p_wall)
    print(f"qckit, seed's steps: train/val sha256 {outputs_digest(work / 'qckit-seed-steps')}")
    print(f"qckit + language: {check_language_drops(work / 'qckit-seed-steps', work / 'qckit-language')}")
    if ratios:
        print(
            f"speed ratio qckit/seed (median of {len(ratios)}): seed's steps {statistics.median(seed_steps_ratios):.2f}x, "
            f"+ language {statistics.median(language_ratios):.2f}x, "
            f"+ near-duplicate tagging {statistics.median(ratios):.2f}x"
        )
        if python_ratios:
            print(
                f"without the C accelerators: {statistics.median(python_ratios):.2f}x; same train/val bytes as with them"
            )
        kept_q = count_lines(work / "qckit" / "train_1.txt") + count_lines(work / "qckit" / "val_1.txt")
        kept_s = count_lines(work / "seed" / "train_1.txt") + count_lines(work / "seed" / "val_1.txt")
        kept_a = count_lines(work / "qckit-seed-steps" / "train_1.txt") + count_lines(
            work / "qckit-seed-steps" / "val_1.txt"
        )
        print(
            f"documents kept: qckit seed's steps {kept_a:,} (deduplicated, repaired), defaults {kept_q:,}  seed {kept_s:,}"
        )


if __name__ == "__main__":
    main()
