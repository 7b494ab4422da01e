"""qckit.train.checkpoints on hand-built output directories: which checkpoints resume, what overwrite removes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from qckit.errors import InputError
from qckit.train.checkpoints import choose_checkpoint, write_marker

FINGERPRINT = {"settings": {"learning_rate": 0.001}}


def _checkpoint(output_dir: Path, step: int, optimizer: str | None) -> Path:
    """A complete qckit checkpoint whose optimizer state is laid out as ``optimizer`` says."""
    checkpoint = output_dir / f"checkpoint-{step}"
    checkpoint.mkdir(parents=True)
    save_file({"w": torch.zeros(2, 2)}, str(checkpoint / "model.safetensors"))
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": step}), encoding="utf-8")
    torch.save({"last_epoch": step}, checkpoint / "scheduler.pt")
    if optimizer == "optimizer_0":  # accelerate's FSDP SHARDED_STATE_DICT: a directory of shards
        (checkpoint / optimizer).mkdir()
        (checkpoint / optimizer / "__0_0.distcp").write_bytes(b"shard")
    elif optimizer is not None:
        torch.save({"state": {}}, checkpoint / optimizer)
    write_marker(checkpoint, FINGERPRINT, None, step)
    return checkpoint


@pytest.mark.parametrize("optimizer", ["optimizer.pt", "optimizer.bin", "optimizer_0"])
@pytest.mark.parametrize("allow_pickle", [False, True])
def test_every_optimizer_layout_the_trainer_loads_is_resumable(tmp_path, optimizer, allow_pickle):
    checkpoint = _checkpoint(tmp_path, 4, optimizer)
    warnings: list[str] = []
    chosen = choose_checkpoint(tmp_path, FINGERPRINT, allow_pickle=allow_pickle, warn=warnings.append)
    assert chosen is not None and chosen[0] == checkpoint and chosen[2] == []
    assert warnings == []


def test_a_checkpoint_without_optimizer_state_is_skipped(tmp_path):
    good = _checkpoint(tmp_path, 2, "optimizer.bin")
    _checkpoint(tmp_path, 4, None)
    (tmp_path / "checkpoint-4" / "optimizer_0").mkdir()  # an empty shard directory is no state either
    warnings: list[str] = []
    chosen = choose_checkpoint(tmp_path, FINGERPRINT, allow_pickle=True, warn=warnings.append)
    assert chosen is not None and chosen[0] == good
    assert len(warnings) == 1 and "checkpoint-4" in warnings[0] and "no optimizer state" in warnings[0]


def test_no_loadable_checkpoint_is_an_input_error(tmp_path):
    _checkpoint(tmp_path, 2, None)
    with pytest.raises(InputError, match="no optimizer state"):
        choose_checkpoint(tmp_path, FINGERPRINT, allow_pickle=False, warn=lambda _: None)
