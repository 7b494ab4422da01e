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

from collections.abc import Sequence
from typing import Any, ClassVar

from qckit import hookimpl
from qckit.errors import HardwareError, QckitError
from qckit.models import find_decoder_layer_class, linear_module_names

SEED_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_DTYPE_NAMES = {
    "fp32": "float32",
    "float32": "float32",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "float16": "float16",
}


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
        if self.compute_dtype in ("bf16", "bfloat16") and not env.bf16_supported:
            raise HardwareError('4bit compute_dtype "bf16" is not supported here; use compute_dtype = "auto"')

    def resolved_compute_dtype(self, env: Any) -> Any:
        """The ``torch.dtype`` the 4-bit matmuls run in on ``env``."""
        import torch

        if self.compute_dtype == "auto":
            if env.device == "cuda":
                return torch.bfloat16 if env.bf16_supported else torch.float16
            return torch.float32
        return getattr(torch, _DTYPE_NAMES[self.compute_dtype])

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


_SHARDING = {"full_shard", "shard_grad_op", "no_shard", "hybrid_shard", "hybrid_shard_zero2"}
_FSDP_OPTIONS = _SHARDING | {"offload", "auto_wrap"}


class FsdpAdapter:
    """Fully Sharded Data Parallel across the GPUs of a ``torchrun``/``accelerate launch`` run.

    ``strategy`` takes the seed's ``--fsdp`` words: one of ``full_shard`` (default), ``shard_grad_op``
    (and, FSDP1 only, ``no_shard``/``hybrid_shard``/``hybrid_shard_zero2``), plus ``offload`` (parameters
    and gradients in CPU memory) and ``auto_wrap`` (accepted; each transformer block is always its own
    FSDP unit). ``layer_cls`` is that block's class name, detected from the model when left out (the
    seed hard-coded ``LlamaDecoderLayer``). ``version`` 2 (FSDP2, the default of transformers and
    accelerate) or 1 (deprecated). On CPU, the Trainer silently runs plain DDP when asked for FSDP;
    qckit refuses instead.
    """

    name: ClassVar[str] = "fsdp"
    freezes_base_model: ClassVar[bool] = False

    def __init__(
        self, strategy: str = "full_shard auto_wrap", layer_cls: str | None = None, version: int = 2
    ) -> None:
        if version not in (1, 2):
            raise ValueError("version must be 1 or 2")
        words = strategy.split()
        unknown = [w for w in words if w not in _FSDP_OPTIONS]
        if unknown:
            raise ValueError(
                f"unknown fsdp strategy word {unknown[0]!r}; use {', '.join(sorted(_FSDP_OPTIONS))}"
            )
        sharding = [w for w in words if w in _SHARDING]
        if len(sharding) > 1:
            raise ValueError(f"strategy names several sharding modes ({', '.join(sharding)}); keep one")
        if version == 2 and sharding and sharding[0] not in ("full_shard", "shard_grad_op"):
            raise ValueError(
                f"{sharding[0]!r} exists only in FSDP1; use full_shard/shard_grad_op or set version = 1"
            )
        if layer_cls is not None and not layer_cls.strip():
            raise ValueError("layer_cls must be a class name")
        self.strategy = " ".join(words)
        self.sharding = sharding[0] if sharding else "full_shard"
        self.offload = "offload" in words
        self.layer_cls = layer_cls.strip() if layer_cls else None
        self.version = version
        #: one-line remarks for the run report, filled in by training_args
        self.notes: tuple[str, ...] = ()

    def check(self, env: Any, adapters: Sequence[str]) -> None:
        if env.device != "cuda":
            raise HardwareError(
                "FSDP needs CUDA GPUs (found none). On CPU, Trainer silently falls back to plain DDP; qckit "
                "refuses to report FSDP while doing DDP. Remove the fsdp adapter (torchrun gives you DDP) or "
                "run on GPUs."
            )
        if env.world_size < 2:
            raise HardwareError(
                "FSDP shards across processes: launch with torchrun --nproc_per_node N (or accelerate launch) "
                f"with N >= 2; this is a single process on {env.gpu_count} GPU(s). On one GPU, remove the fsdp "
                "adapter."
            )

    def load_kwargs(self, kwargs: dict[str, Any], env: Any) -> None:
        return None

    def wrap_model(self, model: Any, env: Any) -> Any:
        return model  # the Trainer (accelerate) shards it

    def training_args(self, args: dict[str, Any], model: Any, env: Any) -> None:
        layer = self.layer_cls or find_decoder_layer_class(model)
        config = dict(args.get("fsdp_config") or {})
        config["version"] = self.version
        config["auto_wrap_policy"] = "TRANSFORMER_BASED_WRAP"
        config["transformer_layer_cls_to_wrap"] = [layer]
        if self.version == 2:
            config["reshard_after_forward"] = self.sharding == "full_shard"
        else:
            config["reshard_after_forward"] = self.sharding
        if self.offload:
            config["cpu_offload"] = True
        config.setdefault("state_dict_type", "FULL_STATE_DICT")
        wants_checkpointing = bool(args.pop("activation_checkpointing", False))
        wants_checkpointing |= bool(args.pop("gradient_checkpointing", False))
        args.pop("gradient_checkpointing_kwargs", None)
        args.pop("activation_checkpointing_kwargs", None)
        notes = [
            f"fsdp: version {self.version}, {self.sharding}{' + offload' if self.offload else ''}, wrapping {layer}"
        ]
        if wants_checkpointing:
            # FSDP's own activation checkpointing: the model-level one adds a redundant all-gather.
            config["activation_checkpointing"] = True
            notes.append(
                "gradient checkpointing is done by FSDP (activation_checkpointing per wrapped block)"
            )
        self.notes = tuple(notes)
        args["fsdp"] = True
        args["fsdp_config"] = config


ADAPTERS = (LoraAdapter, FourBitAdapter, EightBitAdapter, FsdpAdapter)


@hookimpl
def register_model_adapters(register: Any) -> None:
    for adapter in ADAPTERS:
        register(adapter)
