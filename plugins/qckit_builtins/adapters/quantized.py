"""The ``4bit`` and ``8bit`` adapters: a bitsandbytes-quantized base model (QLoRA)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from qckit.errors import HardwareError

_DTYPE_NAMES = {
    "fp32": "float32",
    "float32": "float32",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "float16": "float16",
}


class _QuantizedBase:
    """Shared checks of the bitsandbytes adapters."""

    name: ClassVar[str]
    other: ClassVar[str]
    freezes_base_model: ClassVar[bool] = False  # the lora adapter (required with it) freezes the base

    def _check_common(self, env: Any, adapters: Sequence[str]) -> None:
        if env.bitsandbytes_version is None:
            raise HardwareError(f"the {self.name} adapter needs bitsandbytes: pip install bitsandbytes")
        if self.other in adapters:
            raise HardwareError("the 4bit and 8bit adapters cannot be combined; keep one of them")
        if "lora" not in adapters:
            raise HardwareError(
                f"a quantized base cannot be fully fine-tuned; add the lora adapter (adapters = "
                f'[{{use = "lora"}}, {{use = "{self.name}"}}]) or remove {self.name}'
            )

    def wrap_model(self, model: Any, env: Any) -> Any:
        return model  # k-bit preparation is done by the lora adapter, whatever the order

    def training_args(self, args: dict[str, Any], model: Any, env: Any) -> None:
        return None

    def base_model_config(self, config: Any) -> None:
        # quantized on load: config.json beside the adapter describes the base model as published
        if "quantization_config" in vars(config):
            del config.quantization_config

    @staticmethod
    def _place(kwargs: dict[str, Any], env: Any) -> None:
        if env.device == "cuda":
            # one whole copy per process, on that process's GPU (DDP / FSDP ranks)
            kwargs.setdefault("device_map", {"": env.local_rank})


class FourBitAdapter(_QuantizedBase):
    """Load the base model in 4 bits (bitsandbytes NF4 by default, with double quantization): QLoRA.

    ``compute_dtype = "auto"`` computes in bf16 on GPUs that support it, fp16 on older GPUs and fp32 on
    CPU. With the fsdp adapter the 4-bit weights are stored in the compute dtype
    (``bnb_4bit_quant_storage``) so FSDP can shard them (FSDP + QLoRA; needs CUDA). Runs on CPU with
    recent bitsandbytes (0.50 tested), but slowly.
    """

    name: ClassVar[str] = "4bit"
    other: ClassVar[str] = "8bit"

    def __init__(
        self, quant_type: str = "nf4", double_quant: bool = True, compute_dtype: str = "auto"
    ) -> None:
        if quant_type not in ("nf4", "fp4"):
            raise ValueError("quant_type must be 'nf4' or 'fp4'")
        if compute_dtype != "auto" and compute_dtype not in _DTYPE_NAMES:
            raise ValueError("compute_dtype must be 'auto', 'fp32', 'bf16' or 'fp16'")
        self.quant_type = quant_type
        self.double_quant = bool(double_quant)
        self.compute_dtype = compute_dtype
        self._sharded = False

    def check(self, env: Any, adapters: Sequence[str]) -> None:
        self._check_common(env, adapters)
        self._sharded = "fsdp" in adapters
        if self._sharded and env.device != "cuda":
            raise HardwareError(
                "4bit with fsdp (FSDP + QLoRA) needs CUDA GPUs; remove fsdp to train 4-bit on one device"
            )
        if self.compute_dtype in ("fp16", "float16") and env.device != "cuda":
            raise HardwareError(
                '4bit compute_dtype "fp16" needs a CUDA GPU; use compute_dtype = "auto" (fp32 here)'
            )
        if self.compute_dtype in ("bf16", "bfloat16") and not (env.bf16_supported or env.bf16_emulated):
            raise HardwareError('4bit compute_dtype "bf16" is not supported here; use compute_dtype = "auto"')

    def resolved_compute_dtype(self, env: Any) -> Any:
        """The ``torch.dtype`` the 4-bit matmuls run in on ``env``."""
        import torch

        if self.compute_dtype == "auto":
            if env.device == "cuda":
                return torch.bfloat16 if env.bf16_supported else torch.float16
            return torch.float32
        return getattr(torch, _DTYPE_NAMES[self.compute_dtype])

    def wrap_model(self, model: Any, env: Any) -> Any:
        # On CPUs with AVX512-BF16, bitsandbytes repacks 4-bit weights for inference on the first eval-mode
        # forward (held-out evaluation, checks) and keeps them so; backward through the repacked weights has
        # no autograd kernel (wrong gradients for the layers below). A model being trained keeps its layout.
        for module in model.modules():
            if getattr(module, "support_avx512bf16_for_cpu", False):
                module.support_avx512bf16_for_cpu = False
        return model

    def load_kwargs(self, kwargs: dict[str, Any], env: Any) -> None:
        from transformers import BitsAndBytesConfig

        compute = self.resolved_compute_dtype(env)
        extra: dict[str, Any] = {}
        if self._sharded:
            # FSDP flattens/shards parameters of one dtype: store the packed 4-bit data in the same
            # dtype as everything else, and load the rest of the model in it too.
            extra["bnb_4bit_quant_storage"] = compute
            kwargs["dtype"] = compute
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=self.quant_type,
            bnb_4bit_use_double_quant=self.double_quant,
            bnb_4bit_compute_dtype=compute,
            **extra,
        )
        self._place(kwargs, env)


class EightBitAdapter(_QuantizedBase):
    """Load the base model in 8 bits (bitsandbytes LLM.int8()). Needs the lora adapter; not with fsdp."""

    name: ClassVar[str] = "8bit"
    other: ClassVar[str] = "4bit"

    def __init__(self) -> None:
        pass

    def check(self, env: Any, adapters: Sequence[str]) -> None:
        self._check_common(env, adapters)
        if "fsdp" in adapters:
            raise HardwareError(
                "8-bit weights cannot be sharded by FSDP; use the 4bit adapter with fsdp (FSDP + QLoRA), "
                "or remove fsdp (torchrun then gives you DDP)"
            )

    def load_kwargs(self, kwargs: dict[str, Any], env: Any) -> None:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        self._place(kwargs, env)
