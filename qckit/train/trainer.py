"""qckit's Hugging Face ``Trainer``: the optimizer is built from the adapters' parameter groups when one asks.

Imported only when a run builds its Trainer (it imports transformers).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Trainer

from qckit.components import ModelAdapter, ability
from qckit.errors import QckitError

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
    :mod:`qckit.train.mixing`), and :meth:`create_optimizer` using the adapters' parameter groups.

    Each group is split like the Trainer's own grouping (no weight decay on biases and norms) and keeps
    its own options (``lr`` …); the optimizer class and its other keywords come from ``optim`` as usual.
    """

    def __init__(self, *args: Any, adapters: list[Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.qckit_adapters = list(adapters or [])

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        # a mixed dataset decides its own drawing order (seeded, one per epoch): qckit.train.mixing
        dataset = self.train_dataset if train_dataset is None else train_dataset
        sampler = getattr(dataset, "sampler", None)
        return sampler() if callable(sampler) else super()._get_train_sampler(train_dataset)

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
