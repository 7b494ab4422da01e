"""Two-process DDP training on CPU (torchrun + gloo) through the real command line."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

from qckit.testing import SAMPLE_SENTENCES, write_corpus
from qckit.train import estimate_optimizer_steps


def test_torchrun_two_processes_train_one_model(tmp_path, tiny_model_dir):
    train = write_corpus(tmp_path / "train.txt", list(SAMPLE_SENTENCES) * 3)
    val = write_corpus(tmp_path / "val.txt", SAMPLE_SENTENCES[::4])
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "qckit",
        "train",
        "--train_file",
        str(train),
        "--val_file",
        str(val),
        "--model_name",
        str(tiny_model_dir),
        "--output_dir",
        str(out),
        "--num_epochs",
        "0.2",
        "--batch_size",
        "2",
        "--gradient_accumulation_steps",
        "1",
        "--max_length",
        "64",
        "--stride",
        "8",
        "--learning_rate",
        "1e-3",
        "--inspect_samples",
        "1",
        "--eval_steps",
        "2",
        "--save_steps",
        "2",
        "--logging_steps",
        "1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "120"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["world_size"] == 2 and "rank 0/2" in summary["device"]
    # each optimizer step sees one batch of 2 windows on each of the 2 processes
    steps = estimate_optimizer_steps(summary["windows"], 2, 1, 0.2, world_size=2)
    assert summary["global_step"] == summary["max_steps"] == steps
    assert summary["tokens_seen"] > steps * 2 * 64  # more than one process's share: tokens are gathered
    assert summary["tokens_seen"] <= steps * 2 * 2 * 64
    losses = [
        h["loss"] for h in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in h
    ]
    assert len(losses) == steps and all(math.isfinite(x) for x in losses)
    for key in ("eval_before", "eval_after"):
        assert math.isfinite(summary[key]["val"]["bits_per_byte"])
    assert (out / "adapter_model.safetensors").is_file()
    assert len(list((out / "logs").glob("events.out.tfevents.*"))) == 1  # only rank 0 writes TensorBoard
    assert proc.stdout.count("qckit train: summary") == 1  # only rank 0 reports
