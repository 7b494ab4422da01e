"""qckit.train.checkpoints on hand-built output directories: which checkpoints resume, what overwrite removes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from qckit.errors import InputError, RecipeError
from qckit.testing import SAMPLE_SENTENCES, tiny_train_settings, write_corpus
from qckit.train import run_train
from qckit.train.checkpoints import check_output_dir, choose_checkpoint, clear_output_dir, write_marker
from qckit_builtins.chunkers import WindowChunker

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


def _users_directory(path: Path) -> Path:
    path.mkdir(parents=True)
    for name in ("README.md", "recipe.toml", "config.json", "tokenizer.json"):
        (path / name).write_text(f"the user's own {name}\n", encoding="utf-8")
    (path / "logs").mkdir()
    (path / "logs" / "notes.txt").write_text("mine\n", encoding="utf-8")
    return path


def test_overwrite_removes_nothing_from_a_directory_that_holds_no_qckit_run(tmp_path):
    out = _users_directory(tmp_path / "project")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert clear_output_dir(out) == []
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert (out / "README.md").read_text(encoding="utf-8") == "the user's own README.md\n"


def test_overwrite_clears_a_qckit_runs_outputs(tmp_path):
    out = _users_directory(tmp_path / "run")
    _checkpoint(out, 4, "optimizer.pt")
    removed = clear_output_dir(out)
    assert {"checkpoint-4", "logs", "README.md", "recipe.toml", "config.json", "tokenizer.json"} <= set(
        removed
    )
    assert list(out.iterdir()) == []


def test_overwrite_refuses_checkpoints_qckit_did_not_write(tmp_path, tiny_model_dir):
    out = _users_directory(tmp_path / "project")
    (out / "checkpoint-7").mkdir()
    check_output_dir(out, str(tiny_model_dir), overwrite=False)  # refuse_fresh_run speaks for that case
    with pytest.raises(
        RecipeError, match=r"^train\.output_dir: overwrite_output_dir: .* checkpoint-7 .*nothing was removed"
    ):
        check_output_dir(out, str(tiny_model_dir), overwrite=True)
    assert (out / "checkpoint-7").is_dir() and (out / "README.md").is_file()


@pytest.mark.parametrize("overwrite", [False, True])
def test_output_dir_that_is_the_model_directory_is_refused_in_one_line(tmp_path, tiny_model_dir, overwrite):
    model = tmp_path / "model"
    model.mkdir()
    for path in tiny_model_dir.iterdir():
        (model / path.name).write_bytes(path.read_bytes())
    corpus = [write_corpus(tmp_path / "train.txt", SAMPLE_SENTENCES)]
    before = {p.name: p.read_bytes() for p in model.iterdir()}
    settings = tiny_train_settings(corpus, model / ".." / "model", model, overwrite_output_dir=overwrite)
    with pytest.raises(RecipeError) as caught:
        run_train(settings, WindowChunker(), [])
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("train.output_dir: ") and "is the base model's directory" in message
    assert {p.name: p.read_bytes() for p in model.iterdir()} == before


def _geometry(world_size: int, batch_size: int = 4, accumulation: int = 2, gpus: int = 0) -> dict[str, int]:
    from qckit.hardware import Environment
    from qckit.train.checkpoints import batch_geometry
    from qckit.train.settings import TrainSettings

    settings = TrainSettings(batch_size=batch_size, gradient_accumulation_steps=accumulation)
    env = Environment(device="cuda" if gpus else "cpu", gpu_count=gpus, world_size=world_size)
    return batch_geometry(settings, env)


def test_batch_geometry_counts_processes_data_parallel_gpus_and_accumulation():
    assert _geometry(1) == {
        "world_size": 1,
        "micro_batch": 4,
        "gradient_accumulation_steps": 2,
        "global_batch": 8,
    }
    assert _geometry(2)["global_batch"] == 16
    assert _geometry(1, gpus=2)["micro_batch"] == 8  # one process drives both GPUs (DataParallel)
    assert _geometry(2, gpus=2)["micro_batch"] == 4  # one process per GPU


def test_a_resume_with_another_batch_geometry_is_refused_naming_both(tmp_path):
    two = {**FINGERPRINT, "geometry": _geometry(2)}
    checkpoint = _checkpoint(tmp_path, 4, "optimizer.pt")
    write_marker(checkpoint, two, None, 4)
    one = {**FINGERPRINT, "geometry": _geometry(1)}
    with pytest.raises(InputError) as caught:
        choose_checkpoint(tmp_path, one, allow_pickle=False, warn=lambda _: None)
    message = str(caught.value)
    assert "\n" not in message and "checkpoint-4" in message
    assert "2 process(es) x 4 windows x 2 accumulation = 16 windows per step" in message
    assert "1 process(es) x 4 windows x 2 accumulation = 8 windows per step" in message
    chosen = choose_checkpoint(
        tmp_path, two, allow_pickle=False, warn=lambda _: None
    )  # the same geometry resumes
    assert chosen is not None and chosen[0] == checkpoint


def test_a_checkpoint_from_before_the_geometry_still_resumes(tmp_path):
    checkpoint = _checkpoint(tmp_path, 2, "optimizer.pt")  # its marker has no geometry
    run = {**FINGERPRINT, "geometry": _geometry(1)}
    chosen = choose_checkpoint(tmp_path, run, allow_pickle=False, warn=lambda _: None)
    assert chosen is not None and chosen[0] == checkpoint
    with pytest.raises(InputError, match="another run"):  # the rest must still match
        choose_checkpoint(
            tmp_path,
            {"settings": {"learning_rate": 0.5}, "geometry": _geometry(1)},
            allow_pickle=False,
            warn=print,
        )
