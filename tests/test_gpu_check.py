"""bench/gpu_check.sh: skips cleanly without a GPU; its throughput arithmetic, its cases' CPU-runnable parts."""

from __future__ import annotations

import argparse
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
        "precision", "bf16-lora", "bf16-lora-doc", "bf16-lora-flash", "bf16-full-flash", "fp16-lora-emb",
        "flash-kernel", "padding-free", "auto-ckpt", "4bit-nf4", "8bit", "fsdp", "resume-nproc",
    } == set(gpu.CHECKS)  # fmt: skip
    assert all(f"\n    {check} " in gpu.__doc__ for check in gpu.CHECKS)
    # and gpu_check.sh's header names each one
    header = (REPO / "bench" / "gpu_check.sh").read_text()
    for check in gpu.CHECKS:
        assert check in header, check


def test_only_takes_the_new_checks_and_skips_without_a_gpu(capsys):
    import torch

    if torch.cuda.is_available():  # pragma: no cover - the suite hides CUDA devices
        pytest.skip("a GPU is visible")
    assert _module().main(["--only", "precision", "padding-free", "resume-nproc"]) == 0
    assert "skipped, no CUDA GPU visible" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        _module().main(["--only", "no-such-check"])


def test_the_precision_rule_and_its_problems():
    """auto must follow native bf16 (sm >= 80); an explicit bf16 warns only where the GPU emulates it."""
    from qckit.hardware import Environment, choose_precision, precision_warnings

    gpu = _module()
    assert [gpu.expected_auto_precision(c) for c in ((7, 0), (7, 5), (8, 0), (8, 6), (9, 0))] == [
        "fp16", "fp16", "bf16", "bf16", "bf16",
    ]  # fmt: skip
    # qckit's own decisions on a fabricated H100 and T4 pass; the warning is qckit's real one
    for capability, native, name in (((9, 0), True, "NVIDIA H100"), ((7, 5), False, "Tesla T4")):
        env = Environment(
            device="cuda", gpu_count=1, gpu_names=(name,), cuda_capability=capability,
            bf16_supported=native, bf16_emulated=not native, fp16_supported=True,
        )  # fmt: skip
        auto = choose_precision(env, "auto")
        warnings = precision_warnings(env, choose_precision(env, "bf16"))
        assert bool(warnings) is not native
        assert gpu.precision_problems(capability, native, auto, warnings) == []
    # each way of getting it wrong is named
    assert gpu.precision_problems((9, 0), True, "fp16", []) == [
        'precision = "auto" resolved to fp16 on sm_90, expected bf16'
    ]
    assert gpu.precision_problems((7, 5), True, "fp16", ["precision 'bf16': emulated"]) == [
        "native bf16 is True on sm_75"
    ]
    assert gpu.precision_problems((7, 0), False, "fp16", []) == [
        "an explicit bf16 ran without a warning on sm_70"
    ]
    assert gpu.precision_problems((7, 0), False, "fp16", None) == []  # refused: also not silent
    assert gpu.precision_problems((8, 0), True, "bf16", None) == ["an explicit bf16 was refused on sm_80"]
    assert gpu.precision_problems((8, 9), True, "bf16", ["precision 'bf16': slow"]) == [
        "an explicit bf16 warned on sm_89: precision 'bf16': slow"
    ]


def test_the_precision_case_reads_qckits_own_check(tmp_path, tiny_model_dir):
    """What the precision check asks of TrainRun.check, run here on the CPU (where auto is fp32)."""
    from qckit.testing import SAMPLE_SENTENCES, write_corpus

    gpu = _module()
    train = write_corpus(tmp_path / "train.txt", SAMPLE_SENTENCES)
    env, precision, warnings = gpu._checked_precision("auto", tiny_model_dir, train, tmp_path / "run", "cpu")
    assert (env.device, precision, warnings) == ("cpu", "fp32", [])
    assert not (tmp_path / "run").exists()  # the check writes nothing


def test_the_padding_free_case_runs_the_bench_and_computes_mfu(tmp_path):
    """bench_padding_free.py's --json record read back (CPU stand-in kernel, a small model), with MFU."""
    gpu = _module()
    ns = argparse.Namespace(seq=32, batch=2, steps=1, timeout=120)
    record = gpu._padding_free_bench(tmp_path / "pf", ns, "", model={"hidden": 64, "layers": 2})
    assert (record["hidden"], record["layers"], record["seq"]) == (64, 2, 32)
    assert record["parameters"] > 64 * 64 * 2
    rates = record["tokens_per_s"]
    assert rates["flash padding-free"] > 0 and rates["flash padded rows"] > 0
    line = gpu.padding_free_line(record, peak=1.0)
    per_token = gpu.flops_per_token(record["parameters"], 2, 64, 32)
    assert line.startswith(f"padding-free {rates['flash padding-free']:,.0f} tokens/s ")
    assert gpu.mfu_text(gpu.mfu(rates["flash padded rows"], per_token, 1.0)) in line
    assert f"x{rates['flash padding-free'] / rates['flash padded rows']:.2f}" in line
    assert "MFU n/a" in gpu.padding_free_line(record, peak=None)


def test_the_geometry_refusal_is_found_in_qckits_own_message(tmp_path):
    """The resume check recognises the error qckit raises for a checkpoint of another process count."""
    from qckit.errors import InputError
    from qckit.hardware import Environment
    from qckit.train.checkpoints import batch_geometry, choose_checkpoint, write_marker
    from qckit.train.settings import TrainSettings

    gpu = _module()
    settings = TrainSettings(batch_size=8, gradient_accumulation_steps=1)
    checkpoint = tmp_path / "checkpoint-2"
    checkpoint.mkdir()
    write_marker(checkpoint, {"geometry": batch_geometry(settings, Environment(world_size=2))}, None, 2)
    with pytest.raises(InputError) as caught:
        choose_checkpoint(
            tmp_path,
            {"geometry": batch_geometry(settings, Environment(world_size=1))},
            allow_pickle=False,
            warn=lambda _: None,
        )
    stderr = f"some noise\nerror: {caught.value}\nE1208 torchrun: ChildFailedError\n"
    assert gpu.geometry_refusal(stderr, 2, 1, 8) == f"error: {caught.value}"
    with pytest.raises(RuntimeError, match="no refusal naming"):
        gpu.geometry_refusal(stderr, 4, 1, 8)  # another geometry than the one refused
    with pytest.raises(RuntimeError, match="ChildFailedError"):
        gpu.geometry_refusal("error: out of memory\nE1208 torchrun: ChildFailedError\n", 2, 1, 8)


@pytest.mark.slow
def test_the_resume_case_end_to_end_on_cpu(tmp_path, tiny_model_dir, monkeypatch):
    """The resume check itself with two gloo processes on the CPU: train, save, resume in one, refused."""
    from qckit.testing import SAMPLE_SENTENCES, write_corpus

    gpu = _module()
    train = write_corpus(tmp_path / "train.txt", list(SAMPLE_SENTENCES) * 3)
    ns = argparse.Namespace(seq=64, batch=2, timeout=300)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    result = gpu._run_resume_nproc(tiny_model_dir, train, tmp_path / "run", ns, processes=2, device="cpu")
    assert result["extra"].startswith("2 -> 1 process refused: error: ")
    assert "2 process(es) x 2 windows x 1 accumulation = 4 windows per step" in result["extra"]
    assert "1 process(es) x 2 windows x 1 accumulation = 2 windows per step" in result["extra"]


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


def test_peak_host_memory_is_sampled_per_rank():
    """The fsdp check's per-rank peak RSS, on a launcher whose rank 0 holds 200 MB more than rank 1."""
    gpu = _module()
    child = (
        "import os, time; held = bytearray(200 * 2**20 if os.environ['RANK'] == '0' else 1); "
        "held[::4096] = b'x' * len(held[::4096]); time.sleep(1.5)"
    )
    launcher = (
        "import os, subprocess, sys; procs = [subprocess.Popen([sys.executable, '-c', sys.argv[1]], "
        "env={**os.environ, 'RANK': str(r)}) for r in (0, 1)]; sys.exit(max(p.wait() for p in procs))"
    )
    peaks: dict[int, int] = {}
    proc = gpu._launch([sys.executable, "-c", launcher, child], argparse.Namespace(timeout=60), peaks)
    assert proc.returncode == 0 and set(peaks) == {0, 1}
    assert peaks[0] - peaks[1] > 150 * 2**20


def test_a_launch_past_its_timeout_stops_every_rank():
    """torchrun starts each rank in a session of its own: a timeout must stop the ranks, not only torchrun."""
    import psutil

    gpu = _module()
    sleeper = "import time; time.sleep(120)"
    launcher = (
        "import subprocess, sys; procs = [subprocess.Popen([sys.executable, '-c', sys.argv[1]], "
        "start_new_session=True) for _ in (0, 1)]; [p.wait() for p in procs]"
    )
    before = {p.pid for p in psutil.process_iter()}
    with pytest.raises(subprocess.TimeoutExpired):
        gpu._launch([sys.executable, "-c", launcher, sleeper], argparse.Namespace(timeout=3))
    left = [
        p
        for p in psutil.process_iter(["cmdline"])
        if p.pid not in before and sleeper in (p.info["cmdline"] or [])
    ]
    assert left == [], left
