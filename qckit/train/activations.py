"""Gradient checkpointing (recomputing activations in the backward pass): on only where memory needs it.

``train.gradient_checkpointing = "auto"`` (the default) decides per run, from the computed estimate of
:func:`qckit.memory.training_memory` *without* checkpointing against the memory of the GPU
(:attr:`qckit.hardware.Environment.gpu_memory`, the smallest of them): on when the estimate exceeds
:data:`AUTO_SHARE` of it, off otherwise (recomputing costs about a third more compute per step for
nothing when the activations fit). On the CPU (and MPS) it is off: the activations live in the
machine's memory, which the estimate does not describe and which swaps rather than failing. An
architecture the estimate does not know (no Llama-style ``config.json``) gets it on, the safe side.
``true`` / ``false`` are kept as set. The inspection and the summary say which and why
(:meth:`CheckpointingChoice.line`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qckit.memory import ModelShape, training_memory

__all__ = ["AUTO", "AUTO_SHARE", "CheckpointingChoice", "choose_gradient_checkpointing", "memory_method"]

#: the ``train.gradient_checkpointing`` value that decides per run
AUTO = "auto"
#: auto turns checkpointing on when the estimate without it exceeds this share of the GPU's memory
AUTO_SHARE = 0.85
_GIB = 1024**3


@dataclass(frozen=True)
class CheckpointingChoice:
    """Whether activations are recomputed, and why."""

    enabled: bool
    reason: str

    def line(self) -> str:
        """``"off (auto: estimated 3.2 GiB of 79.1 GiB without it)"``."""
        return f"{'on' if self.enabled else 'off'} ({self.reason})"


def memory_method(model: Any, trains_base: bool) -> str:
    """The :data:`qckit.memory.METHODS` entry of a loaded model: ``full``, ``4bit``, ``8bit`` or ``lora``."""
    if trains_base:
        return "full"
    if getattr(model, "is_loaded_in_4bit", False):
        return "4bit"
    if getattr(model, "is_loaded_in_8bit", False):
        return "8bit"
    return "lora"


def choose_gradient_checkpointing(
    setting: bool | str,
    env: Any,
    config: Any,
    *,
    method: str,
    precision: str,
    batch_size: int,
    window: int,
    lora_r: int = 16,
    supported: bool = True,
) -> CheckpointingChoice:
    """The run's choice for ``setting`` (``true``, ``false`` or ``"auto"``; see the module docstring).
    ``config`` is the model's configuration (a ``PretrainedConfig`` or its dict); ``supported``: whether
    the model can recompute its activations (``auto`` then leaves it off; ``true`` is refused later)."""
    if setting != AUTO:
        return CheckpointingChoice(
            bool(setting), "train.gradient_checkpointing = " + str(bool(setting)).lower()
        )
    if not supported:
        return CheckpointingChoice(False, "auto: the model does not support it")
    if env.device != "cuda":
        return CheckpointingChoice(
            False, f"auto: on {env.device} the activations are kept in the machine's memory, not a GPU's"
        )
    if not env.gpu_memory:
        return CheckpointingChoice(True, "auto: the GPU's memory is unknown")
    try:
        shape = ModelShape.from_config(config if isinstance(config, dict) else config.to_dict())
    except (KeyError, TypeError, ValueError, AttributeError):
        return CheckpointingChoice(True, "auto: no memory estimate for this architecture")
    need = training_memory(
        shape,
        method=method,
        precision=precision,
        batch_size=batch_size,
        window=window,
        lora_r=lora_r,
        gradient_checkpointing=False,
    )
    have = min(env.gpu_memory)
    return CheckpointingChoice(
        need.total > AUTO_SHARE * have,
        f"auto: estimated {need.total_gib:.1f} GiB of {have / _GIB:.1f} GiB without it",
    )
