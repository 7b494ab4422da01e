"""Training step time: qckit's ``run_train`` against a bare Hugging Face Trainer + peft script.

    python bench/bench_train_step.py --threads 1             # the quickstart's shape (see below)
    python bench/bench_train_step.py --tiny                  # a random Llama, hidden 256, 4 layers, batch 4 x 2
    python bench/bench_train_step.py --tiny --hidden 512 --layers 8 --steps 40 --repeats 3
    python bench/bench_train_step.py --checkpointing on      # both sides with gradient checkpointing
    python bench/bench_train_step.py --padding-free          # … then padding-free vs padded rows, same shape

By default the shape is ``recipes/quickstart.toml``'s: its model (SmolLM2-135M, dequantized from the
GGUF once, into qckit's cache), windows of its chunker's ``max_length``, its ``batch_size`` and
``gradient_accumulation_steps``, and its ``gradient_checkpointing`` (``auto``: qckit decides from its
memory estimate; the bare script then does what qckit decided, which the report names). The windows
are plain windows on both sides (the quickstart isolates documents, which a bare script would not).

Both sides run in this process, alternating (qckit, bare, qckit, bare …) so that machine drift hits
both equally, on the same model directory, the same packed windows (one ``pack_file`` call; the bare
script gets the same dataset object) and the same settings: LoRA r 16 / alpha 32 / dropout 0.1 on the
seven seed projections, non-reentrant gradient checkpointing where on, AdamW (adamw_torch), cosine
schedule with 3 % warmup, lr 1e-5, max grad norm 1.0, seed 42, TensorBoard logging every 10 steps, no
checkpoints, no evaluation, the precision qckit picks for this machine (fp32 on CPU, bf16/fp16 on CUDA)
for both.

``--padding-free`` then runs ``bench/bench_padding_free.py`` at the same shape (a random model of the
same hidden size and layers, windows of the same length, the same batch; the CPU stand-in flash kernel
on a CPU) and prints its tokens/s ratios: qckit's padding-free form against padded rows.

A step is one optimizer step (``--batch`` x ``--accum`` windows); its time is the interval between
consecutive ``on_step_end`` callbacks (the bare side uses a one-line callback; qckit's is the observer's
``advance("train")`` call). The first ``--warmup`` steps of every run are excluded; the report gives
the median over the remaining steps of all repeats, and the ratio qckit / bare (target <= 1.05).

On a machine with few cores that other processes also use, torch's intra-op thread pool makes step
times swing by 5-10x from one second to the next (both sides alike, but the medians get noisy);
``--threads 1`` gives stable numbers there. On a GPU the bench runs as is.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

from qckit.outputs import SUMMARY_NAME
from qckit.progress import NullObserver

QUICKSTART = Path(__file__).resolve().parent.parent / "recipes" / "quickstart.toml"


class StepClock(NullObserver):
    """An observer that timestamps every step's ``advance("train", 1)`` (called at each ``on_step_end``)."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def advance(self, task: str, amount: float = 1, **fields: Any) -> None:
        # a step's end advances by 1; a logging step's numbers come after it with 0, a resume with its step
        if task == "train" and amount == 1 and not fields.get("resumed"):
            self.stamps.append(time.perf_counter())


def build_model(directory: Path, hidden: int, layers: int) -> Path:
    from qckit.testing import SAMPLE_SENTENCES, save_tiny_model

    heads = max(hidden // 64, 1)
    return save_tiny_model(
        directory, SAMPLE_SENTENCES, hidden_size=hidden, num_layers=layers, num_heads=heads
    )


def quickstart_shape(ns: argparse.Namespace) -> Path:
    """Set the shape options from ``recipes/quickstart.toml``; the local directory of its model."""
    from qckit.models import dequantized_source, resolve_model

    train = tomllib.loads(QUICKSTART.read_text(encoding="utf-8"))["train"]
    ns.seq = train["chunker"]["max_length"]
    ns.batch = train["batch_size"]
    ns.accum = train["gradient_accumulation_steps"]
    if ns.checkpointing is None:
        ns.checkpointing = train["gradient_checkpointing"]
    return Path(dequantized_source(resolve_model(train["model"])).path_or_id)


def checkpointing_decided(out: Path) -> tuple[bool, str]:
    """Whether qckit's run at ``out`` trained with gradient checkpointing, and its line (``auto``'s why)."""
    line = json.loads((out / SUMMARY_NAME).read_text(encoding="utf-8"))["gradient_checkpointing"]
    return line.startswith("on"), line


def intervals(stamps: list[float], warmup: int) -> list[float]:
    diffs = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return diffs[warmup:]


def run_qckit(model_dir: Path, train_file: Path, out: Path, ns: argparse.Namespace) -> list[float]:
    from qckit.train import TrainSettings, run_train
    from qckit_builtins.adapters import LoraAdapter
    from qckit_builtins.chunkers import WindowChunker

    settings = TrainSettings(
        train_file=str(train_file),
        output_dir=str(out),
        model=str(model_dir),
        max_steps=ns.steps,
        batch_size=ns.batch,
        gradient_accumulation_steps=ns.accum,
        save_steps=0,
        eval_steps=-1,
        inspect_data=False,
        logging_steps=10,
        gradient_checkpointing=ns.checkpointing,
        cache_dir=str(ns.cache_dir),
    )
    clock = StepClock()
    run_train(
        settings,
        WindowChunker(max_length=ns.seq, stride=16, attention="window"),
        [LoraAdapter()],
        observer=clock,
    )
    return intervals(clock.stamps, ns.warmup)


def run_bare(
    model_dir: Path, dataset: Any, out: Path, ns: argparse.Namespace, precision: str, checkpointing: bool
) -> list[float]:
    """What a user would write by hand with transformers + peft, same settings as qckit's defaults."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        default_data_collator,
    )
    from transformers.trainer_callback import PrinterCallback

    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    model.config.use_cache = False
    model = get_peft_model(
        model,
        LoraConfig(
            task_type="CAUSAL_LM",
            r=16,
            lora_alpha=32,
            lora_dropout=0.1,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        ),
    )
    if checkpointing:
        model.get_base_model().activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False}
        )
        model.enable_input_require_grads()
    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=ns.batch,
        gradient_accumulation_steps=ns.accum,
        max_steps=ns.steps,
        learning_rate=1e-5,
        lr_scheduler_type="cosine",
        warmup_steps=0.03,
        optim="adamw_torch",
        weight_decay=0.0,
        max_grad_norm=1.0,
        seed=42,
        logging_steps=10,
        save_strategy="no",
        report_to=["tensorboard"],
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        dataloader_pin_memory=torch.cuda.is_available(),
        bf16=precision == "bf16",
        fp16=precision == "fp16",
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=default_data_collator,
        callbacks=[Clock()],
    )
    trainer.remove_callback(PrinterCallback)  # qckit does not print either
    trainer.train()
    return intervals(stamps, ns.warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--tiny", action="store_true", help="a random tiny Llama instead of the quickstart's model"
    )
    parser.add_argument("--hidden", type=int, default=256, help="with --tiny")
    parser.add_argument("--layers", type=int, default=4, help="with --tiny")
    parser.add_argument("--seq", type=int, default=128, help="window length in tokens, with --tiny")
    parser.add_argument("--batch", type=int, default=4, help="with --tiny")
    parser.add_argument("--accum", type=int, default=2, help="with --tiny")
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=5, help="steps excluded at the start of every run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per side, alternating")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    parser.add_argument(
        "--padding-free", action="store_true", help="then padding-free vs padded rows, same shape"
    )
    parser.add_argument(
        "--checkpointing",
        choices=("auto", "on", "off"),
        help="gradient checkpointing (default: the quickstart's, auto; with --tiny: on)",
    )
    ns = parser.parse_args()
    ns.checkpointing = {"on": True, "off": False, "auto": "auto", None: None}[ns.checkpointing]

    import torch
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from qckit.hardware import choose_precision, detect_environment
    from qckit.testing import SAMPLE_SENTENCES, write_corpus
    from qckit.train.packing import pack_file
    from qckit_builtins.chunkers import WindowChunker

    if ns.threads:
        torch.set_num_threads(ns.threads)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    env = detect_environment()
    precision = choose_precision(env, "auto")
    with tempfile.TemporaryDirectory(prefix="qckit-bench-train-") as tmp:
        root = Path(tmp)
        if ns.tiny:
            model_dir = build_model(root / "model", ns.hidden, ns.layers)
            ns.checkpointing = True if ns.checkpointing is None else ns.checkpointing
            shape = f"random Llama hidden {ns.hidden} x {ns.layers} layers"
        else:
            model_dir = quickstart_shape(ns)
            shape = f"{QUICKSTART.name}'s model ({model_dir.name})"
        train_file = write_corpus(root / "train.txt", list(SAMPLE_SENTENCES) * 60)
        ns.cache_dir = root / "cache"
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        hidden, layers = config["hidden_size"], config["num_hidden_layers"]
        dataset = pack_file(
            train_file,
            tokenizer,
            WindowChunker(max_length=ns.seq, stride=16, attention="window"),
            cache_dir=ns.cache_dir,
        )
        print(
            f"model: {shape}, vocab {len(tokenizer)}; {len(dataset)} windows of {ns.seq} tokens; "
            f"step = {ns.batch} x {ns.accum} windows; {precision} on {env.describe()}; "
            f"torch threads {torch.get_num_threads()}"
        )
        qckit_times: list[float] = []
        bare_times: list[float] = []
        for repeat in range(ns.repeats):
            q = run_qckit(model_dir, train_file, root / f"q{repeat}", ns)
            checkpointing, line = checkpointing_decided(root / f"q{repeat}")
            if repeat == 0:
                print(
                    f"gradient checkpointing (asked {ns.checkpointing}): qckit {line}; the bare script the same"
                )
            b = run_bare(model_dir, dataset, root / f"b{repeat}", ns, precision, checkpointing)
            qckit_times += q
            bare_times += b
            print(
                f"  run {repeat + 1}: qckit median {statistics.median(q) * 1e3:8.2f} ms/step   "
                f"bare median {statistics.median(b) * 1e3:8.2f} ms/step"
            )
    q_med, b_med = statistics.median(qckit_times), statistics.median(bare_times)
    print(f"qckit run_train   : {q_med * 1e3:8.2f} ms/step (median of {len(qckit_times)} steps)")
    print(f"bare Trainer+peft : {b_med * 1e3:8.2f} ms/step (median of {len(bare_times)} steps)")
    ratio = q_med / b_med
    print(f"ratio qckit / bare: {ratio:.3f}  (target <= 1.05: {'ok' if ratio <= 1.05 else 'ABOVE TARGET'})")
    if ns.padding_free:
        padding_free(ns, hidden, layers)


def padding_free(ns: argparse.Namespace, hidden: int, layers: int) -> None:
    """``bench_padding_free.py`` at this shape; its medians' ratios."""
    with tempfile.TemporaryDirectory(prefix="qckit-bench-pf-") as tmp:
        record_path = Path(tmp) / "record.json"
        command = [sys.executable, str(Path(__file__).with_name("bench_padding_free.py"))]
        command += ["--seq", str(ns.seq), "--batch", str(ns.batch * ns.accum), "--hidden", str(hidden)]
        command += ["--layers", str(layers), "--threads", str(ns.threads), "--json", str(record_path)]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        record = json.loads(record_path.read_text(encoding="utf-8"))
    medians = record["tokens_per_s"]
    base = medians["flash padded rows"]
    print(
        f"padding-free vs padded ({record['attn']} on {record['device']}, hidden {hidden} x {layers} layers, "
        f"{ns.batch * ns.accum} windows of <= {ns.seq} tokens): "
        + "; ".join(f"{form} {value:,.0f} tokens/s (x{value / base:.2f})" for form, value in medians.items())
    )


if __name__ == "__main__":
    main()
