"""The ``lora`` adapter: peft LoRA beside frozen linear layers (k-bit bases prepared here)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from qckit.errors import QckitError
from qckit.models import linear_module_names

SEED_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoraAdapter:
    """Low-rank adaptation (peft LoRA): trains small ``r``-rank matrices beside frozen linear layers.

    Defaults are the seed's: r 16, alpha 32, dropout 0.1 on the attention and MLP projections of
    Llama-style models. Target modules the model does not have are skipped as long as at least one
    matches (``skipped_targets`` lists them after ``wrap_model``); if none match, the error lists the
    model's linear layers. Without this adapter the whole model is trained.
    """

    name: ClassVar[str] = "lora"
    #: only the adapter's own weights train; the base can be loaded in half precision (qckit.train reads this)
    freezes_base_model: ClassVar[bool] = True

    def __init__(
        self,
        r: int = 16,
        alpha: int = 32,
        dropout: float = 0.1,
        target_modules: tuple[str, ...] = SEED_LORA_TARGETS,
        bias: str = "none",
    ) -> None:
        if r < 1:
            raise ValueError("r must be at least 1")
        if alpha <= 0:
            raise ValueError("alpha must be positive")
        if not 0.0 <= dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")
        if isinstance(target_modules, str):
            target_modules = (target_modules,)
        if not target_modules or not all(isinstance(t, str) and t for t in target_modules):
            raise ValueError("target_modules must be a non-empty list of module names")
        if bias not in ("none", "all", "lora_only"):
            raise ValueError("bias must be 'none', 'all' or 'lora_only'")
        self.r = r
        self.alpha = alpha
        self.dropout = float(dropout)
        self.target_modules = tuple(target_modules)
        self.bias = bias
        self.skipped_targets: tuple[str, ...] = ()
        #: one-line remarks for the run report, filled in by wrap_model
        self.notes: tuple[str, ...] = ()
        self._sharded = False

    def check(self, env: Any, adapters: Sequence[str]) -> None:
        self._sharded = "fsdp" in adapters

    def load_kwargs(self, kwargs: dict[str, Any], env: Any) -> None:
        return None

    def wrap_model(self, model: Any, env: Any) -> Any:
        from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

        if isinstance(model, PeftModel):
            raise QckitError("the model is already wrapped by peft; list the lora adapter only once")
        available = linear_module_names(model)
        present = [t for t in self.target_modules if t in available]
        if not present:
            raise QckitError(
                f"lora target_modules {list(self.target_modules)} match no layer of {type(model).__name__}; "
                f"its linear layers are: {', '.join(sorted(available)) or 'none'}"
            )
        self.skipped_targets = tuple(t for t in self.target_modules if t not in available)
        if self.skipped_targets:
            self.notes = (
                f"lora: {type(model).__name__} has no {', '.join(self.skipped_targets)}; "
                f"adapting {', '.join(present)}",
            )
        kbit = getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)
        if kbit and not (self._sharded and getattr(model, "is_loaded_in_4bit", False)):
            # Freezes the base, upcasts norms/embeddings to fp32 for stability. Checkpointing is the
            # train loop's call (see the module docstring), so it is not enabled here.
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        config = LoraConfig(
            task_type="CAUSAL_LM",
            r=self.r,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=present,
            bias=self.bias,
        )
        return get_peft_model(model, config)

    def training_args(self, args: dict[str, Any], model: Any, env: Any) -> None:
        return None
