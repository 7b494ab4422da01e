"""qckit's Hugging Face ``Trainer``: the optimizer is built from the adapters' parameter groups when one asks.

Imported only when a run builds its Trainer (it imports transformers).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from transformers import Trainer, TrainerCallback

from qckit.components import ModelAdapter, ability
from qckit.errors import QckitError, TrainingError
from qckit.train.packing import forward_inputs

__all__ = ["QckitTrainer", "adapter_param_groups"]


def adapter_param_groups(adapters: list[Any], model: Any, learning_rate: float) -> list[dict] | None:
    """The optimizer parameter groups the adapters ask for, or ``None`` for the Trainer's default.

    At most one adapter may return groups (its ``optimizer_param_groups``); together they must hold every
    trainable parameter of ``model`` exactly once and no frozen one, else :class:`~qckit.errors.QckitError`
    names the adapter and the parameter.
    """
    chosen: tuple[str, list[dict]] | None = None
    for adapter in adapters:
        ask = ability(adapter, ModelAdapter, "optimizer_param_groups")
        groups = ask(model, learning_rate) if ask is not None else None
        if groups is None:
            continue
        if chosen is not None:
            raise QckitError(
                f"the {chosen[0]} and {adapter.name} adapters both define optimizer parameter groups; keep one"
            )
        chosen = (adapter.name, list(groups))
    if chosen is None:
        return None
    owner, groups = chosen
    names = {id(p): n for n, p in model.named_parameters()}
    seen: set[int] = set()
    for group in groups:
        if not isinstance(group, dict) or "params" not in group:
            raise QckitError(f"the {owner} adapter returned an optimizer group without 'params'")
        group["params"] = list(group["params"])
        for param in group["params"]:
            name = names.get(id(param), "<not a parameter of the model>")
            if id(param) in seen:
                raise QckitError(f"the {owner} adapter put parameter {name} in two optimizer groups")
            if not param.requires_grad:
                raise QckitError(f"the {owner} adapter put the frozen parameter {name} in an optimizer group")
            seen.add(id(param))
    missing = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in seen]
    if missing:
        raise QckitError(
            f"the {owner} adapter's optimizer groups leave out {len(missing)} trainable parameter(s), "
            f"e.g. {missing[0]}"
        )
    return groups


class QckitTrainer(Trainer):
    """The Trainer with qckit's changes: the mixed dataset's own sampler (seeded drawing order, see
    :mod:`qckit.train.mixing`), document-isolated batches passed without their attention mask
    (:func:`~qckit.train.packing.forward_inputs`), :meth:`create_optimizer` using the adapters'
    parameter groups, and a warmup_stable_decay scheduler checked against the steps its decay phase
    was placed in; a non-finite loss or gradient norm stops training with a
    :class:`~qckit.errors.TrainingError` naming the step (instead of the Trainer's silent skipping).

    fp16 (a loss scaler): overflowing gradients are routine there, the scaler skips the step and halves
    its scale. Such steps are counted (:attr:`skipped_steps`, and ``skipped_steps`` / ``loss_scale`` in
    each log line); only ``max_skipped_steps`` skipped in a row stop training, naming the last one.

    Each group is split like the Trainer's own grouping (no weight decay on biases and norms) and keeps
    its own options (``lr`` …); the optimizer class and its other keywords come from ``optim`` as usual.
    """

    def __init__(
        self,
        *args: Any,
        adapters: list[Any] | None = None,
        planned_steps: int | None = None,
        max_skipped_steps: int = 25,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.qckit_adapters = list(adapters or [])
        #: the optimizer steps qckit placed a WSD decay phase in (its scheduler arguments, the data mix)
        self.planned_steps = planned_steps
        #: fp16: skipped steps in a row that stop training (``train.max_skipped_steps``)
        self.max_skipped_steps = max_skipped_steps
        #: fp16: optimizer steps the loss scaler skipped in this process (overflowing gradients)
        self.skipped_steps = 0
        self._skipped_in_a_row = 0
        self.add_callback(_StepOutcome(self))

    @property
    def scales_loss(self) -> bool:
        """Whether a loss scaler (fp16) guards the steps: a non-finite gradient then skips the step."""
        return self.accelerator.scaler is not None

    def create_scheduler(self, num_training_steps: int, optimizer: Any = None) -> Any:
        if self.planned_steps is not None and num_training_steps != self.planned_steps:
            # the decay would end elsewhere than the run, and the decay source's windows come at other steps
            raise QckitError(
                f"the Trainer counts {num_training_steps} optimizer steps where qckit planned "
                f"{self.planned_steps}: the warmup_stable_decay phases would not line up"
            )
        return super().create_scheduler(num_training_steps, optimizer)

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        # a mixed dataset decides its own drawing order (seeded, one per epoch): qckit.train.mixing
        dataset = self.train_dataset if train_dataset is None else train_dataset
        sampler = getattr(dataset, "sampler", None)
        return sampler() if callable(sampler) else super()._get_train_sampler(train_dataset)

    def training_step(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        loss = super().training_step(model, inputs, *args, **kwargs)
        # several processes: a rank stopping alone would leave the others waiting in the gradient
        # all-reduce; a non-finite loss makes the (all-reduced) gradient norm non-finite on every rank
        # (fp16: a loss overflowing in the forward pass gives non-finite gradients, and the scaler skips the step)
        if self.args.world_size == 1 and not self.scales_loss and not bool(torch.isfinite(loss)):
            self._diverged(f"the training loss is {float(loss)} (non-finite)")
        return loss

    def _get_grad_norm(self, model: Any, grad_norm: Any = None) -> Any:
        norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        if norm is not None and not self.scales_loss and not math.isfinite(float(norm)):
            self._diverged(f"the gradient norm is {float(norm)} (non-finite)")
        return norm

    def _train_began(self) -> None:
        """A resumed run goes on counting from the checkpoint's last training log line (the skips after
        that line, before the checkpoint, are not known)."""
        logged = (h["skipped_steps"] for h in reversed(self.state.log_history) if "skipped_steps" in h)
        self.skipped_steps = int(next(logged, 0))
        self._skipped_in_a_row = 0

    def _step_ended(self) -> None:
        """After each optimizer step: count a step the loss scaler skipped; stop after too many in a row."""
        if not self.scales_loss:
            return
        if not self.accelerator.optimizer_step_was_skipped:
            self._skipped_in_a_row = 0
            return
        self.skipped_steps += 1
        self._skipped_in_a_row += 1
        if self._skipped_in_a_row >= self.max_skipped_steps:
            scale = self.accelerator.scaler.get_scale()
            self._diverged(
                f"the gradients overflowed fp16 at {self._skipped_in_a_row} optimizer steps in a row (the loss "
                f"scale fell to {scale:g}; train.max_skipped_steps = {self.max_skipped_steps})",
                step=self.state.global_step,
            )

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if self.scales_loss and "loss" in logs:  # the training log lines
            logs = {
                **logs,
                "skipped_steps": self.skipped_steps,
                "loss_scale": self.accelerator.scaler.get_scale(),
            }
        super().log(logs, *args, **kwargs)

    def _diverged(self, what: str, step: int | None = None) -> None:
        """Stop training at ``step`` (the one running by default): nothing of it reaches the weights, the
        checkpoints written so far stay."""
        from pathlib import Path

        from qckit.train.checkpoints import checkpoints, read_marker

        step = self.state.global_step + 1 if step is None else step
        kept = next((p for p in checkpoints(Path(str(self.args.output_dir))) if read_marker(p)), None)
        last = f"the last good checkpoint, {kept}, is kept" if kept else "no checkpoint was written before it"
        raise TrainingError(
            f"training stopped at optimizer step {step}: {what}; the step was not applied and "
            f"{last}. Lower train.learning_rate or check the data and the model's precision"
        )

    def compute_loss(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        # document isolation: position ids restart per document and the 2-D attention mask is left out, so
        # transformers builds the block-diagonal mask (the mask stays in `inputs` for the token count)
        return super().compute_loss(model, forward_inputs(inputs), *args, **kwargs)

    def create_optimizer(self, model: Any = None) -> Any:
        if self.optimizer is not None:
            return self.optimizer
        opt_model: Any = self.model if model is None else model
        groups = adapter_param_groups(self.qckit_adapters, opt_model, self.args.learning_rate)
        if groups is None:
            return super().create_optimizer(model)
        decay = set(self.get_decay_parameter_names(opt_model))
        names = {id(p): n for n, p in opt_model.named_parameters()}
        split: list[dict] = []
        for group in groups:
            options = {k: v for k, v in group.items() if k != "params"}
            weight_decay = options.pop("weight_decay", self.args.weight_decay)
            with_decay = [p for p in group["params"] if names[id(p)] in decay]
            without = [p for p in group["params"] if names[id(p)] not in decay]
            if with_decay:
                split.append({**options, "params": with_decay, "weight_decay": weight_decay})
            if without:
                split.append({**options, "params": without, "weight_decay": 0.0})
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        special = {"params", "model", "optimizer_dict"} & set(optimizer_kwargs)
        if special or not (
            isinstance(optimizer_cls, type) and issubclass(optimizer_cls, torch.optim.Optimizer)
        ):
            raise QckitError(
                f"optimizer {self.args.optim!r} builds its own parameter groups and cannot take the adapters' "
                f"groups; choose another train.optimizer"
            )
        self.optimizer = optimizer_cls(split, **optimizer_kwargs)
        return self.optimizer


class _StepOutcome(TrainerCallback):
    """Hands the start of training and each step's end to the trainer (it has no hooks of its own there)."""

    def __init__(self, trainer: QckitTrainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer._train_began()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer._step_ended()
