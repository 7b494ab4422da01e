"""Adapters that cannot run here are refused inside the run, before any model is loaded and before the
output directory exists: through ``run_train`` and through the CLI."""

from __future__ import annotations

import pytest
from rich.console import Console

from qckit.cli import main
from qckit.errors import HardwareError
from qckit.testing import SAMPLE_SENTENCES, write_corpus
from qckit.train import TrainSettings, run_train
from qckit_builtins.adapters import FourBitAdapter, FsdpAdapter, LoraAdapter
from qckit_builtins.chunkers import WindowChunker

# The model does not exist: had anything tried to resolve or load it first, the error would be an
# InputError naming it instead of the adapter's refusal.
MISSING_MODEL = "./no/such/model"


@pytest.fixture
def train_file(tmp_path):
    return write_corpus(tmp_path / "train.txt", SAMPLE_SENTENCES)


@pytest.mark.parametrize(
    ("adapters", "message"),
    [
        ([LoraAdapter(), FsdpAdapter()], "FSDP needs CUDA GPUs"),
        ([FourBitAdapter()], "a quantized base cannot be fully fine-tuned; add the lora adapter"),
    ],
)
def test_run_train_refuses_before_loading_or_writing(tmp_path, train_file, adapters, message):
    out = tmp_path / "out"
    settings = TrainSettings(train_file=str(train_file), output_dir=str(out), model=MISSING_MODEL)
    with pytest.raises(HardwareError, match=message):
        run_train(settings, WindowChunker(), adapters)
    assert not out.exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--fsdp", "full_shard auto_wrap"], "FSDP needs CUDA GPUs"),
        (["--use_4bit", "--no_use_lora"], "add the lora adapter"),
    ],
)
def test_the_cli_refuses_before_loading_or_writing(tmp_path, train_file, flags, message):
    out = tmp_path / "out"
    console = Console(width=200, record=True, force_terminal=False)
    argv = ["train", "--train_file", str(train_file), "--output_dir", str(out), "--model_name", MISSING_MODEL]
    status = main([*argv, *flags], console=console, stderr=console)
    assert status == HardwareError.exit_code == 6
    assert message in console.export_text()
    assert not out.exists()
