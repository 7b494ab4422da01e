"""The lora adapter's variants: DoRA, rsLoRA, LoRA+, automatic targets on several architectures, and
trainable embeddings."""

from __future__ import annotations

import math

import pytest
import torch

from qckit.errors import RecipeError
from qckit.hardware import Environment
from qckit.testing import make_tiny_llama
from qckit_builtins.adapters import LoraAdapter

CPU = Environment(device="cpu", cpu_count=2)


def _tiny(kind: str, tokenizer):
    """A tiny randomly initialised model of architecture ``kind`` for ``tokenizer`` (seeded)."""
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        MistralConfig,
        MistralForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    torch.manual_seed(0)
    vocab = len(tokenizer)
    if kind == "llama":
        return make_tiny_llama(tokenizer, hidden_size=32, num_heads=2)
    if kind == "gpt2":
        return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=2, n_positions=128))
    common = dict(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=128,
    )
    if kind == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**common))
    return MistralForCausalLM(MistralConfig(**common))


def _trainable(model) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def _loss_backward(model) -> None:
    model.train()
    ids = torch.randint(3, 200, (2, 12), generator=torch.Generator().manual_seed(1))
    model(input_ids=ids, labels=ids).loss.backward()


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("llama", {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}),
        ("qwen2", {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}),
        ("mistral", {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}),
        ("gpt2", {"c_attn", "c_proj", "c_fc"}),
    ],
)
def test_auto_targets_find_the_projections_of_each_architecture(tiny_tokenizer, kind, expected) -> None:
    lora = LoraAdapter(r=2, alpha=4, target_modules="auto")
    model = lora.wrap_model(_tiny(kind, tiny_tokenizer), CPU)
    assert set(lora.adapted_modules) == expected  # never the output head
    adapted = {name.split(".")[-4] for name in _trainable(model) if ".lora_A." in name}
    assert adapted == expected
    _loss_backward(model)


def test_seed_targets_on_gpt2_say_to_use_auto(tiny_tokenizer) -> None:
    with pytest.raises(
        RecipeError, match=r"GPT2LMHeadModel has no linear layer named q_proj.*c_attn, c_fc, c_proj"
    ):
        LoraAdapter().wrap_model(_tiny("gpt2", tiny_tokenizer), CPU)


def test_rslora_scales_by_the_square_root_of_the_rank(tiny_tokenizer) -> None:
    plain = LoraAdapter(r=4, alpha=8).wrap_model(_tiny("llama", tiny_tokenizer), CPU)
    rs = LoraAdapter(r=4, alpha=8, use_rslora=True).wrap_model(_tiny("llama", tiny_tokenizer), CPU)
    layer = "base_model.model.model.layers.0.self_attn.q_proj"
    assert plain.get_submodule(layer).scaling["default"] == 8 / 4
    assert rs.get_submodule(layer).scaling["default"] == pytest.approx(8 / math.sqrt(4))


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_dora_trains_a_magnitude_and_merges_exactly(tiny_tokenizer, kind) -> None:
    lora = LoraAdapter(r=2, alpha=4, dropout=0.0, target_modules="auto", use_dora=True)
    model = lora.wrap_model(_tiny(kind, tiny_tokenizer), CPU)
    magnitudes = [n for n in _trainable(model) if "lora_magnitude_vector" in n]
    assert magnitudes
    _loss_backward(model)
    assert all(p.grad is not None for n, p in model.named_parameters() if "lora_magnitude_vector" in n)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05, generator=torch.Generator().manual_seed(2))
    model.eval()
    ids = torch.randint(3, 200, (1, 10), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        merged = model.merge_and_unload()(input_ids=ids).logits
    torch.testing.assert_close(merged, expected, rtol=1e-4, atol=1e-4)


def test_loraplus_groups_follow_peft_rule(tiny_tokenizer) -> None:
    from peft.optimizers import create_loraplus_optimizer

    lora = LoraAdapter(r=2, alpha=4, use_dora=True, loraplus_lr_ratio=16)
    model = lora.wrap_model(_tiny("llama", tiny_tokenizer), CPU)
    groups = lora.optimizer_param_groups(model, 1e-4)
    assert groups is not None
    by_lr = {g["lr"]: {id(p) for p in g["params"]} for g in groups}
    assert set(by_lr) == {1e-4, 1.6e-3}
    names = {id(p): n for n, p in model.named_parameters()}
    assert all("lora_A" in names[i] for i in by_lr[1e-4])
    assert {names[i].split(".")[-3] for i in by_lr[1.6e-3]} == {"lora_B", "lora_magnitude_vector"}
    # the same split as peft's own LoRA+ optimizer
    reference = create_loraplus_optimizer(model, torch.optim.AdamW, lr=1e-4, loraplus_lr_ratio=16)
    peft_by_lr: dict[float, set[int]] = {}
    for group in reference.param_groups:
        peft_by_lr.setdefault(group["lr"], set()).update(id(p) for p in group["params"])
    assert {lr: ids for lr, ids in peft_by_lr.items() if ids} == by_lr
    assert sum(len(g["params"]) for g in groups) == len(_trainable(model))


def test_no_param_groups_without_loraplus_or_embedding_rate(tiny_tokenizer) -> None:
    lora = LoraAdapter(r=2, alpha=4)
    assert lora.optimizer_param_groups(lora.wrap_model(_tiny("llama", tiny_tokenizer), CPU), 1e-4) is None


@pytest.mark.parametrize("tied", [False, True])
def test_train_embeddings_trains_both_matrices_at_their_own_rate(tiny_tokenizer, tied: bool) -> None:
    base = _tiny("llama", tiny_tokenizer)
    if tied:
        base.config.tie_word_embeddings = True
        base.tie_weights()
    lora = LoraAdapter(r=2, alpha=4, train_embeddings=True, embedding_learning_rate=5e-5)
    assert lora.trains_embeddings
    model = lora.wrap_model(base, CPU)
    full = {n for n in _trainable(model) if "lora_" not in n}
    inner = model.base_model.model
    if tied:  # the one shared matrix trains in place: the head stays tied to the trained embeddings
        assert full == {"base_model.model.model.embed_tokens.weight"}
        head, embed = inner.lm_head.weight, inner.model.embed_tokens.weight
        assert head is embed and head is base.lm_head.weight
    else:  # two trained copies
        assert {n.split(".")[-4] for n in full} == {"embed_tokens", "lm_head"}
        head = inner.lm_head.modules_to_save["default"].weight
        embed = inner.model.embed_tokens.modules_to_save["default"].weight
        assert head is not embed
    groups = lora.optimizer_param_groups(model, 1e-3)
    assert groups is not None
    rates = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert rates[id(embed)] == 5e-5 and rates[id(head)] == 5e-5
    assert {lr for i, lr in rates.items() if i not in (id(embed), id(head))} == {1e-3}
    _loss_backward(model)
    assert embed.grad is not None and embed.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loraplus_lr_ratio": 0.5}, "loraplus_lr_ratio"),
        ({"embedding_learning_rate": 1e-4}, "needs train_embeddings"),
        ({"train_embeddings": True, "embedding_learning_rate": 2.0}, "embedding_learning_rate must be"),
        ({"target_modules": ["auto", "q_proj"]}, "not both"),
        (
            {"train_embeddings": True, "target_modules": ["q_proj", "lm_head"]},
            "remove it from target_modules",
        ),
    ],
)
def test_invalid_variant_settings(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        LoraAdapter(**kwargs)


def test_recipe_validates_the_new_keys_with_their_path() -> None:
    from qckit.recipe import build_recipe

    base = {"train": {"train_file": "x.txt", "adapters": [{"use": "lora", "target_modules": "auto"}]}}
    plan = build_recipe(base).train
    assert plan is not None and plan.adapters[0].instance.target_modules == ("auto",)
    bad = {"train": {"train_file": "x.txt", "adapters": [{"use": "lora", "use_dora": "yes"}]}}
    with pytest.raises(RecipeError, match=r"train.adapters\[0\].use_dora: expected true or false"):
        build_recipe(bad)
    bad = {"train": {"train_file": "x.txt", "adapters": [{"use": "lora", "loraplus_lr_ratio": -1}]}}
    with pytest.raises(RecipeError, match=r"train.adapters\[0\].*loraplus_lr_ratio"):
        build_recipe(bad)
