"""bench/gpu_check.sh: skips cleanly without a GPU; its throughput arithmetic is right."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "bench" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_script_skips_cleanly_where_no_gpu_is_visible():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable}
    proc = subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_check.sh")], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        proc.stdout.strip()
        == "gpu_check: skipped, no CUDA GPU visible (or torch is not importable with " + sys.executable + ")"
    )


def test_the_python_entry_point_skips_too(capsys):
    import torch

    if torch.cuda.is_available():  # pragma: no cover - the suite hides CUDA devices
        pytest.skip("a GPU is visible")
    assert _module().main([]) == 0
    assert "skipped, no CUDA GPU visible" in capsys.readouterr().out


def test_mfu_arithmetic_and_peaks(monkeypatch):
    gpu = _module()
    monkeypatch.delenv("QCKIT_PEAK_TFLOPS", raising=False)
    assert gpu.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert gpu.peak_tflops("NVIDIA L40S") == 362.0  # the longest matching name, not "L40" or "L4"
    assert gpu.peak_tflops("NVIDIA L4") == 121.0
    assert gpu.peak_tflops("Some Future GPU") is None
    monkeypatch.setenv("QCKIT_PEAK_TFLOPS", "100")
    assert gpu.peak_tflops("Some Future GPU") == 100.0
    per_token = gpu.flops_per_token(parameters=1_000_000, layers=2, hidden=64, seq=128)
    assert per_token == 6e6 + 12 * 2 * 64 * 128
    # 50k tokens/s of that model on 2 GPUs of 100 TFLOP/s
    assert gpu.mfu(50_000, per_token, 100.0, gpus=2) == pytest.approx(50_000 * per_token / 2e14)
    assert gpu.mfu(50_000, per_token, None) is None
    assert set(gpu.CHECKS) == {"bf16-lora", "bf16-lora-doc", "bf16-lora-flash", "4bit-nf4", "8bit", "fsdp"}
