"""Gradient checkpointing "auto" (qckit.train.activations): on only where the memory estimate needs it."""

from __future__ import annotations

import dataclasses

import pytest

from qckit.errors import RecipeError
from qckit.hardware import Environment
from qckit.memory import KNOWN_SHAPES, ModelShape, training_memory
from qckit.train import TrainSettings
from qckit.train.activations import AUTO_SHARE, choose_gradient_checkpointing

GIB = 1024**3


def _config(shape: ModelShape) -> dict:
    return {
        "hidden_size": shape.hidden,
        "num_hidden_layers": shape.layers,
        "intermediate_size": shape.intermediate,
        "vocab_size": shape.vocab,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "tie_word_embeddings": shape.tied,
    }


def _gpu(gib: float, count: int = 1) -> Environment:
    return Environment(
        device="cuda", gpu_count=count, gpu_memory=(int(gib * GIB),) * count, bf16_supported=True
    )


SMOL = _config(KNOWN_SHAPES["HuggingFaceTB/SmolLM2-135M"])
LLAMA_8B = _config(KNOWN_SHAPES["meta-llama/Llama-3.1-8B"])


def _choose(setting, env, config=SMOL, **overrides):
    kwargs = dict(method="lora", precision="bf16", batch_size=4, window=128) | overrides
    return choose_gradient_checkpointing(setting, env, config, **kwargs)


def test_auto_is_off_when_the_estimate_fits_and_says_how_much():
    choice = _choose("auto", _gpu(80))  # the quickstart: 135M, 4 x 128 tokens
    need = training_memory(
        KNOWN_SHAPES["HuggingFaceTB/SmolLM2-135M"], batch_size=4, window=128, gradient_checkpointing=False
    )
    assert not choice.enabled
    assert choice.line() == f"off (auto: estimated {need.total_gib:.1f} GiB of 80.0 GiB without it)"


def test_auto_is_on_when_the_estimate_without_it_exceeds_the_share_of_the_gpu():
    choice = _choose("auto", _gpu(24), LLAMA_8B, batch_size=8, window=2048)
    assert (
        choice.enabled and choice.line().startswith("on (auto: estimated ") and "of 24.0 GiB" in choice.line()
    )
    # the threshold: just above and just below AUTO_SHARE of the GPU's memory
    need = training_memory(
        KNOWN_SHAPES["HuggingFaceTB/SmolLM2-135M"], batch_size=64, window=1024, gradient_checkpointing=False
    ).total
    assert _choose("auto", _gpu(need / AUTO_SHARE / GIB * 0.99), batch_size=64, window=1024).enabled
    assert not _choose("auto", _gpu(need / AUTO_SHARE / GIB * 1.01), batch_size=64, window=1024).enabled
    # the smallest GPU decides
    two = dataclasses.replace(_gpu(80, 2), gpu_memory=(80 * GIB, int(need / AUTO_SHARE * 0.99)))
    assert _choose("auto", two, batch_size=64, window=1024).enabled


def test_auto_is_off_on_the_cpu_and_on_for_an_unknown_architecture():
    cpu = _choose("auto", Environment(device="cpu"))
    assert not cpu.enabled and cpu.line().startswith("off (auto: on cpu")
    gpt2 = {"n_embd": 768, "n_layer": 12, "vocab_size": 50257}
    assert _choose("auto", _gpu(80), gpt2).line() == "on (auto: no memory estimate for this architecture)"
    unable = _choose("auto", _gpu(2), LLAMA_8B, supported=False)  # a model that cannot recompute: off
    assert unable.line() == "off (auto: the model does not support it)"


@pytest.mark.parametrize("setting", [True, False])
def test_true_and_false_are_kept(setting):
    for env in (Environment(device="cpu"), _gpu(2)):
        choice = _choose(setting, env, LLAMA_8B)
        assert choice.enabled is setting and f"= {str(setting).lower()}" in choice.reason


def test_the_setting_is_auto_by_default_and_takes_only_booleans_or_auto(tmp_path):
    from qckit.recipe import build_recipe

    assert TrainSettings().gradient_checkpointing == "auto"
    with pytest.raises(ValueError, match="gradient_checkpointing"):
        TrainSettings(gradient_checkpointing="yes")
    for value in ("auto", True, False):
        recipe = build_recipe({"train": {"gradient_checkpointing": value}}, source=str(tmp_path / "r.toml"))
        assert recipe.train.settings.gradient_checkpointing == value
    with pytest.raises(RecipeError, match="gradient_checkpointing"):
        build_recipe({"train": {"gradient_checkpointing": "always"}}, source=str(tmp_path / "r.toml"))
