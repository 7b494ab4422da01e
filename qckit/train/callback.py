"""The Trainer callback: progress to the observer, held-out evaluation before/during/after, adapter checks.

Imported only when a run builds its Trainer (it imports transformers).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from qckit.components import ModelAdapter, ability
from qckit.evaluate.sets import EvalSuite, logged_scalars
from qckit.outputs import CHECKPOINT_PREFIX, is_scalar_key
from qckit.progress import Observer

__all__ = ["QckitCallback", "TrainProgress", "eval_sets_tensorboard"]


def eval_sets_tensorboard(writer: Any) -> Any:
    """A ``TensorBoardCallback`` writing into ``writer`` that gives each eval set its own scalar group.

    Held-out numbers are logged as ``eval_<set>/<protocol>/<key>`` (:func:`qckit.outputs.scalar_key`);
    the stock callback would rename them all ``eval/…``, one group for every set. These keep their name.
    """
    from transformers.integrations import TensorBoardCallback

    class EvalSetsTensorBoard(TensorBoardCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            held_out = {k: v for k, v in logs.items() if is_scalar_key(k)}
            rest = {k: v for k, v in logs.items() if k not in held_out}
            if rest:
                super().on_log(args, state, control, logs=rest, **kwargs)
            if held_out and state.is_world_process_zero and self.tb_writer is not None:
                for key, value in held_out.items():
                    if isinstance(value, (int, float)):
                        self.tb_writer.add_scalar(key, value, state.global_step)
                self.tb_writer.flush()

    return EvalSetsTensorBoard(tb_writer=writer)


@dataclass
class TrainProgress:
    """What the callback records during ``trainer.train()``; the summary reads it afterwards."""

    eval_before: dict[str, dict[str, Any]] | None = None  # held-out measurements: set name → numbers
    eval_after: dict[str, dict[str, Any]] | None = None
    eval_history: list[dict[str, dict[str, Any]]] = field(default_factory=list)
    eval_seconds_at_start: float = 0.0  # held-out evaluation time before training started (the baseline)
    eval_seconds_in_train: float = 0.0  # held-out evaluation time between the first and the last step
    train_started: float | None = None
    train_ended: float | None = None
    tokens_at_start: int = 0
    trained_at_start: int = 0  # trained tokens (labels not -100) drawn before this run's first step
    step_at_start: int = 0
    last_logs: dict[str, float] = field(default_factory=dict)
    train_task_open: bool = False


class QckitCallback(TrainerCallback):
    """Progress to the observer, held-out evaluation before/during/after training, the adapters' checks.

    ``trainer`` is set once the Trainer exists (the callback logs held-out numbers through it).
    """

    def __init__(
        self,
        progress: TrainProgress,
        suite: EvalSuite,
        observer: Observer,
        *,
        eval_steps: int,
        evaluate_before: bool,
        adapters: list[Any],
        fingerprint: dict[str, Any],
        resumed_baseline: dict[str, dict[str, Any]] | None = None,
        is_main_process: bool = True,
        samples: Any = None,
        trained_tokens: Callable[[int], int] | None = None,
    ) -> None:
        self.progress = progress
        self.suite = suite
        self.obs = observer
        self.eval_steps = eval_steps
        self.evaluate_before = evaluate_before
        self.adapters = adapters
        self.fingerprint = fingerprint
        self.resumed_baseline = resumed_baseline
        self.is_main_process = is_main_process
        self.samples = samples  # qckit.train.samples.SampleLog: completions at each evaluation, or None
        #: trained tokens drawn after N optimizer steps (the run's drawing order); None: count context tokens
        self.trained_tokens = trained_tokens
        self.trainer: Any = None

    # -- held-out evaluation --------------------------------------------------------------------

    def _measure(self, model: Any, step: int) -> dict[str, dict[str, Any]]:
        data = self.suite.measure(model, step)
        if self.trainer is not None:
            # Logging resets control.should_log, which would swallow the training loss of this step (logged
            # by the Trainer right after on_step_end): keep it.
            control = self.trainer.control
            should_log = control.should_log
            self.trainer.log(logged_scalars(data))
            self.trainer.control.should_log = should_log or self.trainer.control.should_log
        return data

    def _evaluate_during(self, model: Any, state: Any) -> None:
        if self.suite.enabled:
            data = self._measure(model, state.global_step)
            self.progress.eval_history.append(data)
            self.obs.report("eval", data)
        self._sample(model, state.global_step, "during")

    def _sample(self, model: Any, step: int, when: str) -> None:
        if self.samples is not None:
            self.samples.take(model, step, when)

    @property
    def held_out_seconds(self) -> float:
        """Time spent on held-out evaluation and sample completions so far (not training)."""
        return self.suite.seconds + (self.samples.seconds if self.samples is not None else 0.0)

    def tokens_per_second(self, state: Any) -> float | None:
        """Trained tokens (labels not -100, not the overlap context) per second of training so far."""
        p = self.progress
        if p.train_started is None:
            return None
        elapsed = time.perf_counter() - p.train_started - (self.held_out_seconds - p.eval_seconds_at_start)
        if self.trained_tokens is not None:
            tokens = self.trained_tokens(state.global_step) - p.trained_at_start
        else:
            tokens = state.num_input_tokens_seen - p.tokens_at_start
        return tokens / elapsed if elapsed > 0 else None

    # -- Trainer events ---------------------------------------------------------------------------

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        for adapter in self.adapters:
            verify = ability(adapter, ModelAdapter, "verify_trainer")
            if verify is not None:
                verify(self.trainer)
        p = self.progress
        p.step_at_start = state.global_step
        p.tokens_at_start = state.num_input_tokens_seen
        if self.trained_tokens is not None:
            p.trained_at_start = self.trained_tokens(state.global_step)
        if state.global_step and self.resumed_baseline:
            # resumed: the baseline is the base model's, measured by the run that wrote the checkpoint
            p.eval_before = self.resumed_baseline
            self.obs.report("eval_before", p.eval_before)
        elif self.suite.enabled and self.evaluate_before and not state.global_step:
            p.eval_before = self._measure(model, state.global_step)
            self.obs.report("eval_before", p.eval_before)
        if self.evaluate_before and not state.global_step:
            self._sample(model, 0, "before")
        self.obs.start("train", total=state.max_steps, unit="steps")
        p.train_task_open = True
        if state.global_step:
            self.obs.advance("train", state.global_step, resumed=True)
        p.eval_seconds_at_start = self.held_out_seconds
        p.train_started = time.perf_counter()

    def on_save(self, args, state, control, **kwargs):
        # the Trainer has written everything into checkpoint-N: the marker, written last, says it is complete
        if self.is_main_process:
            from qckit._fs import follow_umask
            from qckit.train.checkpoints import write_marker

            checkpoint = Path(args.output_dir) / f"{CHECKPOINT_PREFIX}{state.global_step}"
            follow_umask(checkpoint.glob("*.safetensors"))  # safetensors writes them 0600
            write_marker(checkpoint, self.fingerprint, self.progress.eval_before, state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        self.progress.last_logs.update({k: v for k, v in logs.items() if isinstance(v, (int, float))})
        if "loss" in logs and self.progress.train_task_open:
            # a logging step: its numbers now (on_step_end of this step ran before the Trainer logged them)
            fields: dict[str, Any] = {"loss": logs["loss"]}
            if "learning_rate" in logs:
                fields["lr"] = logs["learning_rate"]
            tps = self.tokens_per_second(state)
            if tps is not None:
                fields["tokens_per_s"] = tps
            self.obs.advance("train", 0, **fields)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.obs.advance("train", 1)
        every = self.eval_steps
        if (
            (self.suite.enabled or self.samples is not None)
            and every > 0
            and state.global_step % every == 0
            and state.global_step < state.max_steps
        ):
            self._evaluate_during(model, state)

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if (
            (self.suite.enabled or self.samples is not None)
            and self.eval_steps == 0
            and state.global_step < state.max_steps
            and not control.should_training_stop
        ):
            self._evaluate_during(model, state)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        p = self.progress
        p.train_ended = time.perf_counter()
        p.eval_seconds_in_train = self.held_out_seconds - p.eval_seconds_at_start
        self.close_task()
        if self.suite.enabled:
            p.eval_after = self._measure(model, state.global_step)
            self.obs.report("eval_after", p.eval_after)
        self._sample(model, state.global_step, "after")

    def close_task(self) -> None:
        """Finish the observer's ``train`` task if it is open (also when training raised)."""
        if self.progress.train_task_open:
            self.obs.finish("train")
            self.progress.train_task_open = False
