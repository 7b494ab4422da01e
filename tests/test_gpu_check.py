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
    # every GPU path of issue #15 has its check, and every check is documented in the script's docstring
    assert {
        "bf16-lora", "bf16-lora-doc", "bf16-lora-flash", "bf16-full-flash", "fp16-lora-emb", "flash-kernel",
        "auto-ckpt", "4bit-nf4", "8bit", "fsdp",
    } == set(gpu.CHECKS)  # fmt: skip
    assert all(f"\n    {check} " in gpu.__doc__ for check in gpu.CHECKS)


def test_the_new_rows_measure_reads_a_real_run(tmp_path, tiny_model_dir):
    """The fp16 check's measure of the new tokens' rows, run on a CPU training of the tiny model."""
    from qckit.testing import SAMPLE_SENTENCES, tiny_train_settings, write_corpus
    from qckit.train import run_train
    from qckit_builtins.adapters import LoraAdapter
    from qckit_builtins.chunkers import WindowChunker

    gpu = _module()
    train = write_corpus(tmp_path / "train.txt", list(SAMPLE_SENTENCES) * 2)
    out = tmp_path / "run"
    settings = tiny_train_settings(
        [train], out, tiny_model_dir, max_steps=2, inspect_data=False, add_tokens=gpu.NEW_WORDS
    )
    run_train(
        settings, WindowChunker(max_length=32, stride=0, min_length=8), [LoraAdapter(train_embeddings=True)]
    )
    text = gpu._new_rows_moved(tiny_model_dir, out, gpu.NEW_WORDS)
    assert text.startswith("new rows moved ") and text.count("e") >= 2
