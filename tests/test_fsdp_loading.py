"""FSDP's low-host-memory loading: rank 0 reads the weights, the other ranks build the model on the meta
device and receive rank 0's when the model is sharded (the fsdp adapter's ``cpu_ram_efficient_loading``).

FSDP itself needs GPUs (the adapter refuses a CPU), so the mechanism is tested piece by piece: the model
built without its weights (``qckit.models.load_model(weights=False)``), the adapter's decision and its
TrainingArguments, the train stage asking the adapters, and two real processes (torchrun, gloo) that
load, check their layouts and receive the weights through torch's ``fully_shard`` and accelerate's
``fsdp2_load_full_state_dict`` (``tests/fsdp_loading_worker.py``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from qckit.errors import QckitError
from qckit.hardware import Environment
from qckit.models import load_model, resolve_model
from qckit.testing import SAMPLE_SENTENCES, tiny_train_settings, write_corpus
from qckit.train.run import TrainRun
from qckit_builtins.adapters import FsdpAdapter
from qckit_builtins.chunkers import WindowChunker

WORKER = Path(__file__).resolve().parent / "fsdp_loading_worker.py"
GPUS = Environment(device="cuda", gpu_count=4, world_size=4, rank=0, bf16_supported=True)


def _layout(model) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    return [(name, tuple(t.shape), t.dtype) for name, t in model.state_dict().items()]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_model_built_without_weights_is_the_loaded_one_without_storage(tiny_model_dir, dtype) -> None:
    source = resolve_model(str(tiny_model_dir))
    loaded = load_model(source, dtype=dtype)
    empty = load_model(source, dtype=dtype, weights=False)
    assert type(empty) is type(loaded) and not empty.training
    assert all(p.is_meta for p in empty.parameters())
    assert _layout(empty) == _layout(loaded)  # what the broadcast walks on both sides
    # the buffers the broadcast does not send (rotary tables) are real and equal to the loaded ones
    buffers = dict(loaded.named_buffers())
    assert buffers and all(not b.is_meta and torch.equal(b, buffers[n]) for n, b in empty.named_buffers())
    assert empty.generation_config == loaded.generation_config
    assert empty.config.to_diff_dict() == loaded.config.to_diff_dict()


def test_tied_embeddings_stay_tied_without_weights(tiny_tied_model_dir) -> None:
    empty = load_model(resolve_model(str(tiny_tied_model_dir)), weights=False)
    assert empty.get_output_embeddings().weight is empty.get_input_embeddings().weight


def test_a_model_without_weights_refuses_what_needs_them(tiny_model_dir) -> None:
    with pytest.raises(QckitError, match="without its weights with quantization_config"):
        load_model(
            resolve_model(str(tiny_model_dir)), extra_kwargs={"quantization_config": {}}, weights=False
        )


def test_fsdp_adapter_lets_rank_0_alone_read_the_weights(tiny_model) -> None:
    main, other = GPUS, dataclasses.replace(GPUS, rank=3, local_rank=3)
    assert FsdpAdapter().loads_weights({}, main) is True
    fsdp = FsdpAdapter()
    assert fsdp.loads_weights({"dtype": torch.bfloat16}, other) is False
    args: dict = {}
    fsdp.training_args(args, tiny_model, other)
    assert args["fsdp_config"]["cpu_ram_efficient_loading"] is True  # accelerate broadcasts rank 0's
    assert "fsdp: rank 0 loads the weights, 3 ranks receive them" in fsdp.notes


@pytest.mark.parametrize(
    ("adapter", "kwargs", "why"),
    [
        (FsdpAdapter(cpu_ram_efficient_loading=False), {}, "cpu_ram_efficient_loading = false"),
        (FsdpAdapter(), {"quantization_config": object()}, "a quantized base"),
    ],
)
def test_fsdp_adapter_lets_every_rank_load_when_weights_cannot_be_sent(
    tiny_model, adapter, kwargs, why
) -> None:
    other = dataclasses.replace(GPUS, rank=1, local_rank=1)
    assert adapter.loads_weights(kwargs, other) is True
    args: dict = {}
    adapter.training_args(args, tiny_model, other)
    assert "cpu_ram_efficient_loading" not in args["fsdp_config"]
    assert f"fsdp: every rank loads the weights ({why})" in adapter.notes


def test_the_loading_mode_is_not_part_of_the_runs_identity() -> None:
    from qckit.train.checkpoints import component_settings

    # the fsdp adapter's settings as a run's fingerprint recorded them before the option: such runs resume
    before = {"use", "strategy", "sharding", "offload", "layer_cls", "version", "notes"}
    default = component_settings(FsdpAdapter())
    assert set(default) == before
    assert component_settings(FsdpAdapter(cpu_ram_efficient_loading=False)) == default


def test_fsdp_config_with_efficient_loading_is_accepted_by_transformers(
    tiny_model, tmp_path, monkeypatch
) -> None:
    from transformers import TrainingArguments

    fsdp = FsdpAdapter()
    fsdp.loads_weights({}, GPUS)
    args: dict = {"output_dir": str(tmp_path), "report_to": []}
    fsdp.training_args(args, tiny_model, GPUS)
    for name in ("FSDP_CPU_RAM_EFFICIENT_LOADING", "ACCELERATE_USE_FSDP"):  # TrainingArguments writes them
        monkeypatch.setenv(name, "false")
    assert TrainingArguments(**args).fsdp_plugin_args["cpu_ram_efficient_loading"] is True


class _Receives:
    """A model adapter whose process receives the weights from elsewhere (what the fsdp adapter says off rank 0)."""

    name: ClassVar[str] = "receives"
    notes = ("receives: built without its weights",)

    def check(self, env: Any, adapters: Any) -> None:
        return None

    def load_kwargs(self, kwargs: dict[str, Any], env: Any) -> None:
        return None

    def loads_weights(self, kwargs: dict[str, Any], env: Any) -> bool:
        return False

    def wrap_model(self, model: Any, env: Any) -> Any:
        return model

    def training_args(self, args: dict[str, Any], model: Any, env: Any) -> None:
        return None


def test_the_train_stage_builds_the_model_without_weights_when_an_adapter_says_so(
    tmp_path, tiny_model_dir
) -> None:
    corpus = write_corpus(tmp_path / "train.txt", SAMPLE_SENTENCES)
    settings = tiny_train_settings([corpus], tmp_path / "out", tiny_model_dir)
    run = TrainRun(settings, WindowChunker(max_length=32, stride=0, min_length=8), [_Receives()])
    checked = run.check()
    loaded = run.load_model(checked, run.data(checked))
    assert all(p.is_meta for p in loaded.model.parameters())
    assert loaded.total > 0


def test_two_ranks_rank_1_receives_rank_0s_weights(tmp_path, tiny_model_dir, tiny_tied_model_dir) -> None:
    out = tmp_path / "out"
    out.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += [str(WORKER), str(tiny_model_dir), str(tiny_tied_model_dir), str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rank0, rank1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))

    for name in ("untied", "tied_new_tokens", "lora", "lora_tied_new_tokens"):
        sender, receiver = rank0[name], rank1[name]
        assert sender["reads_weights"] and sender["meta_parameters"] == 0
        # rank 1 read nothing: every parameter without storage, through growing and LoRA wrapping too
        assert not receiver["reads_weights"] and receiver["meta_parameters"] == receiver["parameters"] > 0
        assert receiver["meta_after_wrapping"] > 0 and receiver["meta_buffers"] == 0
        assert receiver["buffers"] == sender["buffers"]  # rotary tables computed alike, not sent
        # after the broadcast every tensor of every rank equals rank 0's, exactly
        assert sender["differing_from_rank0"] == [[], []]
        assert receiver["rows"] == sender["rows"] and receiver["tied"] == sender["tied"]
        assert "fsdp: rank 0 loads the weights, 1 rank receives them" in receiver["notes"]
    for name in ("tied_new_tokens", "lora_tied_new_tokens"):
        assert rank0[name]["tied"] and rank1[name]["tied_as_built"]
    assert rank0["tied_new_tokens"]["rows"] > rank0["untied"]["rows"]  # grown by the new words
    assert rank1["lora"]["meta_after_wrapping"] > rank1["lora"]["parameters"]  # LoRA's own weights, on meta
    # a rank that built another model is refused on both ranks, before anything is broadcast
    for seen in (rank0["mismatch"], rank1["mismatch"]):
        assert "rank 1 built the model differently from rank 0" in seen["refused"]
        assert (
            "model.embed_tokens.weight: rank 0 (496, 64) torch.float32, rank 1 (503, 64)" in seen["refused"]
        )
    # so is one whose rotary table (a buffer each rank keeps its own of) differs
    for seen in (rank0["other_rotary"], rank1["other_rotary"]):
        assert "model.rotary_emb.inv_freq: rank 0 torch.float32 values" in seen["refused"]
    # transformers 5.25's own switch (FSDP_CPU_RAM_EFFICIENT_LOADING) still loads every weight off local
    # rank 0 into host memory, hence qckit's own build from the config; if this fails, use the library's
    assert rank1["transformers_switch"]["real_parameters"] == rank1["untied"]["parameters"]
