"""The optimizer takes the parameter groups an adapter asks for (``optimizer_param_groups``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from qckit.errors import QckitError
from qckit.testing import SAMPLE_SENTENCES, write_corpus
from qckit.train import TrainRun, TrainSettings
from qckit.train.trainer import adapter_param_groups
from qckit_builtins.adapters import LoraAdapter
from qckit_builtins.chunkers import WindowChunker


class FrozenBLora(LoraAdapter):
    """LoRA whose B matrices get their own learning rate (0 here, so they must stay at their zero init)."""

    def __init__(self, b_lr: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.b_lr = b_lr

    def optimizer_param_groups(self, model, learning_rate):
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        return [
            {"params": [p for n, p in params if "lora_B" not in n]},
            {"params": [p for n, p in params if "lora_B" in n], "lr": self.b_lr},
        ]


@pytest.fixture(scope="module")
def train_file(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("opt") / "train.txt", list(SAMPLE_SENTENCES) * 2)


def _run(out: Path, model_dir: Path, train_file: Path, adapter) -> TrainRun:
    settings = TrainSettings(
        train_file=str(train_file),
        output_dir=str(out),
        model=str(model_dir),
        max_steps=4,
        batch_size=4,
        gradient_accumulation_steps=1,
        learning_rate=5e-3,
        save_steps=0,
        inspect_data=False,
        tensorboard=False,
    )
    run = TrainRun(settings, WindowChunker(max_length=64, stride=8, min_length=8), [adapter])
    run.run()
    return run


def _lora_b(out: Path) -> list[torch.Tensor]:
    weights = load_file(out / "adapter_model.safetensors")
    return [t for name, t in weights.items() if "lora_B" in name]


def test_an_adapter_gives_parameter_groups_their_own_learning_rate(tmp_path, tiny_model_dir, train_file):
    run = _run(tmp_path / "groups", tiny_model_dir, train_file, FrozenBLora())
    assert sorted(group["initial_lr"] for group in run.trainer.optimizer.param_groups) == [0.0, 5e-3]
    assert all(float(t.abs().max()) == 0.0 for t in _lora_b(tmp_path / "groups"))  # lr 0: still zero

    plain = _run(tmp_path / "plain", tiny_model_dir, train_file, LoraAdapter())
    assert len(plain.trainer.optimizer.param_groups) == 2  # the Trainer's own grouping (decay / no decay)
    assert any(float(t.abs().max()) > 0 for t in _lora_b(tmp_path / "plain"))


def test_groups_must_cover_every_trainable_parameter_once(tiny_model):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_model, LoraConfig(r=2, target_modules=["q_proj"]))
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    frozen = next(p for p in model.parameters() if not p.requires_grad)

    class Groups(LoraAdapter):
        def __init__(self, groups):
            super().__init__()
            self.groups = groups

        def optimizer_param_groups(self, model, learning_rate):
            return self.groups

    assert adapter_param_groups([LoraAdapter()], model, 1e-3) is None
    half = [{"params": [p for _, p in trainable[1:]]}]
    with pytest.raises(QckitError, match=rf"leave out 1 trainable parameter.*{trainable[0][0]}"):
        adapter_param_groups([Groups(half)], model, 1e-3)
    twice = [{"params": [p for _, p in trainable]}, {"params": [trainable[0][1]]}]
    with pytest.raises(QckitError, match="in two optimizer groups"):
        adapter_param_groups([Groups(twice)], model, 1e-3)
    with pytest.raises(QckitError, match="frozen parameter"):
        adapter_param_groups([Groups([{"params": [p for _, p in trainable] + [frozen]}])], model, 1e-3)
    whole = [{"params": [p for _, p in trainable], "lr": 0.1}]
    with pytest.raises(QckitError, match="both define optimizer parameter groups"):
        adapter_param_groups([Groups(whole), Groups(whole)], model, 1e-3)
    assert adapter_param_groups([LoraAdapter(), Groups(whole)], model, 1e-3) == whole
