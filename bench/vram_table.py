"""Print the GPU memory table README quotes: qckit.memory's estimate per model, method and batch.

    python bench/vram_table.py [--window 1024] [--precision bf16]

A computed estimate (the terms are in qckit/memory.py's docstring), not a measurement: on a lent GPU,
bench/gpu_check.sh compares it with torch.cuda.max_memory_allocated.
"""

from __future__ import annotations

import argparse

from qckit.memory import KNOWN_SHAPES, training_memory

MODELS = (
    "HuggingFaceTB/SmolLM2-135M",
    "meta-llama/Llama-3.2-1B",
    "meta-llama/Llama-3.2-3B",
    "meta-llama/Llama-3.1-8B",
)
ROWS = (("lora", True), ("4bit", True), ("full", True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, default=1024)
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "fp32"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    header = ["model", "params"] + [
        f"{method} b{batch}{'' if ckpt else ' no-ckpt'}" for method, ckpt in ROWS for batch in args.batches
    ]
    print(
        f"estimated peak GiB on one GPU, {args.precision}, windows of {args.window} tokens, gradient checkpointing"
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for model in MODELS:
        shape = KNOWN_SHAPES[model]
        cells = [model.split("/")[1], f"{shape.params / 1e9:.2f}B"]
        for method, ckpt in ROWS:
            for batch in args.batches:
                estimate = training_memory(
                    shape,
                    method=method,
                    precision=args.precision,
                    batch_size=batch,
                    window=args.window,
                    gradient_checkpointing=ckpt,
                )
                cells.append(f"{estimate.total_gib:.1f}")
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
