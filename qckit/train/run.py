"""The train stage as an object: :class:`TrainRun`, one method per phase, each returning its result
to the phases after it.

Phases, in order (:meth:`TrainRun.run`), and what each returns::

    check          Checked: hardware and adapter checks, input files, words to add, the checkpoint to
                   resume from (ResumePoint; nothing loaded yet)
    data           Data: tokenizer (grown by train.add_tokens), packed training windows (cached),
                   validation documents, the eval sets read once
    load_model     LoadedModel: the model loaded as the adapters ask (embeddings grown), context checks,
                   the adapters' wrapping
    arguments      Arguments: TrainingArguments (the seed's defaults come in through the settings;
                   adapters edit them)
    inspect        Plan: optimizer steps (WSD: the decay phase's steps and windows), device placement, the
                   document-isolation check, the inspection report with a measured time estimate
    build_trainer  Built: the Trainer with TensorBoard and qckit's callback (progress, held-out
                   evaluation); its optimizer takes the adapters' parameter groups (qckit.train.trainer)
    train          trainer.train()'s output
    summary        model, state, training_summary.json and recipe.toml written; the TrainResult returned

Library code: nothing is printed; progress and reports go to the :class:`~qckit.progress.Observer`.
Top-level imports are light (torch and transformers are imported by the phases that need them).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import hashlib
import json
import math
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from qckit import __version__
from qckit._fs import atomic_write_json, atomic_write_text, follow_umask, remove_entry
from qckit.components import Chunker, ModelAdapter, ability
from qckit.errors import HardwareError, InputError, QckitError, RecipeError
from qckit.outputs import CACHE_DIR, CARD_NAME, LOGS_DIR, MERGED_DIR, RECIPE_NAME, SELECTED_DIR, SUMMARY_NAME
from qckit.progress import NullObserver, Observer, phase
from qckit.train import checkpoints
from qckit.train.inspection import estimate_optimizer_steps, human_seconds, inspection, measure_pass_seconds
from qckit.train.settings import WSD, TrainSettings

__all__ = [
    "TrainResult",
    "TrainRun",
    "run_train",
    "Checked",
    "ResumePoint",
    "Data",
    "LoadedModel",
    "Arguments",
    "Plan",
    "Built",
]


@dataclass
class TrainResult:
    """What :func:`run_train` produced: the summary (also in ``training_summary.json``) and where things are."""

    output_dir: Path
    summary: dict[str, Any]
    summary_path: Path | None = None  # None on ranks other than 0
    merged_dir: Path | None = None
    global_step: int = 0
    #: held-out measurements (set name → numbers, see :mod:`qckit.evaluate.sets`)
    eval_before: dict[str, dict[str, Any]] | None = None
    eval_after: dict[str, dict[str, Any]] | None = None
    eval_history: list[dict[str, dict[str, Any]]] = field(default_factory=list)


def run_train(
    settings: TrainSettings,
    chunker: Any,
    adapters: Sequence[Any],
    *,
    observer: Observer | None = None,
    recipe_text: str | None = None,
    eval_sets: Sequence[Any] | None = None,
) -> TrainResult:
    """Run continued pretraining as ``settings`` say; see :mod:`qckit.train` for what is written where.

    ``eval_sets`` (:class:`qckit.evaluate.sets.EvalSet`, a recipe's: :func:`~qckit.evaluate.sets.plan_sets`)
    are measured before, during and after training; by default the validation file alone.

    Raises :class:`~qckit.errors.HardwareError` before loading anything when an adapter cannot run
    here, :class:`~qckit.errors.InputError` for missing or unusable files (including a corpus too
    small for one training window), :class:`~qckit.errors.RecipeError` for settings that only fail at
    run time (no train_file, a window longer than the model's context).
    """
    return TrainRun(
        settings, chunker, adapters, observer=observer, recipe_text=recipe_text, eval_sets=eval_sets
    ).run()


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


@dataclass
class ResumePoint:
    """The run's identity and where it starts (:meth:`TrainRun.resume_point`)."""

    fingerprint: dict[str, Any]
    resume_from: str | None = None  #: the checkpoint to continue from; ``None``: from the beginning
    baseline: dict[str, Any] | None = None  #: that checkpoint's recorded held-out numbers before training
    debris: list[Path] = field(default_factory=list)  #: broken checkpoints newer than ``resume_from``


@dataclass
class Checked:
    """What :meth:`TrainRun.check` decided before anything heavy is loaded."""

    env: Any  #: the :class:`~qckit.hardware.Environment` of this process
    precision: str  #: fp32, bf16 or fp16 (``auto`` resolved for this machine)
    eval_sets: list[Any]  #: the named eval sets (the validation file's when none were given)
    new_words: list[str]  #: ``train.add_tokens``'s words (empty without it)
    resume: ResumePoint


@dataclass
class Data:
    """The tokenizer, the training windows and the eval sets, read once (:meth:`TrainRun.data`)."""

    source: Any  #: the base model's :class:`~qckit.models.ModelSource`
    tokenizer: Any  #: grown by ``train.add_tokens`` when set
    train_ds: Any  #: the :class:`~qckit.train.mixing.MixedDataset` of every source
    val_texts: list[str] | None  #: the validation documents (``None`` without a validation file)
    #: the held-out seam (:class:`~qckit.evaluate.sets.EvalSuite`); build_trainer sets its window and device
    suite: Any
    vocab_growth: Any = None  #: :class:`qckit.vocab.VocabGrowth` when train.add_tokens grew the tokenizer
    fertility_before: dict[str, float] | None = None  #: on the training corpus, before growing

    def vocabulary(self, with_tokens: bool = False) -> dict[str, Any] | None:
        """What ``train.add_tokens`` did, with the corpus fertility before and after (``None`` without it)."""
        if self.vocab_growth is None or self.fertility_before is None:
            return None
        data = self.vocab_growth.as_dict()
        if not with_tokens:
            data.pop("tokens")
        ds = self.train_ds
        after = {
            "tokens_per_word": ds.fertility,
            "bytes_per_token": ds.num_bytes / ds.num_doc_tokens if ds.num_doc_tokens else 0.0,
        }
        before = {k: self.fertility_before[k] for k in ("tokens_per_word", "bytes_per_token")}
        data["fertility"] = {"before": before, "after": after}
        return data


@dataclass
class LoadedModel:
    """The model as the adapters wrapped it, and the windows it reads (:meth:`TrainRun.load_model`)."""

    model: Any
    base_config: Any  #: the base model's configuration (as the adapters' ``base_model_config`` edit it)
    window: int  #: the chunker's window length
    eval_max_length: int  #: the evaluation window (eval_max_length or the window, within the context)
    trainable: int  #: trainable parameters
    total: int  #: all parameters


@dataclass
class Arguments:
    """The Trainer's arguments (:meth:`TrainRun.arguments`)."""

    args: Any  #: ``transformers.TrainingArguments``
    world_size: int  #: processes training together
    #: gradient checkpointing asked of the adapters and why (:mod:`qckit.train.activations`)
    checkpointing: Any = None


@dataclass
class Plan:
    """The optimizer steps and what they draw, the placement, the inspection (:meth:`TrainRun.inspect`)."""

    steps: int  #: optimizer steps of the whole run
    step_batch: int  #: windows per micro-batch of one process (batch_size x its GPUs under DataParallel)
    accumulation: int  #: micro-batches per optimizer step
    world_size: int
    windows_per_epoch: int
    placed: bool  #: whether qckit moves the model to the device (not an accelerate device map, not quantized)
    inspection: dict[str, Any] | None = None  #: the inspection report (``None`` with inspect_data off)

    def windows_drawn(self, global_step: int) -> int:
        """Windows the run has drawn after ``global_step`` optimizer steps (epoch after epoch)."""
        per_epoch = self.windows_per_epoch
        steps_per_epoch = estimate_optimizer_steps(
            per_epoch, self.step_batch, self.accumulation, 1, self.world_size
        )
        per_step = self.step_batch * self.accumulation * self.world_size
        epochs, rest = divmod(global_step, steps_per_epoch)
        return epochs * per_epoch + min(rest * per_step, per_epoch)

    def trained_tokens(self, train_ds: Any, global_step: int) -> int:
        """Tokens trained on (labels not -100: the overlap context left out) after ``global_step`` optimizer
        steps, counted in the run's drawing order (all processes together)."""
        return sum(train_ds.drawn(self.windows_drawn(global_step))[1])


@dataclass
class Built:
    """The Trainer and what watches it (:meth:`TrainRun.build_trainer`)."""

    trainer: Any  #: :class:`~qckit.train.trainer.QckitTrainer`
    callback: Any  #: :class:`~qckit.train.callback.QckitCallback`
    progress: Any  #: :class:`~qckit.train.callback.TrainProgress`: before/after numbers, timings
    samples: Any = None  #: :class:`qckit.train.samples.SampleLog` when train.sample_prompts are set
    writer: Any = None  #: TensorBoard's ``SummaryWriter`` (rank 0 with report_to tensorboard)


class TrainRun:
    """One run of the train stage (see the module docstring for the phases).

    Each phase returns its result (:class:`Checked`, :class:`Data`, :class:`LoadedModel`,
    :class:`Arguments`, :class:`Plan`, :class:`Built`) and takes the earlier results it reads as
    arguments; :meth:`run` shows the order. After :meth:`run`, ``tokenizer``, ``train_ds``,
    ``vocab_growth``, ``model``, ``plan`` and ``trainer`` give a look inside (tests, benches).
    """

    def __init__(
        self,
        settings: TrainSettings,
        chunker: Any,
        adapters: Sequence[Any],
        *,
        observer: Observer | None = None,
        recipe_text: str | None = None,
        eval_sets: Sequence[Any] | None = None,
    ) -> None:
        self.settings = settings
        #: the named eval sets (None: the validation file's, resolved by check)
        self.eval_sets: list[Any] | None = list(eval_sets) if eval_sets is not None else None
        self.chunker = chunker
        self.adapters = list(adapters)
        self.adapter_names = [a.name for a in self.adapters]
        self.observer = observer or NullObserver()
        self.recipe_text = recipe_text
        self.output_dir = Path(settings.output_dir)
        self.sources = settings.sources()
        self.val_path: Path | None = Path(settings.val_file) if settings.val_file else None
        #: the observer the phases report to, keeping the warnings for the summary (check silences the
        #: other ranks)
        self.obs: _WarningsKept = _WarningsKept(self.observer)
        #: MLflow / W&B runs (main process only), owned here so that a failed phase still ends them
        self.trackers: list[Any] = []
        self._data: Data | None = None
        self._loaded: LoadedModel | None = None
        self._plan: Plan | None = None
        self._built: Built | None = None

    @property
    def trains_base_model(self) -> bool:
        """Whether the base model's own weights train (no adapter freezes them: a full fine-tune)."""
        return not any(ability(a, ModelAdapter, "freezes_base_model") for a in self.adapters)

    @property
    def adapter_notes(self) -> list[str]:
        """The adapters' remarks for the reports (complete once the Trainer's arguments are built)."""
        return [note for adapter in self.adapters for note in ability(adapter, ModelAdapter, "notes")]

    @property
    def shards_model(self) -> bool:
        """Whether an adapter has the Trainer shard the model across processes (FSDP)."""
        return any(ability(a, ModelAdapter, "shards_model") for a in self.adapters)

    def run(self) -> TrainResult:
        checked = self.check()
        with _quiet_transformers():
            try:
                data = self._data = self.data(checked)
                loaded = self._loaded = self.load_model(checked, data)
                arguments = self.arguments(checked, loaded)
                plan = self._plan = self.inspect(checked, data, loaded, arguments)
                built = self._built = self.build_trainer(checked, data, loaded, arguments, plan)
                output = self.train(built, checked.resume)
                return self.summary(checked, data, loaded, arguments, plan, built, output)
            except BaseException as exc:  # the trackers' runs end as failed (or killed), not left open
                self._close_trackers("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
                raise

    # -- after run(): a look inside ---------------------------------------------------------------

    @property
    def tokenizer(self) -> Any:
        return _done(self._data).tokenizer

    @property
    def train_ds(self) -> Any:
        return _done(self._data).train_ds

    @property
    def vocab_growth(self) -> Any:
        return _done(self._data).vocab_growth

    @property
    def model(self) -> Any:
        return _done(self._loaded).model

    @property
    def plan(self) -> Plan:
        return _done(self._plan)

    @property
    def trainer(self) -> Any:
        return _done(self._built).trainer

    # -- phases -----------------------------------------------------------------------------------

    def check(self) -> Checked:
        """Everything that can be refused before anything heavy is loaded (hardware, files, resume)."""
        settings = self.settings
        if not self.sources:
            raise RecipeError(
                "no training file: set train.train_file (or --train_file), or list [[train.data]] sources",
                key="train.train_file",
            )
        from qckit.hardware import choose_precision, detect_environment, precision_warnings

        env = detect_environment(settings.device)
        self.obs = _WarningsKept(self.observer if env.is_main_process else NullObserver())
        for adapter in self.adapters:
            adapter.check(env, self.adapter_names)
        precision = choose_precision(env, settings.precision)
        for message in precision_warnings(env, precision):
            self.obs.warn(message)
        from qckit.train.tracking import check_trackers

        check_trackers(settings.report_to)
        eval_sets = self.eval_sets
        if eval_sets is None:
            from qckit.evaluate.sets import validation_set

            found = validation_set(settings)
            eval_sets = [found] if found is not None else []
        checked_train_inputs(settings, eval_sets)
        if settings.trust_remote_code:
            self.obs.warn(
                f"trust_remote_code = true: Python code shipped with the model {settings.model} will run on this "
                f"machine"
            )
        new_words = self._check_new_words()
        return Checked(env, precision, eval_sets, new_words, self.resume_point(eval_sets, env))

    def resume_point(self, eval_sets: list[Any], env: Any) -> ResumePoint:
        """The run's fingerprint, and what to do with the checkpoints already in ``output_dir``: resume
        from the newest complete one of this same run, clear them (``overwrite_output_dir``), or refuse."""
        settings = self.settings
        checkpoints.check_output_dir(self.output_dir, settings.model, overwrite=settings.overwrite_output_dir)
        point = ResumePoint(
            checkpoints.fingerprint(
                settings,
                self.sources,
                checkpoints.component_settings(self.chunker),
                [checkpoints.component_settings(a) for a in self.adapters],
                checkpoints.evaluation_identity(eval_sets),
                checkpoints.batch_geometry(settings, env),
            )
        )
        if settings.overwrite_output_dir:  # the earlier run's outputs go in build_trainer
            return point
        if not settings.resume:
            checkpoints.refuse_fresh_run(self.output_dir)
            return point
        chosen = checkpoints.choose_checkpoint(
            self.output_dir,
            point.fingerprint,
            allow_pickle=settings.allow_pickle_weights,
            warn=self.obs.warn,
        )
        if chosen is None:
            self.obs.warn(
                f"resume: no checkpoint-* directory in {self.output_dir}; starting from the beginning"
            )
            return point
        path, marker, point.debris = chosen
        point.resume_from = str(path)
        point.baseline = marker.get("baseline")
        if point.baseline is None and eval_sets and settings.evaluate_before:
            self.obs.warn(
                f"{path.name} records no baseline held-out numbers (the run that wrote it did not measure them): "
                f"before/after are not reported"
            )
        return point

    def _check_new_words(self) -> list[str]:
        """Read ``train.add_tokens``; refuse it when an adapter freezes the embeddings (new rows would never learn)."""
        if not self.settings.add_tokens:
            return []
        from qckit.vocab import read_token_list

        new_words = read_token_list(self.settings.add_tokens)
        frozen = [
            a.name
            for a in self.adapters
            if ability(a, ModelAdapter, "freezes_base_model")
            and not ability(a, ModelAdapter, "trains_embeddings")
        ]
        if new_words and frozen:
            raise RecipeError(
                f"new tokens need trainable embeddings, but the {frozen[0]} adapter freezes them: set "
                f"train_embeddings = true on it (their rows would stay at their initial values)",
                key="train.add_tokens",
            )
        return new_words

    def data(self, checked: Checked) -> Data:
        """The tokenizer, the packed windows of every source mixed by share (rank 0 fills the caches
        first), the validation texts and the eval sets (read and tokenized once)."""
        from transformers import set_seed

        from qckit.documents import iter_documents
        from qckit.models import load_tokenizer, resolve_model
        from qckit.train.mixing import MixedDataset

        settings = self.settings
        set_seed(settings.seed)
        model_source = resolve_model(settings.model)
        loading = "loading the tokenizer"
        if model_source.kind == "gguf":  # loading its tokenizer fills the GGUF cache: a first run's long step
            loading += " (a GGUF model is dequantized on first use, then cached)"
        with phase(self.obs, loading):
            tokenizer = load_tokenizer(model_source, trust_remote_code=settings.trust_remote_code)
        base_tokenizer = tokenizer
        vocab_growth = fertility_before = None
        if checked.new_words:
            from qckit.vocab import grow_tokenizer

            tokenizer, vocab_growth = grow_tokenizer(base_tokenizer, checked.new_words)
        cache_dir = Path(settings.cache_dir) if settings.cache_dir else self.output_dir / CACHE_DIR
        with _main_process_first(checked.env):
            packed = [
                _pack(Path(source.path), tokenizer, self.chunker, cache_dir, self.obs)
                for source in self.sources
            ]
        decay = (settings.decay_source, settings.decay_share) if settings.decay_source else None
        train_ds = MixedDataset(self.sources, packed, settings.seed, decay=decay)
        if vocab_growth is not None:
            from qckit.vocab import fertility

            corpus = (text for source in self.sources for _, text in iter_documents(source.path))
            fertility_before = fertility(base_tokenizer, corpus)
        val_texts = None
        if self.val_path is not None:
            val_texts = [text for _, text in iter_documents(self.val_path)]
            if not val_texts:
                raise InputError(self.val_path, "the validation file has no documents (every line is blank)")
        else:
            self.obs.warn(
                "no validation file (val_file / --val_file): held-out perplexity and bits-per-byte are not "
                "measured; the training loss is not a held-out measure"
            )
        from qckit.evaluate.loglik import EvalContext
        from qckit.evaluate.sets import EvalSuite

        # every eval set is read and tokenized once, now; build_trainer sets the evaluation window and device
        suite = EvalSuite(checked.eval_sets, EvalContext(tokenizer, observer=self.obs))
        return Data(model_source, tokenizer, train_ds, val_texts, suite, vocab_growth, fertility_before)

    def load_model(self, checked: Checked, data: Data) -> LoadedModel:
        """Load the model as the adapters ask, check the windows fit its context, and wrap it."""
        from qckit.hardware import model_dtype
        from qckit.models import count_parameters, load_model, upcast_trainable

        settings, env = self.settings, checked.env
        trains_base = self.trains_base_model
        load_kwargs: dict[str, Any] = {}
        for adapter in self.adapters:
            adapter.load_kwargs(load_kwargs, env)
        dtype = load_kwargs.pop("dtype", None) or model_dtype(
            checked.precision, trains_base_weights=trains_base
        )
        if data.source.kind != "gguf" and not settings.allow_pickle_weights:
            load_kwargs.setdefault("use_safetensors", True)  # pickle weights can run code when loaded
        if settings.attn_implementation:
            load_kwargs.setdefault("attn_implementation", settings.attn_implementation)
        # every adapter that has the ability is asked (each records its decision): all must let this process read
        answers = [
            loads(load_kwargs, env)
            for loads in (ability(a, ModelAdapter, "loads_weights") for a in self.adapters)
            if loads is not None
        ]
        with phase(self.obs, f"loading model {data.source.display}"):
            model = load_model(
                data.source,
                dtype=dtype,
                trust_remote_code=settings.trust_remote_code,
                extra_kwargs=load_kwargs,
                weights=all(answers),
            )
        if data.vocab_growth is not None:
            from qckit.vocab import grow_embeddings

            grow_embeddings(model, data.vocab_growth)  # before wrapping: peft copies what it trains
        base_config = copy.deepcopy(model.config)
        for adapter in self.adapters:
            edit = ability(adapter, ModelAdapter, "base_model_config")
            if edit is not None:
                edit(base_config)
        seq_length = data.train_ds.seq_length
        max_positions = getattr(model.config, "max_position_embeddings", None)
        window = int(ability(self.chunker, Chunker, "max_length") or seq_length)
        if max_positions and seq_length > max_positions:
            raise RecipeError(
                f"training windows of {seq_length} tokens exceed the model's context "
                f"(max_position_embeddings = {max_positions}); lower max_length",
                key="train.chunker.max_length",
            )
        eval_max_length = settings.eval_max_length or window
        if max_positions:
            eval_max_length = min(eval_max_length, int(max_positions))
        if getattr(model, "config", None) is not None:
            model.config.use_cache = False
        for adapter in self.adapters:
            model = adapter.wrap_model(model, env)
        upcast_trainable(model)  # fp32 master weights for the optimizer whatever the base's dtype
        trainable, total = count_parameters(model)
        if trainable == 0:
            raise QckitError(
                f"the model has no trainable parameters after the adapters {self.adapter_names or '(none)'}"
            )
        return LoadedModel(model, base_config, window, eval_max_length, trainable, total)

    def arguments(self, checked: Checked, loaded: LoadedModel) -> Arguments:
        """``TrainingArguments`` from the settings, edited by the adapters; gradient checkpointing turned on."""
        from transformers import TrainingArguments

        from qckit.hardware import trainer_precision_kwargs
        from qckit.models import enable_gradient_checkpointing

        settings, env = self.settings, checked.env
        kwargs: dict[str, Any] = dict(
            output_dir=str(self.output_dir),
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
            eval_strategy="no",  # held-out evaluation is qckit's own (the eval suite), run by the callback
            report_to="none",  # TensorBoard is attached explicitly by build_trainer, writing into logs/
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
            **trainer_precision_kwargs(checked.precision),
        )
        # Checkpointing contract with the adapters: they see the request and may take it over (fsdp uses its
        # own); if it is still there afterwards, qckit turns it on the peft-safe way on the wrapped model.
        checkpointing = self._checkpointing(checked, loaded)
        kwargs["activation_checkpointing"] = checkpointing.enabled
        for adapter in self.adapters:
            adapter.training_args(kwargs, loaded.model, env)
        if kwargs.pop("activation_checkpointing", False):
            enable_gradient_checkpointing(loaded.model)
        kwargs["activation_checkpointing"] = False
        try:
            args = TrainingArguments(**kwargs)
        except ValueError as exc:
            detail = " ".join(str(exc).split())[:400]
            if settings.optimizer in detail:
                raise RecipeError(f"unknown optimizer: {detail}", key="train.optimizer") from None
            raise QckitError(f"invalid training arguments: {detail}") from None
        world_size = max(int(args.world_size), 1)
        if world_size != env.world_size:
            raise HardwareError(
                f"{env.world_size} processes were launched but the Trainer set up {world_size} (no "
                f"distributed training on {env.device}); each process would train alone"
            )
        return Arguments(args, world_size, checkpointing)

    def _checkpointing(self, checked: Checked, loaded: LoadedModel) -> Any:
        """``train.gradient_checkpointing`` decided for this model and machine (``auto``: from the memory estimate)."""
        from qckit.models import unwrap_model
        from qckit.train.activations import choose_gradient_checkpointing, memory_method

        return choose_gradient_checkpointing(
            self.settings.gradient_checkpointing,
            checked.env,
            loaded.base_config,
            method=memory_method(loaded.model, self.trains_base_model),
            precision=checked.precision,
            batch_size=self.settings.batch_size,
            window=loaded.window,
            lora_r=next((int(a.r) for a in self.adapters if isinstance(getattr(a, "r", None), int)), 16),
            supported=bool(getattr(unwrap_model(loaded.model), "supports_gradient_checkpointing", False)),
        )

    def inspect(self, checked: Checked, data: Data, loaded: LoadedModel, arguments: Arguments) -> Plan:
        """Optimizer steps (and WSD's decay phase), device placement, and the inspection report with a
        measured time estimate."""
        settings, args, train_ds = self.settings, arguments.args, data.train_ds
        # one process driving several GPUs (torch DataParallel) splits a batch of batch_size x n_gpu
        step_batch = settings.batch_size * max(int(getattr(args, "n_gpu", 1) or 1), 1)
        steps = estimate_optimizer_steps(
            len(train_ds),
            step_batch,
            settings.gradient_accumulation_steps,
            settings.num_epochs,
            arguments.world_size,
            settings.max_steps,
        )
        model = loaded.model
        placed = getattr(model, "hf_device_map", None) is None and not getattr(model, "is_quantized", False)
        plan = Plan(
            steps,
            step_batch,
            settings.gradient_accumulation_steps,
            arguments.world_size,
            len(train_ds),
            placed,
        )
        if settings.lr_scheduler == WSD:  # its decay steps, and the decay phase's windows for its own mix
            args.lr_scheduler_kwargs = settings.scheduler_kwargs(steps)
            decay_from = steps - settings.decay_steps(steps)
            train_ds.set_decay(plan.windows_drawn(decay_from), plan.windows_drawn(steps))
        if placed and not self.shards_model:
            model.to(args.device)
        if self.isolates_documents and not self.shards_model:  # a sharded model: when training begins
            from qckit.train.isolation import check_document_isolation

            with phase(self.obs, "checking document isolation"):
                check_document_isolation(model, **self._isolation_kwargs(data, checked))
        if not settings.inspect_data:
            return plan
        report = inspection(
            settings,
            train_ds,
            data.tokenizer,
            len(data.val_texts) if data.val_texts is not None else None,
            steps=steps,
            world_size=arguments.world_size,
            step_batch=step_batch,
            trainable=loaded.trainable,
            total=loaded.total,
            precision=checked.precision,
            device=checked.env.describe(),
            adapters=self.adapter_names,
            window=loaded.window,
            sources=train_ds.source_report(),
            vocabulary=data.vocabulary(),
        )
        report["gradient_checkpointing"] = arguments.checkpointing.line()
        if self.adapter_notes:
            report["adapter_notes"] = "; ".join(self.adapter_notes)
        report.update(self._time_estimate(checked, data, loaded, args, plan))
        plan.inspection = report
        self.obs.report("inspection", report)
        return plan

    def _time_estimate(
        self, checked: Checked, data: Data, loaded: LoadedModel, args: Any, plan: Plan
    ) -> dict[str, Any]:
        """The inspection's training time estimate, from a few timed forward+backward passes."""
        settings = self.settings
        report: dict[str, Any] = {}
        seconds = None
        if settings.timing_warmup_steps > 0 and not self.shards_model and plan.placed:
            with phase(self.obs, f"timing {settings.timing_warmup_steps} forward+backward passes"):
                seconds = measure_pass_seconds(
                    loaded.model,
                    data.train_ds,
                    settings.batch_size,
                    settings.timing_warmup_steps,
                    args.device,
                    checked.precision,
                )
        if seconds is not None:
            remaining = plan.steps
            resume_from = checked.resume.resume_from
            if resume_from is not None:
                remaining = max(plan.steps - _checkpoint_step(resume_from), 0)
            accumulation = settings.gradient_accumulation_steps
            estimate = seconds * accumulation * remaining
            report["seconds_per_micro_batch"] = seconds
            report["estimated_train_time_s"] = estimate
            report["estimated_train_time"] = (
                f"~{human_seconds(estimate)} (estimate: {remaining} steps x {accumulation} micro-batches x "
                f"{seconds:.3g} s, the median of {settings.timing_warmup_steps} timed forward+backward passes; "
                f"excludes optimizer steps, evaluation and checkpoints)"
            )
        else:
            report["estimated_train_time"] = "not measured" + (" under FSDP" if self.shards_model else "")
        return report

    @property
    def isolates_documents(self) -> bool:
        """Whether the chunker packs documents with ``attention = "document"`` (checked before training)."""
        return ability(self.chunker, Chunker, "attention") == "document"

    def _isolation_kwargs(self, data: Data, checked: Checked) -> dict[str, Any]:
        """The isolation check's batch ids and the Trainer's autocast dtype (the run's precision)."""
        from qckit.hardware import autocast_dtype

        tokenizer = data.tokenizer
        return {
            "eos_id": tokenizer.eos_token_id,
            "pad_id": tokenizer.pad_token_id,
            "autocast": autocast_dtype(checked.precision),
        }

    def build_trainer(
        self, checked: Checked, data: Data, loaded: LoadedModel, arguments: Arguments, plan: Plan
    ) -> Built:
        """The Trainer with qckit's callback and the trackers (TensorBoard into ``<output_dir>/logs``,
        MLflow, W&B), over an output directory cleared of an earlier run's leftovers."""
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        from qckit.evaluate.loglik import EvalContext
        from qckit.train.callback import QckitCallback, TrainProgress
        from qckit.train.packing import window_collator
        from qckit.train.trainer import QckitTrainer

        settings, env, args = self.settings, checked.env, arguments.args
        self._clear_leftovers(env, checked.resume.debris)
        data.suite.context = EvalContext(
            data.tokenizer,
            max_length=loaded.eval_max_length,
            batch_size=settings.eval_batch_size or settings.batch_size,
            device=args.device,
            observer=self.obs,
        )
        progress = TrainProgress()
        samples = None
        if settings.sample_prompts:
            from qckit.train.samples import SampleLog

            samples = SampleLog(
                settings.sample_prompts, data.tokenizer, settings.sample_max_new_tokens, self.obs
            )
        callback = QckitCallback(
            progress,
            data.suite,
            self.obs,
            eval_steps=settings.eval_steps,
            evaluate_before=settings.evaluate_before,
            adapters=self.adapters,
            fingerprint=checked.resume.fingerprint,
            resumed_baseline=checked.resume.baseline,
            is_main_process=env.is_main_process,
            samples=samples,
            trained_tokens=functools.partial(plan.trained_tokens, data.train_ds),
        )
        collator = window_collator(loaded.model)  # flattened for flash kernels, else the padded windows
        gpus = int(getattr(args, "n_gpu", 1) or 1)
        if collator.flatten and gpus > 1:  # DataParallel scatters rows, and a flattened batch has one
            raise HardwareError(
                f"{loaded.model.config._attn_implementation} trains on one flattened row per micro-batch, which "
                f"torch DataParallel cannot split over {gpus} GPUs; launch one process per GPU (torchrun)"
            )
        writer, tracking = self._tracker_callbacks(env, checked.resume.resume_from)
        callbacks = [callback, *tracking]
        if self.isolates_documents and self.shards_model:  # placed by the Trainer: checked on its model
            from qckit.train.isolation import DocumentIsolationCallback

            callbacks.insert(0, DocumentIsolationCallback(**self._isolation_kwargs(data, checked)))
        trainer = QckitTrainer(  # its create_optimizer asks the adapters for parameter groups
            model=loaded.model,
            args=args,
            train_dataset=data.train_ds,
            data_collator=collator,
            processing_class=data.tokenizer,
            callbacks=callbacks,
            adapters=self.adapters,
            planned_steps=plan.steps if settings.lr_scheduler == WSD else None,
            max_skipped_steps=settings.max_skipped_steps,
        )
        if samples is not None and env.is_main_process:
            samples.sinks.extend(self._sample_sinks(writer))
        trainer.remove_callback(PrinterCallback)  # library code never prints
        trainer.remove_callback(ProgressCallback)
        callback.trainer = trainer
        return Built(trainer, callback, progress, samples, writer)

    def _clear_leftovers(self, env: Any, debris: Sequence[Path]) -> None:
        """``overwrite_output_dir``: an earlier run's outputs go; a resume: the broken newer checkpoints go.
        Rank 0 alone removes them; the other ranks wait for it (they would race on the same files)."""
        with _main_process_first(env):
            if not env.is_main_process:
                return
            if self.settings.overwrite_output_dir:
                removed = checkpoints.clear_output_dir(self.output_dir)
                if removed:
                    self.obs.warn(
                        f"overwrite_output_dir: removed {', '.join(removed)} of an earlier run from "
                        f"{self.output_dir}"
                    )
            for checkpoint in debris:  # the resumed run writes these steps again
                remove_entry(checkpoint.parent, checkpoint.name)

    def _tracker_callbacks(self, env: Any, resume_from: str | None) -> tuple[Any, list[Any]]:
        """TensorBoard's writer, and the callbacks of TensorBoard and of the MLflow / W&B runs ``report_to``
        asks for (rank 0 only: ``(None, [])`` on the others)."""
        settings = self.settings
        writer = None
        if not env.is_main_process:
            return writer, []
        from qckit.train.tracking import flat_params, make_trackers, tracker_callback

        callbacks: list[Any] = []
        if "tensorboard" in settings.report_to:
            from torch.utils.tensorboard import SummaryWriter

            from qckit.train.callback import eval_sets_tensorboard

            writer = SummaryWriter(log_dir=str(self.output_dir / LOGS_DIR))
            callbacks.append(eval_sets_tensorboard(writer))
        params = flat_params(
            {
                "settings": dataclasses.asdict(settings),
                "chunker": checkpoints.component_settings(self.chunker),
                "adapters": [checkpoints.component_settings(a) for a in self.adapters],
            }
        )
        tags = {"qckit_version": __version__, "model": settings.model}
        if resume_from:
            tags["resumed_from"] = resume_from
        for tracker in make_trackers(
            settings.report_to,
            output_dir=self.output_dir,
            tracking_uri=settings.tracking_uri,
            project=settings.tracking_project,
            run_name=self.output_dir.resolve().name,
            params=params,
            tags=tags,
        ):
            self.trackers.append(tracker)  # kept as built: closed by run() if a later one fails
        if self.trackers:
            callbacks.append(tracker_callback(self.trackers))
        return writer, callbacks

    def _sample_sinks(self, writer: Any) -> list[Any]:
        """Where sample completions are logged besides the report: TensorBoard's text tab, the trackers."""
        from qckit.train.samples import samples_markdown

        sinks: list[Any] = []
        if writer is not None:

            def to_tensorboard(step: int, rows: list[dict[str, str]]) -> None:
                writer.add_text("samples", samples_markdown(rows), step)
                writer.flush()

            sinks.append(to_tensorboard)
        sinks += [tracker.log_samples for tracker in self.trackers]
        return sinks

    def train(self, built: Built, resume: ResumePoint) -> Any:
        """``trainer.train()`` from the resume point; its ``TrainOutput``."""
        try:
            return built.trainer.train(resume_from_checkpoint=resume.resume_from)
        finally:
            built.callback.close_task()
            if built.writer is not None:
                built.writer.close()

    def summary(
        self,
        checked: Checked,
        data: Data,
        loaded: LoadedModel,
        arguments: Arguments,
        plan: Plan,
        built: Built,
        output: Any,
    ) -> TrainResult:
        """Save the model and the state; on rank 0 also the summary, the recipe and the merged model."""
        trainer, progress, output_dir = built.trainer, built.progress, self.output_dir
        with phase(self.obs, f"saving the model into {output_dir}"):
            trainer.save_model(str(output_dir))
            if checked.env.is_main_process:
                follow_umask(output_dir.glob("*.safetensors"))  # safetensors writes them 0600
            trainer.save_state()
        state = trainer.state
        result = TrainResult(
            output_dir=output_dir,
            summary={},
            global_step=state.global_step,
            eval_before=progress.eval_before,
            eval_after=progress.eval_after,
            eval_history=progress.eval_history,
        )
        if not checked.env.is_main_process:
            return result
        is_peft = hasattr(trainer.model, "peft_config")
        merged_dir = self._save_beside_the_adapter(checked.precision, loaded.base_config, is_peft)
        summary = self._summary_data(checked, data, loaded, arguments, plan, built, output, merged_dir)
        summary_path = output_dir / SUMMARY_NAME
        atomic_write_json(summary_path, summary)
        if self.recipe_text is not None:
            atomic_write_text(output_dir / RECIPE_NAME, self.recipe_text)
        from qckit.model_card import model_card

        card = model_card(summary, self.recipe_text, is_peft=is_peft)
        atomic_write_text(output_dir / CARD_NAME, card)
        # the card's hash: a later `qckit select` rewrites the card only while nobody has edited it
        summary["model_card"] = {
            "file": CARD_NAME,
            "sha256": hashlib.sha256(card.encode("utf-8")).hexdigest(),
        }
        atomic_write_json(summary_path, summary)
        self._close_trackers("FINISHED", [summary_path, output_dir / RECIPE_NAME, output_dir / CARD_NAME])
        self.obs.report("summary", summary)
        if self.settings.select is not None:
            summary = self._select(loaded.eval_max_length, arguments.args.device) or summary
        result.summary = summary
        result.summary_path = summary_path
        result.merged_dir = merged_dir
        return result

    def _select(self, max_length: int, device: Any) -> dict[str, Any] | None:
        """``[train.select]``: choose the strength and checkpoint now (:mod:`qckit.select`); the summary after."""
        if self.recipe_text is None:
            self.obs.warn(
                "train.select: the run has no recipe to read its eval sets from; run qckit select later"
            )
            return None
        from qckit.select import clear_selected, record_selection, select_run, write_selected

        chosen = self.settings.select
        assert chosen is not None  # run() calls this only with [train.select]
        selection = select_run(
            self.output_dir,
            strengths=chosen.strengths,
            checkpoints=chosen.checkpoints,
            observer=self.obs,
            max_length=max_length,
            device=device,
        )
        written = None
        if selection["chosen"] is None:
            clear_selected(self.output_dir, self.output_dir / SELECTED_DIR)
        else:
            point = selection["chosen"]
            written = write_selected(
                self.output_dir, point["checkpoint"], point["strength"], self.output_dir / SELECTED_DIR
            )
        record_selection(self.output_dir, selection, written, self.obs)
        self.obs.report("selection", selection)
        return json.loads((self.output_dir / SUMMARY_NAME).read_text(encoding="utf-8"))

    def _save_beside_the_adapter(self, precision: str, base_config: Any, is_peft: bool) -> Path | None:
        """A peft run: the base model's config.json beside the adapter, and the merged model when asked."""
        settings, output_dir = self.settings, self.output_dir
        if is_peft:
            from qckit.models import set_adapter_base, shareable_reference

            base_config.use_cache = True
            base_config.save_pretrained(str(output_dir))
            # peft recorded the path the base was loaded from: for a GGUF, this machine's cache
            set_adapter_base(output_dir, shareable_reference(settings.model))
        if not settings.export_merged:
            return None
        if not is_peft:
            self.obs.warn(
                f"export_merged: no LoRA adapter to merge; {output_dir} already holds the full model"
            )
            return None
        from qckit.models import merge_and_export

        with phase(self.obs, f"merging the adapter into {output_dir / MERGED_DIR}"):
            return merge_and_export(
                settings.model,
                output_dir,
                output_dir / MERGED_DIR,
                dtype=precision,
                trust_remote_code=settings.trust_remote_code,
            )

    def _summary_data(
        self,
        checked: Checked,
        data: Data,
        loaded: LoadedModel,
        arguments: Arguments,
        plan: Plan,
        built: Built,
        output: Any,
        merged_dir: Path | None,
    ) -> dict[str, Any]:
        """The content of ``training_summary.json``."""
        settings, state, progress = self.settings, built.trainer.state, built.progress
        output_dir = self.output_dir
        now = time.perf_counter()
        train_seconds = (progress.train_ended or now) - (progress.train_started or now)
        compute_seconds = max(train_seconds - progress.eval_seconds_in_train, 1e-9)
        tokens_this_run = state.num_input_tokens_seen - progress.tokens_at_start
        trained_this_run = plan.trained_tokens(data.train_ds, state.global_step) - progress.trained_at_start
        final_loss = next((h["loss"] for h in reversed(state.log_history) if "loss" in h), None)
        train_loss = output.training_loss
        from qckit.evaluate.sets import breaches, outcome

        eval_sets = outcome(data.suite.describe(), progress.eval_before, progress.eval_after)
        summary: dict[str, Any] = {
            "qckit_version": __version__,
            "model": settings.model,
            "adapters": self.adapter_names,
            "adapter_settings": [checkpoints.component_settings(a) for a in self.adapters],
            "adapter_notes": self.adapter_notes,
            "chunker": checkpoints.component_settings(self.chunker),
            "precision": checked.precision,
            "device": checked.env.describe(),
            "world_size": arguments.world_size,
            "gradient_checkpointing": arguments.checkpointing.line(),
            "train_file": settings.train_file or None,
            "sources": data.train_ds.source_report(plan.windows_drawn(state.global_step)),
            "val_file": str(self.val_path) if self.val_path else None,
            "output_dir": str(output_dir),
            "resumed_from": checked.resume.resume_from,
            "global_step": state.global_step,
            "max_steps": state.max_steps,
            "epochs": state.epoch,
            "train_loss": train_loss,
            "final_logged_train_loss": final_loss,
            "train_loss_ppl": math.exp(train_loss) if train_loss < 700 else math.inf,
            "eval_before": progress.eval_before,
            "eval_after": progress.eval_after,
            "eval_delta": _deltas(progress.eval_before, progress.eval_after),
            "eval_sets": eval_sets,
            "retain_breaches": breaches(eval_sets),
            "eval_history": progress.eval_history,
            "samples": built.samples.history if built.samples is not None else [],
            "tokens_seen": state.num_input_tokens_seen,
            "tokens_seen_this_run": tokens_this_run,
            "windows": len(data.train_ds),  # per epoch
            "train_runtime_s": train_seconds,
            "eval_runtime_s": data.suite.seconds,
            "trained_tokens_this_run": trained_this_run,
            # trained tokens (what the loss learns from); the context tokens also count the overlap context
            "tokens_per_s": trained_this_run / compute_seconds,
            "context_tokens_per_s": tokens_this_run / compute_seconds,
            "skipped_steps": built.trainer.skipped_steps,  # fp16: steps the loss scaler skipped (overflow)
            "trainable_parameters": loaded.trainable,
            "total_parameters": loaded.total,
            "packing": data.train_ds.summary(),
            "vocabulary": data.vocabulary(with_tokens=True),
            "estimated_train_time_s": (plan.inspection or {}).get("estimated_train_time_s"),
            "merged_dir": str(merged_dir) if merged_dir else None,
            "settings": dataclasses.asdict(settings),
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        if self.val_path is None:
            summary["note"] = "no val_file: held-out perplexity and bits-per-byte were not measured"
        for name in summary["retain_breaches"]:
            entry = eval_sets[name]
            unit = "%" if entry["regression_unit"] == "relative" else " points"
            self.obs.warn(
                f"retain set {name} regressed by {entry['regression'] * 100:.2f}{unit} of {entry['metric']}, "
                f"more than the {entry['max_regression'] * 100:g}{unit} it allows (forgetting)"
            )
        if summary["skipped_steps"]:
            self.obs.warn(
                f"fp16: the loss scaler skipped {summary['skipped_steps']} of {state.global_step} optimizer steps "
                f"(overflowing gradients); they did not update the weights"
            )
        summary["warnings"] = list(self.obs.warnings)
        return summary

    def _close_trackers(self, status: str, artifacts: Sequence[Path] = ()) -> None:
        """End every tracker's run with ``status``; a ``finish`` that raises is a warning (on the error path it
        would hide the error that ended the run; on success the trained model is already written)."""
        trackers, self.trackers = self.trackers, []
        for tracker in trackers:
            try:
                tracker.finish(status, artifacts)
            except Exception as exc:
                detail = " ".join(str(exc).split())[:200]
                self.obs.warn(
                    f"{type(tracker).__name__}: could not end its run as {status} ({type(exc).__name__}: {detail})"
                )


# -- helpers ---------------------------------------------------------------------------------------


def _done(result: Any) -> Any:
    """A phase's result after :meth:`TrainRun.run` got that far; an error before."""
    if result is None:
        raise AttributeError("the run has not reached this phase (call run() first)")
    return result


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


def checked_train_inputs(
    settings: TrainSettings, eval_sets: Sequence[Any], produced: Collection[Path] = ()
) -> Any:
    """The train stage's files and model, checked before anything is loaded (``qckit run --check`` too):
    every training source, the validation file and each eval set's file a regular file (except the
    absolute paths in ``produced``, which an earlier stage writes); the model an existing local model or
    a hub id usable here (offline-aware, one fast request: :mod:`qckit.hub`). Returns the
    :class:`~qckit.models.ModelSource`; else one :class:`InputError` naming the first problem."""
    from qckit.models import resolve_model

    def require_file(path: Path, missing: str, prefix: str = "") -> None:
        if not path.is_file() and path.absolute() not in produced:
            raise InputError(path, missing if not path.exists() else f"{prefix}not a file")

    for source in settings.sources():
        require_file(Path(source.path), "training file not found")
    if settings.val_file:
        require_file(Path(settings.val_file), "validation file not found")
    for eval_set in eval_sets:
        prefix = f"eval set {eval_set.name}: "
        require_file(Path(eval_set.settings.path), f"{prefix}file not found", prefix)
    model = resolve_model(settings.model)
    if not settings.allow_pickle_weights:
        _refuse_pickle_only(model)
    model.pretrained_kwargs()  # a hub id: offline and not cached, or the Hub unreachable, refused now
    return model


def _refuse_pickle_only(source: Any) -> None:
    """A local model with pickle-format weights only is refused unless the recipe allows them."""
    root = Path(source.path_or_id)
    if source.kind == "dir" and not list(root.glob("*.safetensors")) and list(root.glob("*.bin")):
        raise InputError(
            source.display,
            "the model's weights are pickle-format files (*.bin), which can run code when loaded; convert them "
            "to safetensors, or set train.allow_pickle_weights = true if you trust them",
        )


def _pack(path: Path, tokenizer: Any, chunker: Any, cache_dir: Path, obs: Observer) -> Any:
    from qckit.train.packing import pack_file

    try:
        return pack_file(path, tokenizer, chunker, cache_dir=cache_dir, observer=obs)
    except InputError as exc:
        if exc.detail.startswith("no training windows"):
            max_length = ability(chunker, Chunker, "max_length")
            hint = (
                f"lower train.chunker.max_length (now {max_length}) or min_length"
                if max_length
                else "change the chunker's settings"
            )
            raise InputError(path, f"{exc.detail}; {hint} (--max_length), or train on more text") from None
        raise


def _deltas(
    before: dict[str, dict[str, Any]] | None, after: dict[str, dict[str, Any]] | None
) -> dict[str, dict[str, float]] | None:
    """After minus before (and in percent of before) for each set measured both times."""
    if not before or not after:
        return None
    out: dict[str, dict[str, float]] = {}
    for name in [n for n in before if n in after]:
        deltas: dict[str, float] = {}
        for key in ("loss", "perplexity", "bits_per_byte"):
            b, a = before[name].get(key), after[name].get(key)
            if isinstance(a, (int, float)) and isinstance(b, (int, float)):
                deltas[key] = a - b
                if b and math.isfinite(b):
                    deltas[f"{key}_pct"] = (a - b) / b * 100
        out[name] = deltas
    return out


def _checkpoint_step(path: str) -> int:
    try:
        return int(Path(path).name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return 0
