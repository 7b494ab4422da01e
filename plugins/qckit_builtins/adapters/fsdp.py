"""The ``fsdp`` adapter: Fully Sharded Data Parallel across the GPUs of a torchrun launch."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, ClassVar

from qckit.errors import HardwareError, QckitError
from qckit.models import find_decoder_layer_class

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

    ``cpu_ram_efficient_loading`` (default on): rank 0 alone reads the weights into host memory; the
    other ranks build the model on the meta device (no storage) and receive rank 0's weights when the
    Trainer shards it (accelerate's option of that name: FSDP2 broadcasts rank 0's full state dict,
    FSDP1 syncs module states from rank 0). Global rank 0, not each node's first rank: both broadcasts
    send from global rank 0, so a copy on another node would be read only to be dropped. A quantized
    base (4bit) is loaded by every rank: accelerate does not broadcast quantized weights.
    """

    name: ClassVar[str] = "fsdp"
    freezes_base_model: ClassVar[bool] = False
    shards_model: ClassVar[bool] = True

    def __init__(
        self,
        strategy: str = "full_shard auto_wrap",
        layer_cls: str | None = None,
        version: int = 2,
        cpu_ram_efficient_loading: bool = True,
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
        # How the weights are loaded does not change what the run trains: kept out of the public attributes,
        # which are the run's identity (an FSDP run from before this option still resumes); the notes say it.
        self._cpu_ram_efficient_loading = bool(cpu_ram_efficient_loading)
        # whether rank 0 alone reads the weights (decided by loads_weights, on every rank alike)
        self._rank0_loads = False
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

    def loads_weights(self, kwargs: dict[str, Any], env: Any) -> bool:
        # every rank decides alike (same recipe, same keywords): what rank 0 sends, the others expect
        self._rank0_loads = self._cpu_ram_efficient_loading and kwargs.get("quantization_config") is None
        return env.is_main_process or not self._rank0_loads

    def verify_trainer(self, trainer: Any) -> None:
        if not trainer.is_fsdp_enabled:
            raise HardwareError(
                "the fsdp adapter is set but the accelerator does not use FSDP (it would silently be plain data "
                "parallel); launch with torchrun on several GPUs or remove the fsdp adapter"
            )
        if not _is_fsdp_wrapped(trainer.model_wrapped):
            raise HardwareError(
                "the fsdp adapter is set but the model was not sharded with FSDP (the run would silently be "
                "plain data parallel); launch with torchrun on several GPUs or remove the fsdp adapter"
            )

    def wrap_model(self, model: Any, env: Any) -> Any:
        if self._rank0_loads:
            check_same_layout(model)
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
        if self._rank0_loads:  # FSDP1: implies sync_module_states
            config["cpu_ram_efficient_loading"] = True
        config.setdefault("state_dict_type", "FULL_STATE_DICT")
        wants_checkpointing = bool(args.pop("activation_checkpointing", False))
        wants_checkpointing |= bool(args.pop("gradient_checkpointing", False))
        args.pop("gradient_checkpointing_kwargs", None)
        args.pop("activation_checkpointing_kwargs", None)
        notes = [
            f"fsdp: version {self.version}, {self.sharding}{' + offload' if self.offload else ''}, wrapping {layer}",
            self._loading_note(env.world_size),
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

    def _loading_note(self, world_size: int) -> str:
        if self._rank0_loads:
            others = world_size - 1
            receive = "rank receives" if others == 1 else "ranks receive"
            return f"fsdp: rank 0 loads the weights, {others} {receive} them"
        why = (
            "cpu_ram_efficient_loading = false" if not self._cpu_ram_efficient_loading else "a quantized base"
        )
        return f"fsdp: every rank loads the weights ({why})"


def check_same_layout(model: Any) -> None:
    """Refuse, on every rank alike, a model whose state dict (names, shapes, dtypes) differs from rank 0's,
    or whose non-persistent buffers (rotary tables) hold other values.

    The broadcast that fills the other ranks walks each rank's own state dict and trusts it to match
    the sender's: a difference (a model class that builds differently without its weights) would hang
    the run or mix tensors up silently. The non-persistent buffers are not sent at all: each rank keeps
    the ones it computed. One all-gather of the layouts, before the Trainer sees the model.
    """
    import torch.distributed as dist  # its process group: set up by the train stage (accelerate's PartialState)
    from accelerate.utils.modeling import get_non_persistent_buffers

    layout = [(name, f"{tuple(t.shape)} {t.dtype}") for name, t in model.state_dict().items()]
    kept = get_non_persistent_buffers(model, recurse=True, fqns=True)
    layout += [(name, f"{t.dtype} values {_digest(t)}") for name, t in model.named_buffers() if name in kept]
    layouts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(layouts, layout)
    main = layouts[0]
    for rank, other in enumerate(layouts):
        if other == main:
            continue
        sent, built = dict(main), dict(other)
        name = next((k for k in {**sent, **built} if sent.get(k) != built.get(k)), None)
        detail = (
            f"{name}: rank 0 {sent.get(name, 'has none')}, rank {rank} {built.get(name, 'has none')}"
            if name is not None
            else "the same tensors in another order"
        )
        raise QckitError(
            f"fsdp: rank {rank} built the model differently from rank 0, which sends it the weights ({detail}); "
            "set the fsdp adapter's cpu_ram_efficient_loading = false (every rank then loads them)"
        )


def _digest(tensor: Any) -> str:
    """A short fingerprint of a tensor's bytes (a real one: buffers are never on the meta device here)."""
    import torch

    data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
    return hashlib.blake2b(data.numpy().tobytes(), digest_size=8).hexdigest()


def _is_fsdp_wrapped(model: Any) -> bool:
    """Whether any module of ``model`` is an FSDP1 ``FullyShardedDataParallel`` or an FSDP2 ``FSDPModule``."""
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except ImportError:  # pragma: no cover - torch without distributed
        return False
    kinds: tuple[type, ...] = (FullyShardedDataParallel,)
    try:
        from torch.distributed.fsdp import FSDPModule  # FSDP2

        kinds += (FSDPModule,)
    except ImportError:  # pragma: no cover - older torch
        pass
    return any(isinstance(m, kinds) for m in model.modules())
