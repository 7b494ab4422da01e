"""Settings of the train stage: the recipe's ``[train]`` table as a validated dataclass.

Both the recipe loader (:mod:`qckit.recipe`) and the stage import :class:`TrainSettings` from here; this
module imports nothing heavy, so loading a recipe never imports torch or transformers.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from qckit.evaluate import PROTOCOLS
from qckit.hardware import DEVICES, PRECISIONS

__all__ = [
    "DECAY_TYPES",
    "DEFAULT_STRENGTHS",
    "EXHAUSTED",
    "SCHEDULERS",
    "TRACKERS",
    "WSD",
    "WSD_KEYS",
    "DataSource",
    "SelectSettings",
    "TrainSettings",
]

#: what a training source does when its windows run out before the epoch ends (``[[train.data]] exhausted``)
EXHAUSTED = ("repeat", "stop")

#: the warmup-stable-decay schedule (MiniCPM's WSD; transformers' ``get_wsd_schedule``): the ``decay_*`` keys
WSD = "warmup_stable_decay"
#: ``lr_scheduler`` values (transformers' ``SchedulerType`` names; only WSD takes arguments, from the settings)
SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    WSD,
)
#: shapes of WSD's decay phase (transformers' ``decay_type``)
DECAY_TYPES = ("linear", "cosine", "1-sqrt")
#: the ``report_to`` values (:mod:`qckit.train.tracking` drives them)
TRACKERS = ("tensorboard", "mlflow", "wandb")
#: the settings of WSD: refused with any other ``lr_scheduler`` (they would silently do nothing)
WSD_KEYS = ("decay_fraction", "min_lr_ratio", "decay_type", "decay_source", "decay_share")


@dataclass
class DataSource:
    """One training source of a ``[[train.data]]`` list: a corpus file and its share of the training tokens."""

    path: str  #: the training file, one document per line
    #: the source's share of the trained tokens (label ≠ -100), normalised over the list: 0.8/0.2 = 4/1
    weight: float = 1.0
    #: when its windows run out before the epoch ends (:data:`EXHAUSTED`): repeat draws it again (in a
    #: new order), stop ends the epoch
    exhausted: str = "repeat"
    name: str = ""  #: the source's label in the reports; "" = the file name without its extension

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path.strip():
            raise ValueError(f"path: must name a training file, got {self.path!r}")
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise ValueError(f"weight: must be a finite number greater than 0, got {self.weight!r}")
        if self.exhausted not in EXHAUSTED:
            raise ValueError(f"exhausted: must be one of {', '.join(EXHAUSTED)}, got {self.exhausted!r}")
        if not self.name:
            self.name = Path(self.path).stem or self.path


#: the adapter strengths ``qckit select`` tries by default (0 = the base model, 1 = the trained weights)
DEFAULT_STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
#: which weights ``[train.select] checkpoints`` considers: every kept checkpoint and the final ones, or the final
SELECT_CHECKPOINTS = ("all", "final")


@dataclass
class SelectSettings:
    """``[train.select]``: after training, choose how much of the learned delta to keep (:mod:`qckit.select`).

    The chosen point is written to ``<output_dir>/selected`` and recorded in ``training_summary.json``
    and the model card.
    """

    #: the fractions of the delta tried on each candidate (0 = the base model, 1 = the trained weights)
    strengths: list[float] = field(default_factory=lambda: list(DEFAULT_STRENGTHS))
    #: the candidates (:data:`SELECT_CHECKPOINTS`): all = the kept checkpoints and the final weights
    checkpoints: str = "all"

    def __post_init__(self) -> None:
        if not self.strengths or not all(
            isinstance(s, (int, float)) and math.isfinite(s) and s >= 0 for s in self.strengths
        ):
            raise ValueError(
                f"strengths: must be a non-empty list of numbers of 0 or more, got {self.strengths!r}"
            )
        if self.checkpoints not in SELECT_CHECKPOINTS:
            raise ValueError(
                f"checkpoints: must be one of {', '.join(SELECT_CHECKPOINTS)}, got {self.checkpoints!r}"
            )


@dataclass
class TrainSettings:
    """Settings of the train stage: the recipe's ``[train]`` table (every key is a field below).

    The defaults are the seed script's: Llama-3.2-1B, 3 epochs, batch 8 × 8 accumulation steps,
    learning rate 1e-5 with a cosine schedule and 3 % warmup, AdamW, no weight decay, gradient
    clipping at 1.0, seed 42, gradient checkpointing ``"auto"`` (on where the memory estimate needs it:
    :mod:`qckit.train.activations`; the seed always had it on). Precision ``"auto"`` is bf16 on GPUs that
    compute it natively, fp16 on older CUDA GPUs and fp32 on CPU (the seed forced fp16, which crashes on
    CPU).
    """

    train_file: str = ""  #: training corpus, one document per line (the one-source form of ``data``)
    #: several training sources with token shares (``[[train.data]]``, replay); instead of train_file
    data: list[DataSource] = field(default_factory=list)
    val_file: str | None = None  #: held-out corpus for perplexity and bits-per-byte
    #: the run's folder: the adapter or model, checkpoints, training_summary.json, the model card, logs
    output_dir: str = "./cpt_model"
    model: str = "meta-llama/Llama-3.2-1B"  #: hub id, model directory, .gguf file or pkg:<package>/<file>
    trust_remote_code: bool = False  #: run model code shipped with a hub model (off unless you trust it)
    #: words to make single tokens (a list, or a file with one word per line); their embedding rows start
    #: at the mean of their old pieces' rows (qckit.vocab). A frozen base needs lora's train_embeddings
    add_tokens: list[str] | str = field(default_factory=list)
    num_epochs: float = 3.0  #: passes over the training data (a fraction stops part-way)
    max_steps: int = -1  #: > 0: stop after this many optimizer steps (overrides num_epochs)
    batch_size: int = 8  #: windows per device per micro-batch
    gradient_accumulation_steps: int = 8  #: micro-batches per optimizer step
    learning_rate: float = 1e-5  #: the peak learning rate (after the warmup)
    #: a transformers schedule (:data:`SCHEDULERS`); warmup_stable_decay (WSD) takes the decay_* and min_lr_ratio keys
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.03  #: share of the optimizer steps spent warming up the learning rate
    #: warmup_stable_decay: share of the optimizer steps in the final decay phase
    decay_fraction: float = 0.1
    #: warmup_stable_decay: the learning rate at the end of the decay (and at the start of the warmup),
    #: as a share of learning_rate
    min_lr_ratio: float = 0.0
    #: warmup_stable_decay: the decay's shape (:data:`DECAY_TYPES`); 1-sqrt cools down best in Hägele et al. 2024
    decay_type: str = "1-sqrt"
    #: warmup_stable_decay: the [[train.data]] source (by name) drawn at decay_share during the decay phase;
    #: "" = the mix stays the same
    decay_source: str = ""
    #: decay_source's share of the decay phase's trained tokens; the other sources split the rest by weight
    decay_share: float = 0.5
    weight_decay: float = 0.0  #: the optimizer's weight decay, in [0, 1]
    max_grad_norm: float = 1.0  #: gradient clipping; 0 disables it
    optimizer: str = (
        "adamw_torch"  #: a transformers optimizer name (adamw_torch, adamw_torch_fused, adafactor …)
    )
    seed: int = 42  #: seeds the data order, the weight initialisation of adapters and dropout
    precision: str = "auto"  #: one of :data:`PRECISIONS` (auto chooses for the hardware)
    #: fp16: consecutive optimizer steps the loss scaler may skip (overflowing gradients; counted in the
    #: summary's skipped_steps) before the run stops; the scale starts at 2^16 and halves at each skip,
    #: so 25 in a row means gradients that overflow even unscaled
    max_skipped_steps: int = 25
    device: str = "auto"  #: auto (a CUDA GPU when there is one) or cpu (train on the CPU even beside a GPU)
    #: recompute activations in the backward pass (less memory, slower); "auto" = only when the memory estimate
    #: without it exceeds 85 % of the GPU's memory (never on the CPU)
    gradient_checkpointing: bool | Literal["auto"] = "auto"
    #: transformers' attention implementation (sdpa, eager, flash_attention_2, flex_attention …); "" = its default
    attn_implementation: str = ""
    eval_steps: int = (
        0  #: evaluate on val_file every N optimizer steps; 0 = at the end of every epoch; -1 = never
    )
    evaluate_before: bool = True  #: measure the model on val_file before training (the baseline)
    eval_batch_size: int = 0  #: evaluation batch: this × min(window, 1024) tokens per pass; 0 = batch_size
    eval_max_length: int = 0  #: evaluation window in tokens; 0 = the chunker's max_length
    #: how val_file's bits per byte are scored: document (lm-eval's loglikelihood_rolling) or stream
    eval_protocol: str = "document"
    eval_stride: int = -1  #: stream protocol: evaluation window overlap in tokens; -1 = half the window
    eval_prefix_token: str | int | None = (
        None  #: document protocol: the token before each document (BOS, else EOS)
    )
    eval_max_documents: int = 0  #: evaluate on the first N documents of val_file only; 0 = all of them
    save_steps: int = 500  #: checkpoint-N/ every N optimizer steps; 0 = no intermediate checkpoints
    save_total_limit: int = 0  #: keep only the N most recent checkpoints; 0 = keep all
    logging_steps: int = 10  #: log the training loss every N optimizer steps
    inspect_data: bool = True  #: report samples, token counts, steps and a time estimate before training
    inspect_samples: int = 5  #: decoded windows shown by the inspection
    #: prompts the model completes (greedily) before, during and after training, at each evaluation: shown
    #: in the report, logged to TensorBoard / MLflow / W&B and kept in training_summary.json
    sample_prompts: list[str] = field(default_factory=list)
    sample_max_new_tokens: int = 32  #: tokens generated for each of sample_prompts
    timing_warmup_steps: int = (
        2  #: forward+backward passes timed for the estimate (after one untimed warm-up)
    )
    resume: bool = False  #: continue from the newest complete checkpoint-* of this same run in output_dir
    #: delete an earlier run's checkpoints and outputs in output_dir before training (instead of refusing)
    overwrite_output_dir: bool = False
    #: also load pickle-format weights (.bin) for the model and checkpoints; off: safetensors only
    allow_pickle_weights: bool = False
    export_merged: bool = (
        False  #: also save the base model with the LoRA weights merged in, under <output_dir>/merged
    )
    cache_dir: str | None = None  #: packed-window cache; default <output_dir>/.cache
    dataloader_workers: int = 0  #: data-loading processes; 0 = in the training process
    #: experiment trackers: tensorboard (<output_dir>/logs), mlflow, wandb; [] for none
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    #: mlflow tracking URI; "" = a local store in <output_dir>/mlruns
    tracking_uri: str = ""
    tracking_project: str = "qckit"  #: mlflow experiment / wandb project
    torch_compile: bool = False  #: compile the model with torch.compile (transformers' torch_compile)
    #: ``[train.select]``: choose the adapter strength (and checkpoint) after training; absent = no selection
    select: SelectSettings | None = None

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
        need(
            bool(self.add_tokens.strip())
            if isinstance(self.add_tokens, str)
            else all(isinstance(w, str) and w.strip() for w in self.add_tokens),
            "add_tokens",
            "must be a list of words or the path of a file with one word per line",
        )
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
        need(0 <= self.weight_decay <= 1, "weight_decay", "must be in [0, 1]")
        need(
            0 <= self.max_grad_norm < math.inf, "max_grad_norm", "must be 0 (no clipping) or a finite number"
        )
        need(bool(self.optimizer.strip()), "optimizer", "must name a transformers optimizer")
        need(self.seed >= 0, "seed", "must be 0 or more")
        need(self.max_skipped_steps >= 1, "max_skipped_steps", "must be at least 1")
        need(self.precision in PRECISIONS, "precision", f"must be one of {', '.join(PRECISIONS)}")
        need(self.device in DEVICES, "device", f"must be one of {', '.join(DEVICES)}")
        need(
            isinstance(self.gradient_checkpointing, bool) or self.gradient_checkpointing == "auto",
            "gradient_checkpointing",
            'must be true, false or "auto"',
        )
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
        need(self.eval_protocol in PROTOCOLS, "eval_protocol", f"must be one of {', '.join(PROTOCOLS)}")
        need(self.eval_stride >= -1, "eval_stride", "must be -1 (half the window) or 0 or more")
        need(
            self.eval_stride < 0 or self.eval_protocol == "stream",
            "eval_stride",
            'applies to the stream protocol only (set eval_protocol = "stream")',
        )
        need(
            self.eval_prefix_token is None or self.eval_protocol == "document",
            "eval_prefix_token",
            "applies to the document protocol only",
        )
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
        need(
            all(isinstance(p, str) and p.strip() for p in self.sample_prompts),
            "sample_prompts",
            "must be a list of non-empty prompts",
        )
        need(self.sample_max_new_tokens >= 1, "sample_max_new_tokens", "must be at least 1")
        need(self.timing_warmup_steps >= 0, "timing_warmup_steps", "must be 0 (no time estimate) or more")
        need(self.dataloader_workers >= 0, "dataloader_workers", "must be 0 or more")
        unknown = [name for name in self.report_to if name not in TRACKERS]
        if unknown:
            raise ValueError(
                f"report_to: unknown tracker {unknown[0]!r}; use {', '.join(TRACKERS)} (or [] for none)"
            )
        self.report_to = list(dict.fromkeys(self.report_to))
        need(bool(self.tracking_project.strip()), "tracking_project", "must not be empty")
        need(
            not (self.resume and self.overwrite_output_dir),
            "overwrite_output_dir",
            "cannot be combined with resume (one continues the checkpoints, the other deletes them)",
        )
        if self.train_file and self.data:
            raise ValueError("data: set either train_file (one source) or [[train.data]] (several), not both")
        names = [source.name for source in self.data]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(
                f"data: source names must differ (set name = ...); repeated: {', '.join(duplicated)}"
            )
        self._check_schedule()

    def _check_schedule(self) -> None:
        """The WSD keys: ranges, the scheduler they need, and ``decay_source`` naming a source."""
        if self.lr_scheduler != WSD:
            changed = [k for k in WSD_KEYS if getattr(self, k) != _default(type(self), k)]
            if changed:
                raise ValueError(
                    f'{changed[0]}: applies to lr_scheduler = "{WSD}" only (now {self.lr_scheduler!r})'
                )
            return
        for name, ok, what in (
            ("decay_fraction", 0 < self.decay_fraction <= 1, "must be in (0, 1]"),
            ("min_lr_ratio", 0 <= self.min_lr_ratio <= 1, "must be in [0, 1]"),
            ("decay_type", self.decay_type in DECAY_TYPES, f"must be one of {', '.join(DECAY_TYPES)}"),
            ("decay_share", 0 < self.decay_share <= 1, "must be in (0, 1]"),
        ):
            if not ok:
                raise ValueError(f"{name}: {what}, got {getattr(self, name)!r}")
        if self.warmup_ratio + self.decay_fraction > 1:
            raise ValueError(
                f"decay_fraction: warmup_ratio + decay_fraction must be at most 1, got "
                f"{self.warmup_ratio!r} + {self.decay_fraction!r}"
            )
        if not self.decay_source:
            if self.decay_share != _default(type(self), "decay_share"):
                raise ValueError(
                    "decay_share: applies with decay_source only (the source drawn at that share)"
                )
            return
        names = [source.name for source in self.sources()]
        if len(names) < 2:
            raise ValueError("decay_source: needs several [[train.data]] sources (one of them is drawn more)")
        if self.decay_source not in names:
            close = difflib.get_close_matches(self.decay_source, names, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"sources: {', '.join(names)}"
            raise ValueError(f"decay_source: no [[train.data]] source named {self.decay_source!r}; {hint}")

    def warmup_steps(self, steps: int) -> int:
        """Warmup steps of a run of ``steps`` optimizer steps (the Trainer's arithmetic: a ratio rounded up)."""
        return math.ceil(self.warmup_ratio * steps)

    def decay_steps(self, steps: int) -> int:
        """WSD's decay steps of a run of ``steps`` optimizer steps (``decay_fraction`` rounded up, after the
        warmup); 0 with another scheduler."""
        if self.lr_scheduler != WSD:
            return 0
        # round first: 0.07 * 100 is 7.000000000000001 in floating point: 7 steps, not 8
        wanted = math.ceil(round(self.decay_fraction * steps, 9))
        return max(min(wanted, steps - self.warmup_steps(steps)), 0)

    def scheduler_kwargs(self, steps: int) -> dict[str, Any]:
        """transformers' ``lr_scheduler_kwargs`` for a run of ``steps`` optimizer steps ({} unless WSD)."""
        if self.lr_scheduler != WSD:
            return {}
        return {
            "num_decay_steps": self.decay_steps(steps),
            "decay_type": self.decay_type,
            "min_lr_ratio": self.min_lr_ratio,
        }

    def sources(self) -> list[DataSource]:
        """The training sources: ``data``, or ``train_file`` as the one source (empty when neither is set)."""
        if self.data:
            return list(self.data)
        return [DataSource(path=self.train_file)] if self.train_file else []


def _default(cls: type, name: str) -> Any:
    """The default of a dataclass field (so that "was it set?" reads the one written default)."""
    return next(f.default for f in fields(cls) if f.name == name)
