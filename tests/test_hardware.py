"""Hardware detection and precision choice (qckit.hardware)."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
import torch

from qckit.errors import HardwareError
from qckit.hardware import (
    PRECISIONS,
    Environment,
    autocast_dtype,
    choose_precision,
    cpu_has_native_bf16,
    detect_environment,
    model_dtype,
    outtype_precision,
    trainer_precision_kwargs,
)

CPU = Environment(device="cpu", bf16_supported=False, cpu_count=2, bitsandbytes_version="0.50.2")
CPU_BF16 = Environment(device="cpu", bf16_supported=True, cpu_count=2)
H100 = Environment(
    device="cuda",
    gpu_count=2,
    gpu_names=("NVIDIA H100", "NVIDIA H100"),
    cuda_capability=(9, 0),
    bf16_supported=True,
    fp16_supported=True,
    world_size=2,
)
V100 = Environment(
    device="cuda",
    gpu_count=1,
    gpu_names=("Tesla V100",),
    cuda_capability=(7, 0),
    bf16_supported=False,
    fp16_supported=True,
)


def test_detects_this_cpu_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    env = detect_environment()
    assert env.device == "cpu"
    assert env.gpu_count == 0 and env.gpu_names == () and env.cuda_capability is None
    assert env.fp16_supported is False
    assert (env.world_size, env.rank, env.local_rank) == (1, 0, 0)
    assert env.distributed is False and env.is_main_process
    assert env.cpu_count >= 1
    try:
        expected = importlib.metadata.version("bitsandbytes")
    except importlib.metadata.PackageNotFoundError:
        expected = None
    assert env.bitsandbytes_version == expected
    line = env.describe()
    assert line.startswith("cpu:") and "\n" not in line


def test_reads_launcher_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    env = detect_environment()
    assert (env.world_size, env.rank, env.local_rank) == (4, 3, 1)
    assert env.distributed and not env.is_main_process
    assert "rank 3/4" in env.describe()


def test_cpu_bf16_agrees_with_cpuinfo_flags() -> None:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo on this system")
    flags: set[str] = set()
    for line in cpuinfo.read_text(errors="replace").splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    assert cpu_has_native_bf16() == bool(flags & {"avx512_bf16", "amx_bf16"})


def test_auto_precision_is_fp32_on_cpu_even_with_native_bf16() -> None:
    assert choose_precision(CPU) == "fp32"
    assert choose_precision(CPU_BF16, "auto") == "fp32"
    assert choose_precision(detect_environment()) == "fp32"


def test_auto_precision_on_gpus() -> None:
    assert choose_precision(H100) == "bf16"
    assert choose_precision(V100) == "fp16"


def test_fp16_on_cpu_is_refused_with_the_fix() -> None:
    with pytest.raises(HardwareError) as err:
        choose_precision(CPU_BF16, "fp16")
    message = str(err.value)
    assert "needs a CUDA GPU" in message and 'precision = "auto"' in message and '"bf16"' in message
    with pytest.raises(HardwareError) as err:
        choose_precision(CPU, "fp16")
    assert '"bf16"' not in str(err.value)  # not suggested where it is not supported


def test_explicit_bf16() -> None:
    assert choose_precision(CPU_BF16, "bf16") == "bf16"
    assert choose_precision(H100, "bf16") == "bf16"
    with pytest.raises(HardwareError, match="slower"):
        choose_precision(CPU, "bf16")
    with pytest.raises(HardwareError, match="Tesla V100"):
        choose_precision(V100, "bf16")
    assert choose_precision(V100, "fp32") == "fp32"


def test_unknown_precision() -> None:
    with pytest.raises(HardwareError, match="unknown precision 'fp8'"):
        choose_precision(CPU, "fp8")


def test_trainer_precision_kwargs() -> None:
    assert trainer_precision_kwargs("bf16") == {"bf16": True}
    assert trainer_precision_kwargs("fp16") == {"fp16": True}
    assert trainer_precision_kwargs("fp32") == {}
    with pytest.raises(HardwareError):
        trainer_precision_kwargs("auto")


def test_load_dtype_keeps_trained_weights_fp32() -> None:
    assert model_dtype("fp32", trains_base_weights=False) is torch.float32
    assert model_dtype("bf16", trains_base_weights=False) is torch.bfloat16  # frozen base under LoRA
    assert model_dtype("fp16", trains_base_weights=False) is torch.float16
    assert (
        model_dtype("bf16", trains_base_weights=True) is torch.float32
    )  # full fine-tuning: fp32 master weights
    assert model_dtype("fp16", trains_base_weights=True) is torch.float32
    with pytest.raises(HardwareError, match="unknown precision 'auto'"):
        model_dtype("auto", trains_base_weights=True)


def test_the_precision_table_is_what_training_timing_and_export_read() -> None:
    from qckit.export import OUTTYPES

    # the time estimate autocasts as the Trainer does: only where the Trainer flags mixed precision
    assert [autocast_dtype(p) for p in ("fp32", "bf16", "fp16")] == [None, torch.bfloat16, torch.float16]
    # every safetensors outtype is a precision, and back
    assert {outtype_precision(t) for t in OUTTYPES["safetensors"]} == set(PRECISIONS) - {"auto"}
    assert [outtype_precision(t) for t in ("f32", "f16", "bf16")] == ["fp32", "fp16", "bf16"]
    with pytest.raises(KeyError):
        outtype_precision("q8_0")


def test_a_run_pinned_to_the_cpu_sees_no_accelerator() -> None:
    cpu = H100.on_cpu()
    assert cpu.device == "cpu" and cpu.gpu_count == 0 and not cpu.fp16_supported
    assert cpu.world_size == H100.world_size and cpu.bitsandbytes_version == H100.bitsandbytes_version
    assert choose_precision(cpu) == "fp32"
    assert detect_environment("cpu").device == "cpu"
    with pytest.raises(HardwareError, match="unknown device 'tpu'"):
        detect_environment("tpu")
