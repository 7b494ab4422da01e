"""Padding-free (flattened) micro-batches vs padded rows, with the CPU stand-in flash kernel.

    python bench/bench_padding_free.py                    # tiny random Llama, windows 128, batch 8
    python bench/bench_padding_free.py --seq 256 --batch 8 --steps 20 --fill 0.5
    python bench/bench_padding_free.py --attn flash_attention_2   # on a CUDA GPU with flash-attn: the real kernel
    python bench/bench_padding_free.py --hidden 768 --layers 12 --json out.json   # a larger model; medians as JSON

On a CPU there is no flash-attention: the kernel is qckit.testing's exact pure-torch stand-in, run
through transformers' real flash wrapper, so the numbers say what the batch form costs in that wrapper
and in a kernel that computes only what it is given, not what flash-attention does on a GPU
(bench/gpu_check.sh measures that). Three ways to feed the same windows, one training step each
(forward + backward + AdamW, float32), alternating step by step over the same batches:

* ``flash padding-free``: qckit's form for a flash kernel (:class:`qckit.train.packing.WindowCollator`,
  one row, per-document lengths: varlen over each document, no padding token);
* ``flash padded rows``: the windows as padded rows with their attention mask (transformers unpads them
  and runs varlen per row: documents not isolated, padding not computed);
* ``sdpa padded rows``: qckit's form for sdpa (position ids, block-diagonal mask, padding computed).

Windows are cut to a random length between ``--fill`` x seq and seq (padding as in a mix of sources of
different window lengths; 1.0 = full windows). Tokens/s counts real tokens; ratios are against
``flash padded rows`` in the same run. ``--attn`` names a real flash kernel instead of the stand-in: on
a CUDA GPU the models are placed there and the steps run under bf16 autocast. ``--json`` also writes
the medians and the model's shape (``bench/gpu_check.py`` reads them to compute MFU).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per form")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--fill", type=float, default=0.5, help="shortest window, as a share of --seq")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    parser.add_argument("--attn", default="", help="a flash attn_implementation (default: the CPU stand-in)")
    parser.add_argument("--hidden", type=int, default=256, help="hidden size (heads of 64)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--json", help="also write the medians and the model's shape to this file")
    ns = parser.parse_args()

    import tempfile

    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from qckit.components import IGNORE_INDEX
    from qckit.testing import register_reference_flash_attention, save_tiny_model
    from qckit.train.isolation import check_document_isolation
    from qckit.train.packing import WindowCollator, document_positions, forward_inputs, pack_texts
    from qckit_builtins.chunkers import WindowChunker

    if ns.threads:
        torch.set_num_threads(ns.threads)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    flash = ns.attn or register_reference_flash_attention()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    autocast = torch.bfloat16 if device.type == "cuda" else None
    sample = REPO / "data" / "sample"
    texts = [
        line
        for name in ("quebec_sample.txt", "standard_french.txt")
        for line in (sample / name).read_bytes().decode("utf-8", errors="replace").splitlines()
    ]
    with tempfile.TemporaryDirectory(prefix="qckit-bench-padding-free-") as tmp:
        model_dir = save_tiny_model(
            Path(tmp) / "tiny", hidden_size=ns.hidden, num_layers=ns.layers, num_heads=max(ns.hidden // 64, 1)
        )
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        models = {
            kind: AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation=kind).to(device).train()
            for kind in (flash, "sdpa")
        }
    eos = tokenizer.eos_token_id
    data = pack_texts(texts, tokenizer, WindowChunker(max_length=ns.seq, stride=16, min_length=16))
    rng = np.random.default_rng(0)

    def cut(index: int) -> dict[str, torch.Tensor]:
        item = data[index]
        n = int(rng.integers(max(int(ns.fill * ns.seq), 2), ns.seq + 1))
        n = min(n, int(item["attention_mask"].sum()))
        item["input_ids"][n:] = data.pad_id
        item["labels"][n:] = IGNORE_INDEX
        item["attention_mask"][n:] = 0
        item["position_ids"] = torch.from_numpy(
            document_positions(item["input_ids"][:n].numpy(), eos, ns.seq)
        )
        return item

    forms = {
        "flash padding-free": (flash, lambda items: forward_inputs(WindowCollator(flatten=True)(items))),
        "flash padded rows": (
            flash,
            lambda items: {
                k: v for k, v in WindowCollator(flatten=False)(items).items() if k != "position_ids"
            },
        ),
        "sdpa padded rows": ("sdpa", lambda items: forward_inputs(WindowCollator(flatten=False)(items))),
    }
    optimizers = {kind: torch.optim.AdamW(m.parameters(), lr=1e-5) for kind, m in models.items()}
    isolation = {
        kind: check_document_isolation(m, eos, pad_id=data.pad_id, autocast=autocast)
        for kind, m in models.items()
    }
    tokens: dict[str, list[float]] = {form: [] for form in forms}
    for step in range(ns.warmup + ns.steps):
        items = [cut((step * ns.batch + j) % len(data)) for j in range(ns.batch)]
        real = sum(int(item["attention_mask"].sum()) for item in items)
        order = list(forms) if step % 2 == 0 else list(reversed(forms))
        for form in order:
            kind, make = forms[form]
            inputs = make([{k: v.clone() for k, v in item.items()} for item in items])
            inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
            if device.type == "cuda":
                torch.cuda.synchronize()
            begin = time.perf_counter()
            with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
                loss = models[kind](**inputs).loss
            loss.backward()
            optimizers[kind].step()
            optimizers[kind].zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if step >= ns.warmup:
                tokens[form].append(real / (time.perf_counter() - begin))
    parameters = sum(p.numel() for p in models[flash].parameters())
    print(
        f"tiny Llama (hidden {ns.hidden}, {ns.layers} layers, {parameters / 1e6:.1f} M parameters) on {device.type}"
        + (f", autocast {autocast}" if autocast is not None else "")
        + (f", flash kernel {flash!r}" if ns.attn else f", CPU stand-in flash kernel ({flash!r}, pure torch)")
        + f"; {len(data)} windows of <= {ns.seq} tokens cut to >= {ns.fill:g} x seq, batch "
        f"{ns.batch}, torch threads {torch.get_num_threads()}; isolation check ratios "
        + ", ".join(f"{kind} {ratio:.2g}" for kind, ratio in isolation.items())
    )
    medians = {form: statistics.median(values) for form, values in tokens.items()}
    base = medians["flash padded rows"]
    for form, median in medians.items():
        print(
            f"{form:20s}: {median:10.0f} tokens/s (median of {len(tokens[form])}), x{median / base:.2f} vs flash padded rows"
        )
    if ns.json:
        shape = {"parameters": parameters, "layers": ns.layers, "hidden": ns.hidden, "seq": ns.seq}
        record = {
            **shape,
            "device": device.type,
            "attn": flash,
            "tokens_per_s": medians,
            "isolation": isolation,
        }
        Path(ns.json).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
