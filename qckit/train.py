"""The train stage: pack the corpus, load and adapt the model, train with the Hugging Face ``Trainer``,
measure held-out perplexity and bits-per-byte before, during and after training, and save everything.

:func:`run_train` takes the validated :class:`TrainSettings` (the recipe's ``[train]`` table), the
chunker (``[train.chunker]``) and the model adapters (``[[train.adapters]]``) and returns a
:class:`TrainResult`. Progress and reports go to an :class:`~qckit.progress.Observer`; nothing is printed.

Output directory layout (the seed's, plus ``training_summary.json`` and ``recipe.toml``)::

    cpt_model/
    ├── checkpoint-500/ …          # every save_steps optimizer steps (resumable)
    ├── adapter_config.json        # LoRA: the adapter …
    ├── adapter_model.safetensors
    ├── model.safetensors          # … or the full model when no LoRA adapter is used
    ├── config.json                # the base model configuration
    ├── tokenizer.json, tokenizer_config.json …
    ├── training_args.bin
    ├── trainer_state.json         # log history (loss, learning rate, held-out metrics per step)
    ├── training_summary.json      # before/after held-out metrics, throughput, packing stats …
    ├── recipe.toml                # the resolved recipe of the run (when known)
    ├── merged/                    # export_merged = true: LoRA folded into the base model
    └── logs/events.out.tfevents.* # TensorBoard: train/loss, eval/perplexity, eval/bits_per_byte …

Held-out numbers always come from :func:`qckit.evaluate.evaluate_lm` (token-weighted loss over
sliding windows of the validation file), never from the Trainer's own evaluation loop and never from
the training loss. Without a validation file no perplexity is reported.

Multi-process runs (``torchrun --nproc_per_node N -m qckit train …``) use DDP through the Trainer
(or FSDP with the ``fsdp`` adapter). Every rank evaluates the whole validation set at the same points
(so FSDP's collectives stay matched); only rank 0 reports, logs to TensorBoard and writes files.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from qckit import __version__
from qckit._fs import atomic_write_json, atomic_write_text
from qckit.errors import HardwareError, InputError, QckitError, RecipeError
from qckit.hardware import PRECISIONS
from qckit.progress import NullObserver, Observer

__all__ = ["TrainSettings", "TrainResult", "run_train", "estimate_optimizer_steps", "SCHEDULERS"]

#: ``lr_scheduler`` values (transformers' ``SchedulerType`` names that need no extra arguments).
SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
)
SUMMARY_NAME = "training_summary.json"
RECIPE_NAME = "recipe.toml"
LOGS_DIR = "logs"
MERGED_DIR = "merged"


@dataclass
class TrainSettings:
    """Settings of the train stage: the recipe's ``[train]`` table (every key is a field below).

    The defaults are the seed script's: Llama-3.2-1B, 3 epochs, batch 8 × 8 accumulation steps,
    learning rate 1e-5 with a cosine schedule and 3 % warmup, AdamW, no weight decay, gradient
    clipping at 1.0, seed 42, gradient checkpointing on. Precision ``"auto"`` is bf16 on GPUs that
    support it, fp16 on older CUDA GPUs and fp32 on CPU (the seed forced fp16, which crashes on CPU).
    """

    train_file: str = ""  #: training corpus, one document per line (required when training)
    val_file: str | None = None  #: held-out corpus for perplexity and bits-per-byte
    output_dir: str = "./cpt_model"
    model: str = "meta-llama/Llama-3.2-1B"  #: hub id, model directory, .gguf file or pkg:<package>/<file>
    trust_remote_code: bool = False  #: run model code shipped with a hub model (off unless you trust it)
    num_epochs: float = 3.0
    max_steps: int = -1  #: > 0: stop after this many optimizer steps (overrides num_epochs)
    batch_size: int = 8  #: windows per device per micro-batch
    gradient_accumulation_steps: int = 8
    learning_rate: float = 1e-5
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.03  #: share of the optimizer steps spent warming up the learning rate
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  #: gradient clipping; 0 disables it
    optimizer: str = (
        "adamw_torch"  #: a transformers optimizer name (adamw_torch, adamw_torch_fused, adafactor …)
    )
    seed: int = 42
    precision: str = "auto"  #: auto, fp32, bf16 or fp16
    gradient_checkpointing: bool = True
    eval_steps: int = (
        0  #: evaluate on val_file every N optimizer steps; 0 = at the end of every epoch; -1 = never
    )
    evaluate_before: bool = True  #: measure the model on val_file before training (the baseline)
    eval_batch_size: int = 0  #: windows per evaluation batch; 0 = batch_size
    eval_max_length: int = 0  #: evaluation window in tokens; 0 = the chunker's max_length
    eval_stride: int = -1  #: evaluation window overlap in tokens; -1 = half the evaluation window
    eval_max_documents: int = 0  #: evaluate on the first N documents of val_file only; 0 = all of them
    save_steps: int = 500  #: checkpoint-N/ every N optimizer steps; 0 = no intermediate checkpoints
    save_total_limit: int = 0  #: keep only the N most recent checkpoints; 0 = keep all
    logging_steps: int = 10  #: log the training loss every N optimizer steps
    inspect_data: bool = True  #: report samples, token counts, steps and a time estimate before training
    inspect_samples: int = 5  #: decoded windows shown by the inspection
    timing_warmup_steps: int = (
        2  #: forward+backward passes timed for the estimate (after one untimed warm-up)
    )
    resume: bool = False  #: continue from the last checkpoint-* in output_dir
    export_merged: bool = (
        False  #: also save the base model with the LoRA weights merged in, under <output_dir>/merged
    )
    cache_dir: str | None = None  #: packed-window cache; default <output_dir>/.cache
    dataloader_workers: int = 0
    tensorboard: bool = True  #: write TensorBoard events into <output_dir>/logs
    torch_compile: bool = False

    def __post_init__(self) -> None:
        def need(ok: bool, name: str, message: str) -> None:
            if not ok:
                raise ValueError(f"{name}: {message}, got {getattr(self, name)!r}")

        need(
            isinstance(self.output_dir, str) and bool(self.output_dir.strip()),
            "output_dir",
            "must not be empty",
        )
        need(isinstance(self.model, str) and bool(self.model.strip()), "model", "must not be empty")
        need(self.num_epochs > 0 and math.isfinite(self.num_epochs), "num_epochs", "must be greater than 0")
        need(
            self.max_steps == -1 or self.max_steps >= 1,
            "max_steps",
            "must be -1 (use num_epochs) or at least 1",
        )
        need(self.batch_size >= 1, "batch_size", "must be at least 1")
        need(self.gradient_accumulation_steps >= 1, "gradient_accumulation_steps", "must be at least 1")
        need(0 < self.learning_rate < 1, "learning_rate", "must be greater than 0 and below 1")
        need(self.lr_scheduler in SCHEDULERS, "lr_scheduler", f"must be one of {', '.join(SCHEDULERS)}")
        need(0 <= self.warmup_ratio < 1, "warmup_ratio", "must be in [0, 1)")
        need(self.weight_decay >= 0, "weight_decay", "must be 0 or more")
        need(self.max_grad_norm >= 0, "max_grad_norm", "must be 0 (no clipping) or more")
        need(bool(self.optimizer.strip()), "optimizer", "must name a transformers optimizer")
        need(self.seed >= 0, "seed", "must be 0 or more")
        need(self.precision in PRECISIONS, "precision", f"must be one of {', '.join(PRECISIONS)}")
        need(
            self.eval_steps >= -1,
            "eval_steps",
            "must be a positive number of steps, 0 (every epoch) or -1 (never)",
        )
        need(self.eval_batch_size >= 0, "eval_batch_size", "must be 0 (= batch_size) or more")
        need(
            self.eval_max_length == 0 or self.eval_max_length >= 2,
            "eval_max_length",
            "must be 0 (= the chunker's max_length) or at least 2",
        )
        need(self.eval_stride >= -1, "eval_stride", "must be -1 (half the window) or 0 or more")
        need(
            self.eval_max_length == 0 or self.eval_stride < self.eval_max_length,
            "eval_stride",
            "must be smaller than eval_max_length",
        )
        need(self.eval_max_documents >= 0, "eval_max_documents", "must be 0 (all) or more")
        need(self.save_steps >= 0, "save_steps", "must be 0 (no intermediate checkpoints) or more")
        need(self.save_total_limit >= 0, "save_total_limit", "must be 0 (keep all) or more")
        need(self.logging_steps >= 1, "logging_steps", "must be at least 1")
        need(self.inspect_samples >= 0, "inspect_samples", "must be 0 or more")
        need(self.timing_warmup_steps >= 0, "timing_warmup_steps", "must be 0 (no time estimate) or more")
        need(self.dataloader_workers >= 0, "dataloader_workers", "must be 0 or more")


@dataclass
class TrainResult:
    """What :func:`run_train` produced: the summary (also in ``training_summary.json``) and where things are."""

    output_dir: Path
    summary: dict[str, Any]
    summary_path: Path | None = None  # None on ranks other than 0
    merged_dir: Path | None = None
    global_step: int = 0
    eval_before: dict[str, Any] | None = None
    eval_after: dict[str, Any] | None = None
    eval_history: list[dict[str, Any]] = field(default_factory=list)


# -- helpers ---------------------------------------------------------------------------------------


def estimate_optimizer_steps(
    windows: int,
    batch_size: int,
    gradient_accumulation_steps: int,
    num_epochs: float,
    world_size: int = 1,
    max_steps: int = -1,
) -> int:
    """The number of optimizer steps the Trainer will run (its own arithmetic, for the inspection).

    Each process gets ``ceil(ceil(windows / batch_size) / world_size)`` micro-batches per epoch (the last
    batch is not dropped); an optimizer step takes ``gradient_accumulation_steps`` of them, a partial
    group at the end of an epoch counting as one step.
    """
    if max_steps > 0:
        return max_steps
    batches = math.ceil(math.ceil(windows / batch_size) / max(world_size, 1))
    per_epoch = max(
        batches // gradient_accumulation_steps + int(batches % gradient_accumulation_steps > 0), 1
    )
    return math.ceil(num_epochs * per_epoch)


def _human_seconds(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Switch off transformers' own tqdm bars (loading, saving) for the run; the observer shows progress."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _main_process_first(env: Any) -> Iterator[None]:
    """Rank 0 runs the block first (it fills the packing cache), then the others (they read it)."""
    if not env.distributed:
        yield
        return
    from accelerate import PartialState

    # cpu=True on CPU: without it accelerate sets up no distributed state there, and the barrier is a no-op.
    with PartialState(cpu=env.device == "cpu").main_process_first():
        yield


def _eval_dict(result: Any, step: int) -> dict[str, Any]:
    data = result.as_dict()
    data["step"] = step
    return data


def _deltas(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, float] | None:
    if not before or not after:
        return None
    out: dict[str, float] = {}
    for key in ("loss", "perplexity", "bits_per_byte"):
        b, a = before.get(key), after.get(key)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            out[key] = a - b
            if b and math.isfinite(b):
                out[f"{key}_pct"] = (a - b) / b * 100
    return out


def _freezes_base(adapter: Any) -> bool:
    """Whether an adapter trains only its own weights (LoRA and the like) rather than the base model's."""
    return bool(getattr(adapter, "freezes_base_model", False))


def _is_fsdp_wrapped(model: Any) -> bool:
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except ImportError:  # pragma: no cover - torch without distributed
        return False
    kinds: tuple[type, ...] = (FullyShardedDataParallel,)
    try:
        from torch.distributed.fsdp import FSDPModule  # FSDP2

        kinds += (FSDPModule,)
    except ImportError:  # pragma: no cover - older torch
        pass
    return any(isinstance(m, kinds) for m in model.modules())


def _sample_indices(windows: int, count: int) -> list[int]:
    """``count`` window indices spread evenly over the corpus (first and last included)."""
    if count <= 0 or windows <= 0:
        return []
    if count >= windows:
        return list(range(windows))
    if count == 1:
        return [0]
    return sorted({round(i * (windows - 1) / (count - 1)) for i in range(count)})


def _measure_pass_seconds(
    model: Any, dataset: Any, batch_size: int, passes: int, device: Any, precision: str
) -> float | None:
    """Median seconds per forward+backward micro-batch over ``passes`` timed passes on real windows.

    One untimed warm-up pass comes first (allocations, kernel selection). No optimizer step is taken,
    the gradients are discarded and the RNG state is restored, so training is unchanged.
    """
    import torch
    from transformers import default_data_collator

    if passes <= 0 or len(dataset) == 0:
        return None
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    rng_devices = [device] if device.type == "cuda" else []
    timed: list[float] = []
    was_training = model.training
    with torch.random.fork_rng(devices=rng_devices):
        model.train()
        try:
            for i in range(passes + 1):
                rows = [dataset[(i * batch_size + j) % len(dataset)] for j in range(batch_size)]
                batch = {k: v.to(device) for k, v in default_data_collator(rows).items()}
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                started = time.perf_counter()
                with torch.autocast(
                    device_type=device.type,
                    dtype=autocast_dtype or torch.float32,
                    enabled=autocast_dtype is not None,
                ):
                    loss = model(**batch).loss
                loss.backward()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if i:
                    timed.append(time.perf_counter() - started)
        finally:
            model.zero_grad(set_to_none=True)
            model.train(was_training)
    return statistics.median(timed)


class _WarningsKept:
    """Forwards everything to the observer and keeps the warnings for the summary."""

    def __init__(self, observer: Observer) -> None:
        self.observer = observer
        self.warnings: list[str] = []

    def start(self, task: str, total: float | None = None, unit: str = "") -> None:
        self.observer.start(task, total, unit)

    def advance(self, task: str, amount: float = 1, **fields: Any) -> None:
        self.observer.advance(task, amount, **fields)

    def finish(self, task: str) -> None:
        self.observer.finish(task)

    def report(self, kind: str, data: Any) -> None:
        self.observer.report(kind, data)

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self.observer.warn(message)


# -- the Trainer callback --------------------------------------------------------------------------


class _Run:
    """State shared by :func:`run_train` and its Trainer callback."""

    def __init__(
        self,
        settings: TrainSettings,
        obs: Observer,
        tokenizer: Any,
        val_texts: list[str] | None,
        eval_kwargs: dict[str, Any],
        expect_fsdp: bool,
    ):
        self.settings = settings
        self.obs = obs
        self.tokenizer = tokenizer
        self.val_texts = val_texts
        self.eval_kwargs = eval_kwargs
        self.expect_fsdp = expect_fsdp
        self.trainer: Any = None
        self.eval_before: dict[str, Any] | None = None
        self.eval_after: dict[str, Any] | None = None
        self.eval_history: list[dict[str, Any]] = []
        self.eval_seconds = 0.0  # all held-out evaluations of the run
        self.eval_seconds_at_start = 0.0  # those before training started (the baseline)
        self.eval_seconds_in_train = 0.0  # those between the first and the last step
        self.train_started: float | None = None
        self.train_ended: float | None = None
        self.tokens_at_start = 0
        self.step_at_start = 0
        self.last_logs: dict[str, float] = {}
        self.train_task_open = False

    def evaluate(self, model: Any, step: int) -> dict[str, Any]:
        from qckit.evaluate import evaluate_lm

        started = time.perf_counter()
        texts = self.val_texts or []
        if self.settings.eval_max_documents:
            texts = texts[: self.settings.eval_max_documents]
        result = evaluate_lm(model, self.tokenizer, texts, observer=self.obs, **self.eval_kwargs)
        self.eval_seconds += time.perf_counter() - started
        data = _eval_dict(result, step)
        if self.trainer is not None:
            # "eval_" keys become eval/loss, eval/perplexity, eval/bits_per_byte in TensorBoard and land
            # in trainer_state.json's log history. Logging resets control.should_log, which would swallow
            # the training loss of this step (logged by the Trainer right after on_step_end): keep it.
            control = self.trainer.control
            should_log = control.should_log
            self.trainer.log(
                {
                    "eval_loss": result.loss,
                    "eval_perplexity": result.perplexity,
                    "eval_bits_per_byte": result.bits_per_byte,
                }
            )
            self.trainer.control.should_log = should_log or self.trainer.control.should_log
        return data

    def tokens_per_second(self, state: Any) -> float | None:
        if self.train_started is None:
            return None
        elapsed = time.perf_counter() - self.train_started - (self.eval_seconds - self.eval_seconds_at_start)
        tokens = state.num_input_tokens_seen - self.tokens_at_start
        return tokens / elapsed if elapsed > 0 else None


def _make_callback(run: _Run) -> Any:
    from transformers import TrainerCallback

    class QckitCallback(TrainerCallback):
        """Progress to the observer, held-out evaluation before/during/after training, FSDP check."""

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            trainer = run.trainer
            if run.expect_fsdp and not (trainer.is_fsdp_enabled and _is_fsdp_wrapped(trainer.model_wrapped)):
                raise HardwareError(
                    "the fsdp adapter is set but the model was not sharded with FSDP (the run would silently be "
                    "plain data parallel); launch with torchrun on several GPUs or remove the fsdp adapter"
                )
            run.step_at_start = state.global_step
            run.tokens_at_start = state.num_input_tokens_seen
            if run.val_texts is not None and run.settings.evaluate_before:
                run.eval_before = run.evaluate(model, state.global_step)
                run.obs.report("eval_before", run.eval_before)
            run.obs.start("train", total=state.max_steps, unit="step")
            run.train_task_open = True
            if state.global_step:
                run.obs.advance("train", state.global_step, resumed=True)
            run.eval_seconds_at_start = run.eval_seconds
            run.train_started = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:
                run.last_logs.update({k: v for k, v in logs.items() if isinstance(v, (int, float))})

        def on_step_end(self, args, state, control, model=None, **kwargs):
            fields: dict[str, Any] = {}
            if "loss" in run.last_logs:
                fields["loss"] = run.last_logs["loss"]
            if "learning_rate" in run.last_logs:
                fields["lr"] = run.last_logs["learning_rate"]
            tps = run.tokens_per_second(state)
            if tps is not None:
                fields["tokens_per_s"] = tps
            run.obs.advance("train", 1, **fields)
            every = run.settings.eval_steps
            if (
                run.val_texts is not None
                and every > 0
                and state.global_step % every == 0
                and state.global_step < state.max_steps
            ):
                self._evaluate_during(model, state)

        def on_epoch_end(self, args, state, control, model=None, **kwargs):
            if (
                run.val_texts is not None
                and run.settings.eval_steps == 0
                and state.global_step < state.max_steps
                and not control.should_training_stop
            ):
                self._evaluate_during(model, state)

        def _evaluate_during(self, model, state):
            data = run.evaluate(model, state.global_step)
            run.eval_history.append(data)
            run.obs.report("eval", data)

        def on_train_end(self, args, state, control, model=None, **kwargs):
            run.train_ended = time.perf_counter()
            run.eval_seconds_in_train = run.eval_seconds - run.eval_seconds_at_start
            if run.train_task_open:
                run.obs.finish("train")
                run.train_task_open = False
            if run.val_texts is not None:
                run.eval_after = run.evaluate(model, state.global_step)
                run.obs.report("eval_after", run.eval_after)

    return QckitCallback()


# -- the stage -------------------------------------------------------------------------------------


def run_train(
    settings: TrainSettings,
    chunker: Any,
    adapters: Sequence[Any],
    *,
    observer: Observer | None = None,
    recipe_text: str | None = None,
) -> TrainResult:
    """Run continued pretraining as ``settings`` say; see the module docstring for what is written where.

    Raises :class:`~qckit.errors.HardwareError` before loading anything when an adapter cannot run
    here, :class:`~qckit.errors.InputError` for missing or unusable files (including a corpus too
    small for one training window), :class:`~qckit.errors.RecipeError` for settings that only fail at
    run time (no train_file, a window longer than the model's context).
    """
    observer = observer or NullObserver()
    if not settings.train_file:
        raise RecipeError("no training file: set train.train_file (or --train_file)", key="train.train_file")

    from qckit.hardware import choose_precision, detect_environment

    # 1. hardware checks, before anything heavy is loaded
    env = detect_environment()
    obs = _WarningsKept(observer if env.is_main_process else NullObserver())
    names = [a.name for a in adapters]
    for adapter in adapters:
        adapter.check(env, names)
    precision = choose_precision(env, settings.precision)

    train_path = Path(settings.train_file)
    if not train_path.is_file():
        raise InputError(train_path, "training file not found" if not train_path.exists() else "not a file")
    val_path = Path(settings.val_file) if settings.val_file else None
    if val_path is not None and not val_path.is_file():
        raise InputError(val_path, "validation file not found" if not val_path.exists() else "not a file")

    output_dir = Path(settings.output_dir)
    resume_from = _find_resume_checkpoint(settings, output_dir, obs)

    with _quiet_transformers():
        return _run(
            settings,
            chunker,
            list(adapters),
            env,
            obs,
            precision,
            train_path,
            val_path,
            output_dir,
            resume_from,
            recipe_text,
        )


def _find_resume_checkpoint(settings: TrainSettings, output_dir: Path, obs: _WarningsKept) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    if settings.resume:
        if last is None:
            obs.warn(f"resume: no checkpoint-* directory in {output_dir}; starting from the beginning")
        return last
    if last is not None:
        obs.warn(
            f"{output_dir} already holds {Path(last).name} from an earlier run; this run starts from the beginning "
            f"and overwrites it (set train.resume = true, or --resume, to continue instead)"
        )
    return None


def _pack(path: Path, tokenizer: Any, chunker: Any, cache_dir: Path, obs: Observer) -> Any:
    from qckit.packing import pack_file

    try:
        return pack_file(path, tokenizer, chunker, cache_dir=cache_dir, observer=obs)
    except InputError as exc:
        if exc.detail.startswith("no training windows"):
            max_length = getattr(chunker, "max_length", None)
            hint = (
                f"lower train.chunker.max_length (now {max_length}) or min_length"
                if max_length
                else "change the chunker's settings"
            )
            raise InputError(path, f"{exc.detail}; {hint} (--max_length), or train on more text") from None
        raise


def _run(
    settings: TrainSettings,
    chunker: Any,
    adapters: list[Any],
    env: Any,
    obs: _WarningsKept,
    precision: str,
    train_path: Path,
    val_path: Path | None,
    output_dir: Path,
    resume_from: str | None,
    recipe_text: str | None,
) -> TrainResult:
    from transformers import Trainer, TrainingArguments, default_data_collator, set_seed
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from qckit.hardware import model_dtype, trainer_precision_kwargs
    from qckit.models import (
        count_parameters,
        enable_gradient_checkpointing,
        load_model,
        load_tokenizer,
        resolve_model,
    )
    from qckit.packing import iter_documents

    names = [a.name for a in adapters]
    set_seed(settings.seed)

    # 2. tokenizer and data
    source = resolve_model(settings.model)
    tokenizer = load_tokenizer(source, trust_remote_code=settings.trust_remote_code)
    cache_dir = Path(settings.cache_dir) if settings.cache_dir else output_dir / ".cache"
    with _main_process_first(env):
        train_ds = _pack(train_path, tokenizer, chunker, cache_dir, obs)
    val_texts: list[str] | None = None
    if val_path is not None:
        val_texts = [text for _, text in iter_documents(val_path)]
        if not val_texts:
            raise InputError(val_path, "the validation file has no documents (every line is blank)")
    else:
        obs.warn(
            "no validation file (val_file / --val_file): held-out perplexity and bits-per-byte are not measured; "
            "the training loss is not a held-out measure"
        )

    # 3. model
    trains_base = not any(_freezes_base(a) for a in adapters)
    load_kwargs: dict[str, Any] = {}
    for adapter in adapters:
        adapter.load_kwargs(load_kwargs, env)
    dtype = load_kwargs.pop("dtype", None) or model_dtype(precision, trains_base_weights=trains_base)
    model = load_model(
        source, dtype=dtype, trust_remote_code=settings.trust_remote_code, extra_kwargs=load_kwargs
    )
    base_config = copy.deepcopy(model.config)
    if "quantization_config" in load_kwargs and "quantization_config" in vars(base_config):
        # the 4bit/8bit adapters quantized the model on load: config.json describes the base model as it is
        del base_config.quantization_config
    max_positions = getattr(model.config, "max_position_embeddings", None)
    window = int(getattr(chunker, "max_length", 0) or train_ds.seq_length)
    if max_positions and train_ds.seq_length > max_positions:
        raise RecipeError(
            f"training windows of {train_ds.seq_length} tokens exceed the model's context "
            f"(max_position_embeddings = {max_positions}); lower max_length",
            key="train.chunker.max_length",
        )
    eval_max_length = settings.eval_max_length or window
    if max_positions:
        eval_max_length = min(eval_max_length, int(max_positions))
    eval_stride = None if settings.eval_stride < 0 else min(settings.eval_stride, eval_max_length - 1)
    if getattr(model, "config", None) is not None:
        model.config.use_cache = False
    for adapter in adapters:
        model = adapter.wrap_model(model, env)
    trainable, total = count_parameters(model)
    if trainable == 0:
        raise QckitError(f"the model has no trainable parameters after the adapters {names or '(none)'}")

    # 4. Trainer arguments (the seed's defaults come in through settings)
    args_kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.eval_batch_size or settings.batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        num_train_epochs=settings.num_epochs,
        max_steps=settings.max_steps,
        learning_rate=settings.learning_rate,
        lr_scheduler_type=settings.lr_scheduler,
        warmup_steps=settings.warmup_ratio,  # a float below 1 is a ratio of the total steps
        optim=settings.optimizer,
        weight_decay=settings.weight_decay,
        max_grad_norm=settings.max_grad_norm,
        seed=settings.seed,
        logging_steps=settings.logging_steps,
        logging_first_step=True,
        save_strategy="steps" if settings.save_steps > 0 else "no",
        save_steps=settings.save_steps if settings.save_steps > 0 else 500,
        save_total_limit=settings.save_total_limit or None,
        eval_strategy="no",  # held-out evaluation is qckit's own (evaluate_lm), run by the callback
        report_to="none",  # TensorBoard is attached explicitly below, writing into <output_dir>/logs
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=settings.dataloader_workers,
        remove_unused_columns=False,
        dataloader_pin_memory=env.device == "cuda",
        # On CPU, accelerate only sets up DDP (gloo) under torchrun when told the run is a CPU run;
        # otherwise every process would silently train alone.
        use_cpu=env.device == "cpu",
        ddp_find_unused_parameters=False,  # LoRA and full fine-tuning use every trainable weight each step
        torch_compile=settings.torch_compile,
        **trainer_precision_kwargs(precision),
    )
    # Checkpointing contract with the adapters: they see the request and may take it over (fsdp uses its
    # own); if it is still there afterwards, qckit turns it on the peft-safe way on the wrapped model.
    args_kwargs["activation_checkpointing"] = settings.gradient_checkpointing
    for adapter in adapters:
        adapter.training_args(args_kwargs, model, env)
    if args_kwargs.pop("activation_checkpointing", False):
        enable_gradient_checkpointing(model)
    args_kwargs["activation_checkpointing"] = False
    try:
        args = TrainingArguments(**args_kwargs)
    except ValueError as exc:
        detail = " ".join(str(exc).split())[:400]
        if settings.optimizer in detail:
            raise RecipeError(f"unknown optimizer: {detail}", key="train.optimizer") from None
        raise QckitError(f"invalid training arguments: {detail}") from None

    # 5. inspection (with a measured time estimate)
    world_size = max(int(args.world_size), 1)
    if world_size != env.world_size:
        raise HardwareError(
            f"{env.world_size} processes were launched but the Trainer set up {world_size} (no distributed "
            f"training on {env.device}); each process would train alone"
        )
    # one process driving several GPUs (torch DataParallel) splits a batch of batch_size x n_gpu
    step_batch = settings.batch_size * max(int(getattr(args, "n_gpu", 1) or 1), 1)
    steps = estimate_optimizer_steps(
        len(train_ds),
        step_batch,
        settings.gradient_accumulation_steps,
        settings.num_epochs,
        world_size,
        settings.max_steps,
    )
    expect_fsdp = "fsdp" in names
    device = args.device
    placed = getattr(model, "hf_device_map", None) is None and not getattr(model, "is_quantized", False)
    if placed and not expect_fsdp:
        model.to(device)
    inspection: dict[str, Any] | None = None
    if settings.inspect_data:
        inspection = _inspection(
            settings,
            train_ds,
            tokenizer,
            val_texts,
            steps,
            world_size,
            step_batch,
            trainable,
            total,
            precision,
            env,
            names,
            window,
        )
        seconds = None
        if settings.timing_warmup_steps > 0 and not expect_fsdp and placed:
            seconds = _measure_pass_seconds(
                model, train_ds, settings.batch_size, settings.timing_warmup_steps, device, precision
            )
        if seconds is not None:
            remaining = steps
            if resume_from is not None:
                remaining = max(steps - _checkpoint_step(resume_from), 0)
            estimate = seconds * settings.gradient_accumulation_steps * remaining
            inspection["seconds_per_micro_batch"] = seconds
            inspection["estimated_train_time_s"] = estimate
            inspection["estimated_train_time"] = (
                f"~{_human_seconds(estimate)} (estimate: {remaining} steps x {settings.gradient_accumulation_steps} "
                f"micro-batches x {seconds:.3g} s, the median of {settings.timing_warmup_steps} timed forward+backward "
                f"passes; excludes optimizer steps, evaluation and checkpoints)"
            )
        else:
            inspection["estimated_train_time"] = "not measured" + (" under FSDP" if expect_fsdp else "")
        obs.report("inspection", inspection)

    # 6. Trainer with TensorBoard into <output_dir>/logs and qckit's callback
    eval_kwargs = dict(
        max_length=eval_max_length,
        stride=eval_stride,
        batch_size=settings.eval_batch_size or settings.batch_size,
        device=device,
    )
    run = _Run(settings, obs, tokenizer, val_texts, eval_kwargs, expect_fsdp)
    callbacks: list[Any] = [_make_callback(run)]
    writer = None
    if settings.tensorboard and env.is_main_process:
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        writer = SummaryWriter(log_dir=str(output_dir / LOGS_DIR))
        callbacks.append(TensorBoardCallback(tb_writer=writer))
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        data_collator=default_data_collator,  # windows are pre-padded, labels -100 on padding and context
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # library code never prints
    trainer.remove_callback(ProgressCallback)
    run.trainer = trainer
    if expect_fsdp and not trainer.is_fsdp_enabled:
        raise HardwareError(
            "the fsdp adapter is set but the accelerator does not use FSDP (it would silently be plain data "
            "parallel); launch with torchrun on several GPUs or remove the fsdp adapter"
        )

    # 7. train
    try:
        output = trainer.train(resume_from_checkpoint=resume_from)
    finally:
        if run.train_task_open:
            obs.finish("train")
            run.train_task_open = False
        if writer is not None:
            writer.close()

    # 8. save
    trainer.save_model(str(output_dir))
    trainer.save_state()
    state = trainer.state
    result = TrainResult(
        output_dir=output_dir,
        summary={},
        global_step=state.global_step,
        eval_before=run.eval_before,
        eval_after=run.eval_after,
        eval_history=run.eval_history,
    )
    if not env.is_main_process:
        return result

    is_peft = hasattr(trainer.model, "peft_config")
    if is_peft:
        base_config.use_cache = True
        base_config.save_pretrained(str(output_dir))  # config.json of the base model, beside the adapter
    merged_dir: Path | None = None
    if settings.export_merged:
        if is_peft:
            from qckit.models import merge_and_export

            merged_dir = merge_and_export(
                settings.model,
                output_dir,
                output_dir / MERGED_DIR,
                dtype=precision,
                trust_remote_code=settings.trust_remote_code,
            )
        else:
            obs.warn(f"export_merged: no LoRA adapter to merge; {output_dir} already holds the full model")

    train_seconds = (run.train_ended or time.perf_counter()) - (run.train_started or time.perf_counter())
    compute_seconds = max(train_seconds - run.eval_seconds_in_train, 1e-9)
    tokens_this_run = state.num_input_tokens_seen - run.tokens_at_start
    final_loss = next((h["loss"] for h in reversed(state.log_history) if "loss" in h), None)
    summary: dict[str, Any] = {
        "qckit_version": __version__,
        "model": settings.model,
        "adapters": names,
        "adapter_settings": [_component_settings(a) for a in adapters],
        "chunker": _component_settings(chunker),
        "precision": precision,
        "device": env.describe(),
        "world_size": world_size,
        "train_file": str(train_path),
        "val_file": str(val_path) if val_path else None,
        "output_dir": str(output_dir),
        "resumed_from": resume_from,
        "global_step": state.global_step,
        "max_steps": state.max_steps,
        "epochs": state.epoch,
        "train_loss": output.training_loss,
        "final_logged_train_loss": final_loss,
        "train_loss_ppl": math.exp(output.training_loss) if output.training_loss < 700 else math.inf,
        "eval_before": run.eval_before,
        "eval_after": run.eval_after,
        "eval_delta": _deltas(run.eval_before, run.eval_after),
        "eval_history": run.eval_history,
        "tokens_seen": state.num_input_tokens_seen,
        "tokens_seen_this_run": tokens_this_run,
        "windows": len(train_ds),
        "train_runtime_s": train_seconds,
        "eval_runtime_s": run.eval_seconds,
        "tokens_per_s": tokens_this_run / compute_seconds,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "packing": train_ds.summary(),
        "estimated_train_time_s": (inspection or {}).get("estimated_train_time_s"),
        "merged_dir": str(merged_dir) if merged_dir else None,
        "settings": dataclasses.asdict(settings),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if val_path is None:
        summary["note"] = "no val_file: held-out perplexity and bits-per-byte were not measured"
    summary["warnings"] = list(obs.warnings)
    summary_path = output_dir / SUMMARY_NAME
    atomic_write_json(summary_path, summary)
    if recipe_text is not None:
        atomic_write_text(output_dir / RECIPE_NAME, recipe_text)
    obs.report("summary", summary)
    result.summary = summary
    result.summary_path = summary_path
    result.merged_dir = merged_dir
    return result


def _checkpoint_step(path: str) -> int:
    try:
        return int(Path(path).name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return 0


def _component_settings(component: Any) -> dict[str, Any]:
    """The public scalar attributes of a component, for the summary (``{"use": name, ...}``)."""
    out: dict[str, Any] = {"use": getattr(component, "name", type(component).__name__)}
    for key, value in vars(component).items() if hasattr(component, "__dict__") else []:
        if key.startswith("_"):
            continue
        if isinstance(value, (str, int, float, bool)) or value is None:
            out[key] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float, bool)) for v in value):
            out[key] = list(value)
    return out


def _inspection(
    settings: TrainSettings,
    train_ds: Any,
    tokenizer: Any,
    val_texts: list[str] | None,
    steps: int,
    world_size: int,
    step_batch: int,
    trainable: int,
    total: int,
    precision: str,
    env: Any,
    names: list[str],
    window: int,
) -> dict[str, Any]:
    stats = train_ds.stats
    windows = len(train_ds)
    per_step = step_batch * settings.gradient_accumulation_steps * world_size
    samples = [
        train_ds.decode_sample(i, tokenizer) for i in _sample_indices(windows, settings.inspect_samples)
    ]
    data: dict[str, Any] = {
        "train_file": settings.train_file,
        "documents": stats.documents,
        "words": train_ds.num_words,
        "bytes": train_ds.num_bytes,
        "tokens_total": stats.tokens_total,
        "tokens_kept": stats.tokens_kept,
        "tokens_kept_pct": 100.0 * stats.tokens_kept / stats.tokens_total if stats.tokens_total else 0.0,
        "fertility_tokens_per_word": train_ds.fertility,
        "window_length": window,
        "windows": windows,
        "windows_dropped_short": stats.windows_dropped_short,
        "from_cache": bool(getattr(train_ds, "from_cache", False)),
        "batch_size": settings.batch_size,
        "gradient_accumulation_steps": settings.gradient_accumulation_steps,
        "world_size": world_size,
        "windows_per_optimizer_step": per_step,
        "tokens_per_optimizer_step": per_step * train_ds.seq_length,
        "epochs": settings.num_epochs if settings.max_steps < 0 else None,
        "optimizer_steps": steps,
        "warmup_steps": math.ceil(settings.warmup_ratio * steps),
        "trainable_parameters": trainable,
        "total_parameters": total,
        "trainable_pct": 100.0 * trainable / total if total else 0.0,
        "adapters": ", ".join(names) or "none (full fine-tuning)",
        "precision": precision,
        "device": env.describe(),
        "val_documents": len(val_texts) if val_texts is not None else None,
        "samples": samples,
    }
    return {k: v for k, v in data.items() if v is not None}
