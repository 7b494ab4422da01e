"""Host memory of FSDP's loading, on CPU: the peak resident memory (RSS) of each of two ranks (torchrun,
gloo) when every rank loads the model, against the fsdp adapter's loading (rank 0 reads the weights,
rank 1 builds the model on the meta device and would receive them when the Trainer shards it).

    python bench/bench_fsdp_loading.py                       # a random Llama of ~106 M parameters
    python bench/bench_fsdp_loading.py --hidden 1024 --layers 16

Each rank loads with ``qckit.models.load_model`` in the given dtype, then reads every tensor it holds
once (as the broadcast reads rank 0's), and waits; ``gpu_check.peak_rss_by_rank`` samples the ranks.
A third launch in which no rank reads the weights gives the baseline (Python, torch, transformers): a
rank's model memory is its peak less that baseline. The fp32 load of an fp32 checkpoint maps the file
(its pages are the page cache, shared by the ranks although each rank's RSS counts them); the bf16 load
converts, so every rank that loads holds its own copy.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

MODES = {
    "every rank loads": "all",  # the Trainer's default: each rank reads the whole checkpoint
    "rank 0 loads": "rank0",  # the fsdp adapter's cpu_ram_efficient_loading
    "no rank loads": "none",  # the baseline
}


def worker(model_dir: str, mode: str, dtype_name: str) -> None:
    import torch

    from qckit.models import load_model, resolve_model

    rank = int(os.environ["RANK"])
    weights = mode == "all" or (mode == "rank0" and rank == 0)
    model = load_model(resolve_model(model_dir), dtype=getattr(torch, dtype_name), weights=weights)
    total = 0.0
    for tensor in model.state_dict().values():
        if not tensor.is_meta:
            total += float(tensor.sum())  # read once, without a converted copy
    time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--worker", nargs=3, metavar=("MODEL", "MODE", "DTYPE"), help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    if ns.worker:
        worker(*ns.worker)
        return 0

    from gpu_check import _launch  # bench/ is on sys.path when this script runs
    from transformers import LlamaConfig, LlamaForCausalLM

    with tempfile.TemporaryDirectory(prefix="qckit-fsdp-loading-") as tmp:
        config = LlamaConfig(
            vocab_size=ns.vocab,
            hidden_size=ns.hidden,
            intermediate_size=ns.hidden * 8 // 3,
            num_hidden_layers=ns.layers,
            num_attention_heads=max(ns.hidden // 64, 1),
            max_position_embeddings=1024,
        )
        model = LlamaForCausalLM(config)
        parameters = sum(p.numel() for p in model.parameters())
        model.save_pretrained(tmp)
        del model
        print(
            f"bench_fsdp_loading: random Llama of {parameters / 1e6:.0f} M parameters (fp32 checkpoint, "
            f"{parameters * 4 / 2**20:.0f} MiB), 2 ranks on CPU (gloo), peak RSS per rank in MiB"
        )
        for dtype in ("float32", "bfloat16"):
            peaks: dict[str, dict[int, int]] = {}
            for label, mode in MODES.items():
                command = [
                    sys.executable,
                    "-m",
                    "torch.distributed.run",
                    "--standalone",
                    "--nproc_per_node",
                    "2",
                ]
                command += [str(Path(__file__).resolve()), "--worker", tmp, mode, dtype]
                found: dict[int, int] = {}
                proc = _launch(command, argparse.Namespace(timeout=ns.timeout), found, OMP_NUM_THREADS="1")
                if proc.returncode != 0:
                    print(proc.stderr[-2000:], file=sys.stderr)
                    return 1
                peaks[label] = {rank: peak // 2**20 for rank, peak in found.items()}
            base = max(peaks["no rank loads"].values())
            every, ours = peaks["every rank loads"], peaks["rank 0 loads"]
            print(
                f"  {dtype:8s}  every rank loads: rank 0 {every[0]}, rank 1 {every[1]}; rank 0 loads: rank 0 "
                f"{ours[0]}, rank 1 {ours[1]}; baseline {base}. Rank 1's model memory: {every[1] - base} -> "
                f"{ours[1] - base} MiB ({(ours[1] - base) / max(every[1] - base, 1):.2f}x)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
