"""``qckit train``, ``qckit evaluate`` and ``qckit export`` through the real CLI, on a tiny local model."""

from __future__ import annotations

import json
import re

import pytest
from rich.console import Console

from qckit import report
from qckit.cli import main
from qckit.testing import SAMPLE_SENTENCES, write_corpus


def run(argv):
    console = Console(width=200, record=True, force_terminal=False)
    status = main(argv, console=console)
    return status, console.export_text()


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("cli_train")
    train = write_corpus(tmp / "train.txt", list(SAMPLE_SENTENCES) * 3)
    val = write_corpus(tmp / "val.txt", SAMPLE_SENTENCES[:8])
    out = tmp / "model"
    status, text = run(
        [
            "train",
            "--train_file",
            str(train),
            "--val_file",
            str(val),
            "--output_dir",
            str(out),
            "--model_name",
            str(tiny_model_dir),
            "--max_length",
            "64",
            "--stride",
            "8",
            "--batch_size",
            "4",
            "--gradient_accumulation_steps",
            "1",
            "--max_steps",
            "12",
            "--learning_rate",
            "5e-3",
            "--lora_r",
            "8",
            "--inspect_samples",
            "1",
        ]
    )
    assert status == 0, text
    return tmp, out, val, text


def test_a_redirected_log_shows_each_phase_and_a_loss_line_at_every_logging_step(trained):
    _, out, _, text = trained
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    losses = [entry["loss"] for entry in history if "loss" in entry]
    loss_lines = [line for line in text.splitlines() if re.search(r"\] train  \d+/12 steps  loss=", line)]
    assert len(loss_lines) == len(losses) >= 2
    for line, loss in zip(loss_lines, losses, strict=True):
        assert f"loss={report._n(loss)}" in line and "ETA " in line
    for started in ("loading the tokenizer", "loading model", "checking document isolation", "evaluate val"):
        assert re.search(rf"\] {started}.* …$", text, re.M), started
        assert re.search(rf"\] {started}.* done in \d+:\d\d:\d\d$", text, re.M), started


def test_train_reports_inspection_and_before_after(trained):
    _, out, _, text = trained
    assert "qckit train: inspection" in text and "eval before val [bpb/document] (step 0): bits/byte" in text
    assert "Held-out evaluation" in text
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["eval_after"]["val"]["bits_per_byte"] < summary["eval_before"]["val"]["bits_per_byte"]
    assert (out / "adapter_model.safetensors").exists() and (out / "recipe.toml").exists()


def test_evaluate_command_matches_the_training_summary(trained, tiny_model_dir):
    _, out, val, _ = trained
    status, text = run(
        [
            "evaluate",
            "--model",
            str(tiny_model_dir),
            "--adapter",
            str(out),
            "--val_file",
            str(val),
            "--max_length",
            "64",
            "--json",
        ]
    )
    assert status == 0, text
    result = json.loads(text[text.index("{") :])
    after = json.loads((out / "training_summary.json").read_text())["eval_after"]["val"]
    assert result["tokens"] == after["tokens"]
    assert result["bits_per_byte"] == pytest.approx(after["bits_per_byte"], rel=1e-3)


def test_export_merges_into_safetensors_model(trained, tiny_model_dir):
    tmp, out, val, _ = trained
    merged = tmp / "merged"
    status, text = run(
        ["export", "--model", str(tiny_model_dir), "--adapter", str(out), "--output", str(merged)]
    )
    assert status == 0, text
    assert list(merged.glob("*.safetensors")) and not list(merged.glob("*.bin"))
    status, text = run(
        ["evaluate", "--model", str(merged), "--val_file", str(val), "--max_length", "64", "--json"]
    )
    assert status == 0, text


def test_train_fp16_on_cpu_fails_before_loading_with_what_to_change(tmp_path, tiny_model_dir):
    train = write_corpus(tmp_path / "t.txt", SAMPLE_SENTENCES)
    status, text = run(
        [
            "train",
            "--train_file",
            str(train),
            "--output_dir",
            str(tmp_path / "o"),
            "--model_name",
            str(tiny_model_dir),
            "--precision",
            "fp16",
        ]
    )
    assert status != 0
    assert "fp16" in text and "CUDA" in text
