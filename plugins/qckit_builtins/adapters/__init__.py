"""Built-in model adapters: ``lora``, ``4bit``, ``8bit`` and ``fsdp``.

They compose, and the order in which a recipe lists them does not matter:

* ``4bit``/``8bit`` only change how the model is *loaded* (a ``BitsAndBytesConfig``); their
  ``wrap_model`` returns the model unchanged.
* ``lora`` prepares a k-bit model itself (``prepare_model_for_kbit_training``, skipped for FSDP-sharded
  4-bit models, whose uniform storage dtype it would break) when the loaded model says it is 4-bit or
  8-bit, then wraps it with peft.
* ``fsdp`` only edits the ``TrainingArguments`` keywords; the Trainer (accelerate) shards the model.

Every incompatibility is found in ``check``, before anything is loaded, and raised as a
:class:`~qckit.errors.HardwareError` that says what to change.

Gradient checkpointing contract with the train loop: when the recipe asks for it, the train loop puts
``activation_checkpointing=True`` in the ``TrainingArguments`` keywords *before* calling the adapters'
``training_args``. The ``fsdp`` adapter takes it out and turns on FSDP's own activation checkpointing
instead (the model-level one adds a redundant all-gather under FSDP). If the key is still true
afterwards, the train loop calls :func:`qckit.models.enable_gradient_checkpointing` on the wrapped model
and passes ``activation_checkpointing=False`` to the Trainer. Adapters never turn checkpointing on
themselves.
"""

from __future__ import annotations

from typing import Any

from qckit import hookimpl
from qckit_builtins.adapters.fsdp import FsdpAdapter
from qckit_builtins.adapters.lora import SEED_LORA_TARGETS, LoraAdapter
from qckit_builtins.adapters.quantized import EightBitAdapter, FourBitAdapter

ADAPTERS = (LoraAdapter, FourBitAdapter, EightBitAdapter, FsdpAdapter)

__all__ = ["ADAPTERS", "SEED_LORA_TARGETS", "EightBitAdapter", "FourBitAdapter", "FsdpAdapter", "LoraAdapter"]


@hookimpl
def register_model_adapters(register: Any) -> None:
    for adapter in ADAPTERS:
        register(adapter)
