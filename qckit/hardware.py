"""What this machine can do, and which numeric precision to train in.

:data:`PRECISION_TABLE` is the one table of precisions: each one's torch dtype, ``TrainingArguments``
flags and ``qckit export --outtype``; loading, training, the time estimate and export read it.

:func:`detect_environment` looks at the hardware once (devices, bf16/fp16 support, the process's place in
a ``torchrun``/``accelerate`` launch, whether bitsandbytes is installed) and returns an immutable
:class:`Environment`. Everything that decides *whether* something can run takes an ``Environment``
instead of asking torch directly, so the decisions are testable with a fabricated one
(``Environment(device="cuda", gpu_count=2, world_size=2)``).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
from dataclasses import dataclass
from typing import Any

from qckit.errors import HardwareError


@dataclass(frozen=True)
class Precision:
    """One numeric precision and what it means wherever qckit uses it."""

    name: str  #: the ``precision`` setting (once ``auto`` is resolved), the merge dtype of an export
    dtype: str  #: the name of its ``torch`` dtype (torch is imported only where a dtype is needed)
    #: the ``TrainingArguments`` keywords: mixed precision (autocast) for the half types, none for fp32
    trainer_flags: dict[str, bool]
    outtype: str  #: the ``qckit export --outtype`` of weights saved in it


#: every precision by name, in the order of :data:`PRECISIONS`
PRECISION_TABLE = {
    p.name: p
    for p in (
        Precision("fp32", "float32", {}, "f32"),
        Precision("bf16", "bfloat16", {"bf16": True}, "bf16"),
        Precision("fp16", "float16", {"fp16": True}, "f16"),
    )
}
PRECISIONS = ("auto", *PRECISION_TABLE)
#: ``device`` settings: ``auto`` uses a GPU when there is one; ``cpu`` keeps everything on the CPU
DEVICES = ("auto", "cpu")


@dataclass(frozen=True)
class Environment:
    """The hardware and launch context of this process.

    ``device`` is ``"cuda"``, ``"mps"`` or ``"cpu"``. ``bf16_supported`` means *native* bf16 on ``device``:
    on CUDA ``torch.cuda.is_bf16_supported(including_emulation=False)`` (compute capability 8.0+), on CPU
    whether the CPU computes bf16 natively (AVX512-BF16 or AMX-BF16), since emulated bf16 is slower than
    fp32. ``bf16_emulated`` is True where bf16 runs only through emulation (a T4 or V100: torch's plain
    ``is_bf16_supported()`` counts that too), so an explicit ``bf16`` works there, slowly. ``fp16_supported`` is True on CUDA only
    (fp16 mixed precision needs a GPU's gradient scaler path). ``world_size``/``rank``/``local_rank``
    come from the variables ``torchrun`` and ``accelerate launch`` set; a plain ``python`` run is rank
    0 of 1. ``bitsandbytes_version`` is ``None`` when bitsandbytes is not installed.
    """

    device: str = "cpu"
    gpu_count: int = 0
    gpu_names: tuple[str, ...] = ()
    cuda_capability: tuple[int, int] | None = None
    gpu_memory: tuple[int, ...] = ()  #: total memory of each visible GPU, in bytes
    bf16_supported: bool = False
    bf16_emulated: bool = False
    fp16_supported: bool = False
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    bitsandbytes_version: str | None = None
    cpu_count: int = 1

    @property
    def distributed(self) -> bool:
        """True when this process is one of several (``torchrun --nproc_per_node N`` with N > 1)."""
        return self.world_size > 1

    @property
    def is_main_process(self) -> bool:
        """True on the process that should write files and reports (global rank 0)."""
        return self.rank == 0

    def on_cpu(self) -> Environment:
        """This environment with its accelerators set aside: what a run pinned to the CPU sees."""
        return dataclasses.replace(
            self,
            device="cpu",
            gpu_count=0,
            gpu_names=(),
            gpu_memory=(),
            cuda_capability=None,
            bf16_supported=cpu_has_native_bf16(),
            bf16_emulated=False,
            fp16_supported=False,
        )

    def describe(self) -> str:
        """One line for reports: ``cuda: 2 x NVIDIA H100 (sm_90), bf16, rank 0/2, bitsandbytes 0.50.2``."""
        if self.device == "cuda":
            names = sorted(set(self.gpu_names)) or ["GPU"]
            where = f"cuda: {self.gpu_count} x {', '.join(names)}"
            if self.cuda_capability:
                where += f" (sm_{self.cuda_capability[0]}{self.cuda_capability[1]})"
        elif self.device == "mps":
            where = "mps: Apple GPU"
        else:
            where = f"cpu: {self.cpu_count} cores"
        kinds = [
            k
            for k, ok in (
                ("bf16", self.bf16_supported),
                ("bf16 emulated", self.bf16_emulated),
                ("fp16", self.fp16_supported),
            )
            if ok
        ]
        parts = [where, ", ".join(kinds) if kinds else "fp32 only"]
        if self.distributed:
            parts.append(f"rank {self.rank}/{self.world_size}")
        parts.append(
            f"bitsandbytes {self.bitsandbytes_version}" if self.bitsandbytes_version else "no bitsandbytes"
        )
        return ", ".join(parts)


def detect_environment(device: str = "auto") -> Environment:
    """Inspect this machine and process. Cheap: imports torch but not bitsandbytes or transformers.

    ``device="cpu"`` describes the machine as a run pinned to the CPU sees it (see :data:`DEVICES`).
    """
    if device not in DEVICES:
        raise HardwareError(f"unknown device {device!r}; use one of: {', '.join(DEVICES)}")
    if device == "cpu":
        return detect_environment().on_cpu()
    import torch

    world_size = _int_env("WORLD_SIZE", 1)
    rank = _int_env("RANK", 0)
    local_rank = _int_env("LOCAL_RANK", 0)
    cpu_count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    common: dict[str, Any] = dict(
        world_size=max(world_size, 1),
        rank=max(rank, 0),
        local_rank=max(local_rank, 0),
        bitsandbytes_version=_package_version("bitsandbytes"),
        cpu_count=cpu_count,
    )
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        native_bf16 = bool(torch.cuda.is_bf16_supported(including_emulation=False))
        return Environment(
            device="cuda",
            gpu_count=count,
            gpu_names=tuple(torch.cuda.get_device_name(i) for i in range(count)),
            gpu_memory=tuple(int(torch.cuda.get_device_properties(i).total_memory) for i in range(count)),
            cuda_capability=tuple(torch.cuda.get_device_capability(0)),  # type: ignore[arg-type]
            bf16_supported=native_bf16,
            bf16_emulated=not native_bf16 and bool(torch.cuda.is_bf16_supported(including_emulation=True)),
            fp16_supported=True,
            **common,
        )
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        # bf16 on MPS needs macOS 14+; autocast there is still young, so auto precision stays fp32.
        return Environment(device="mps", bf16_supported=False, fp16_supported=False, **common)
    return Environment(device="cpu", bf16_supported=cpu_has_native_bf16(), fp16_supported=False, **common)


def cpu_has_native_bf16() -> bool:
    """Whether the CPU has bf16 arithmetic instructions (AVX512-BF16 or AMX-BF16).

    Asks torch (``torch.cpu.get_capabilities()``, torch >= 2.5) and falls back to the flags in
    ``/proc/cpuinfo``. Any doubt answers False: without these instructions bf16 is emulated and slower
    than fp32.
    """
    try:
        import torch

        caps = torch.cpu.get_capabilities()  # type: ignore[attr-defined]
        return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
    except Exception:
        pass
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def choose_precision(env: Environment, requested: str = "auto") -> str:
    """Pick the training precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``.

    ``"auto"`` gives bf16 on a CUDA GPU that computes it natively, fp16 on older CUDA GPUs (a T4 or V100
    emulates bf16, slower than fp16) and fp32 elsewhere.
    On a CPU, auto stays fp32 even when the CPU has native bf16: bf16 autocast on CPU only pays off on
    some CPUs and ops, and on a CPU *without* native bf16 it is emulated and clearly slower than fp32
    (the silent slowdown); ask for ``"bf16"`` explicitly to use it. An explicit ``"bf16"`` is refused
    where the device cannot do bf16 at all (on a GPU that emulates it, it is allowed:
    :func:`precision_warnings` says why it is slow), and ``"fp16"`` is refused without CUDA (the seed script enabled
    fp16 by default and crashed on CPU).
    """
    if requested not in PRECISIONS:
        raise HardwareError(f"unknown precision {requested!r}; use one of: {', '.join(PRECISIONS)}")
    if requested == "auto":
        if env.device == "cuda":
            return "bf16" if env.bf16_supported else "fp16"
        return "fp32"
    if requested == "fp16" and env.device != "cuda":
        alternatives = 'precision = "auto" (fp32 here)' + (' or "bf16"' if env.bf16_supported else "")
        raise HardwareError(f"precision 'fp16' needs a CUDA GPU; this machine has none — use {alternatives}")
    if requested == "bf16" and not (env.bf16_supported or env.bf16_emulated):
        if env.device == "cuda":
            names = ", ".join(sorted(set(env.gpu_names))) or "this GPU"
            raise HardwareError(
                f'precision \'bf16\' is not supported by {names}; use precision = "auto" (fp16 here) or "fp32"'
            )
        raise HardwareError(
            f"precision 'bf16' is not supported natively on this {env.device} (it would be emulated, slower "
            f'than fp32); use precision = "auto" (fp32 here)'
        )
    return requested


def precision_warnings(env: Environment, precision: str) -> list[str]:
    """What is worth a warning about training in ``precision`` (from :func:`choose_precision`) on ``env``.

    bf16 on a GPU that only emulates it (a T4 or V100) runs, but slower than fp16 or even fp32.
    """
    if precision == "bf16" and env.device == "cuda" and not env.bf16_supported:
        names = ", ".join(sorted(set(env.gpu_names))) or "this GPU"
        return [
            f"precision 'bf16': {names} has no native bf16 and emulates it, slower than fp16; "
            f'precision = "auto" chooses fp16 here'
        ]
    return []


def trainer_precision_kwargs(precision: str) -> dict[str, Any]:
    """The ``transformers.TrainingArguments`` keywords for a precision from :func:`choose_precision`.

    ``{"bf16": True}``, ``{"fp16": True}`` or ``{}`` for fp32. Mixed precision: the Trainer runs the
    forward pass under autocast; the trainable (master) weights are fp32 (see :func:`model_dtype` and
    :func:`qckit.models.upcast_trainable`).
    """
    return dict(precision_info(precision).trainer_flags)


def model_dtype(precision: str, *, trains_base_weights: bool) -> Any:
    """The ``torch.dtype`` to load the base model in for ``precision``.

    * fp32 → float32.
    * bf16/fp16 with a frozen base (LoRA, quantized base): the base is loaded in that half type, which
      halves its memory; whatever trains (LoRA matrices, embeddings and head of ``train_embeddings``,
      biases, ``modules_to_save``) is cast to float32 after wrapping
      (:func:`qckit.models.upcast_trainable`) and the Trainer autocasts the forward pass.
    * bf16/fp16 while training the base weights (full fine-tuning): float32, because the optimizer
      must update fp32 master weights (fp16 weights also make the gradient scaler fail with
      "Attempting to unscale FP16 gradients"); autocast still computes in half precision.
    """
    name = precision_info(precision).name  # an unknown name is refused either way
    return torch_dtype("fp32" if trains_base_weights else name)


def precision_info(precision: str) -> Precision:
    """The :data:`PRECISION_TABLE` entry of ``precision``; ``HardwareError`` for any other name."""
    try:
        return PRECISION_TABLE[precision]
    except KeyError:
        *first, last = PRECISION_TABLE
        raise HardwareError(
            f"unknown precision {precision!r}; expected {', '.join(first)} or {last}"
        ) from None


def torch_dtype(precision: str) -> Any:
    """The ``torch.dtype`` of ``precision`` (``"bf16"`` → ``torch.bfloat16``)."""
    import torch

    return getattr(torch, precision_info(precision).dtype)


def autocast_dtype(precision: str) -> Any:
    """The dtype the Trainer autocasts the forward pass to under ``precision``; ``None`` for fp32 (no
    autocast)."""
    return torch_dtype(precision) if precision_info(precision).trainer_flags else None


def outtype_precision(outtype: str) -> str:
    """The precision of weights exported as ``outtype`` (``"f16"`` → ``"fp16"``); ``KeyError`` for an
    outtype that is no precision (``q8_0``)."""
    return {p.outtype: p.name for p in PRECISION_TABLE.values()}[outtype]


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        return int(raw) if raw else default
    except ValueError:
        return default


def _package_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
