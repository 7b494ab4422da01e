"""Shard results as data (``qckit.prepare.resultfile``) against pickle, the format it replaced.

    python bench/bench_shard_results.py --size-mb 5

A sharded run (``reads_inputs`` executors: Ray) writes every batch result into the work directory in
the worker and reads it back in the driver, which is one process for the whole run. This bench makes
the batch results of the bench corpus once, in this process, with the ``qckit prepare`` defaults (and
again with MinHash deduplication added: its fingerprints are one array per document), then writes
and reads them through a real file in both formats, alternating for ``--repeat`` rounds, and prints
the best write and read times of each, per MB of input, and the ratios (resultfile / pickle). It
checks that both give back the same results.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def batch_results(corpus: Path, extra_filters: list[dict]) -> list:
    from qckit.defaults import PREPARE_DEFAULTS
    from qckit.prepare import inputs
    from qckit.prepare.pipeline import PreparePipeline
    from qckit.prepare.work import process, warm_up
    from qckit.recipe import build_recipe

    table = {"inputs": [str(corpus)], "filters": [*PREPARE_DEFAULTS["filters"], *extra_filters]}
    recipe = build_recipe({"prepare": table})
    assert recipe.prepare is not None
    pipeline = PreparePipeline(recipe.prepare)
    warm_up(pipeline.file_stage)
    readers = recipe.prepare.reader_table
    files = inputs.input_files([corpus], readers, True)
    settings = recipe.prepare.settings
    batches = inputs.file_batches(files, readers, settings.batch_bytes, settings.max_line_bytes)
    return [process(pipeline.file_stage, batch) for batch in batches]


def write_pickle(path: Path, results: list) -> None:
    with open(path, "wb") as f:
        pickler = pickle.Pickler(f, pickle.HIGHEST_PROTOCOL)
        for result in results:
            pickler.dump(result)
            pickler.clear_memo()


def read_pickle(path: Path) -> list:
    out = []
    with open(path, "rb") as f:
        while True:
            try:
                out.append(pickle.load(f))
            except EOFError:
                return out


def write_data(path: Path, results: list) -> None:
    from qckit.prepare import resultfile

    with open(path, "wb") as f:
        f.write(resultfile.MAGIC)
        for result in results:
            resultfile.write_result(f, result)


def read_data(path: Path) -> list:
    from qckit.prepare import resultfile

    with open(path, "rb") as f:
        return list(resultfile.read_results(f, path.stat().st_size))


def same(a: list, b: list) -> bool:
    """The fields the driver reads, compared (arrays by value)."""
    import numpy as np

    def norm(value):
        if isinstance(value, np.ndarray):
            return (value.dtype.str, value.shape, value.tobytes())
        if isinstance(value, (list, tuple)):
            return [norm(v) for v in value]
        if isinstance(value, dict):
            return {k: norm(v) for k, v in value.items()}
        if hasattr(value, "counts"):
            return (value.counts, value.examples)
        return value

    fields = [n for n in a[0].__dataclass_fields__ if n != "kept"]
    return all(norm(getattr(x, n)) == norm(getattr(y, n)) for x, y in zip(a, b, strict=True) for n in fields)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=float, default=5)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    from make_corpus import make_corpus

    with tempfile.TemporaryDirectory(prefix="qckit-bench-results-") as tmp:
        root = Path(tmp)
        corpus = root / "corpus.txt"
        make_corpus(corpus, args.size_mb, seed=0)
        mb = corpus.stat().st_size / 1e6
        print(f"corpus: {mb:.1f} MB; best of {args.repeat} alternating rounds, through a file in {tmp}")
        for label, extra in (("defaults", []), ("defaults + minhash_dedup", [{"use": "minhash_dedup"}])):
            results = batch_results(corpus, extra)
            times: dict[str, list[float]] = {}
            sizes = {}
            for _ in range(args.repeat):
                for name, write, read in (
                    ("pickle", write_pickle, read_pickle),
                    ("data", write_data, read_data),
                ):
                    path = root / f"results.{name}"
                    start = time.perf_counter()
                    write(path, results)
                    middle = time.perf_counter()
                    back = read(path)
                    end = time.perf_counter()
                    times.setdefault(f"{name} write", []).append(middle - start)
                    times.setdefault(f"{name} read", []).append(end - middle)
                    sizes[name] = path.stat().st_size
                    assert len(back) == len(results)
            assert same(read_data(root / "results.data"), read_pickle(root / "results.pickle"))
            best = {k: min(v) for k, v in times.items()}
            print(
                f"{label}: {len(results)} batches, files {sizes['pickle'] / 1e6:.1f} MB (pickle) and "
                f"{sizes['data'] / 1e6:.1f} MB (data)"
            )
            for step in ("write", "read"):
                p, d = best[f"pickle {step}"], best[f"data {step}"]
                print(
                    f"  {step:5}  pickle {p * 1e3 / mb:6.1f} ms/MB   data {d * 1e3 / mb:6.1f} ms/MB   "
                    f"ratio {d / p:.2f}x"
                )


if __name__ == "__main__":
    main()
