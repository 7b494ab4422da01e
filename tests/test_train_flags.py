"""The seed's train.py flags: same names and defaults, translated into one validated recipe."""

from __future__ import annotations

import argparse

import pytest

from qckit.cli.train_flags import SEED_DEFAULTS, add_train_flags, train_flags_to_recipe
from qckit.errors import RecipeError
from qckit.recipe import build_recipe
from qckit.train import TrainSettings


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_train_flags(parser)
    return parser.parse_args(["--train_file", "data/train.txt", *argv])


def _recipe(*argv: str) -> dict:
    return train_flags_to_recipe(_parse(*argv))


def test_every_seed_flag_keeps_its_default():
    ns = _parse()
    for flag, default in SEED_DEFAULTS.items():
        assert getattr(ns, flag) == default, flag
    assert ns.fsdp_transformer_layer_cls_to_wrap is None  # detected from the model (seed: LlamaDecoderLayer)


def test_defaults_build_the_seed_recipe():
    recipe = build_recipe(_recipe(), source="qckit train")
    plan = recipe.train
    settings = plan.settings
    assert isinstance(settings, TrainSettings)
    assert settings.train_file == "data/train.txt" and settings.val_file is None
    assert (settings.model, settings.output_dir, settings.num_epochs, settings.batch_size) == (
        "meta-llama/Llama-3.2-1B",
        "./cpt_model",
        3.0,
        8,
    )
    assert (settings.learning_rate, settings.gradient_accumulation_steps, settings.seed) == (1e-5, 8, 42)
    assert settings.inspect_data and settings.inspect_samples == 5
    assert settings.gradient_checkpointing == "auto"
    assert _recipe("--gradient_checkpointing")["train"]["gradient_checkpointing"] is True
    assert (plan.chunker.name, plan.chunker.instance.max_length, plan.chunker.instance.stride) == (
        "window",
        1024,
        128,
    )
    (lora,) = plan.adapters
    assert lora.name == "lora" and (lora.instance.r, lora.instance.alpha, lora.instance.dropout) == (
        16,
        32,
        0.1,
    )


def test_recipe_dict_is_what_a_toml_file_would_hold():
    data = _recipe("--val_file", "data/val.txt", "--max_length", "512", "--stride", "64", "--lora_r", "8")
    train = data["train"]
    assert train["chunker"] == {"use": "window", "max_length": 512, "stride": 64}
    assert train["adapters"] == [{"use": "lora", "r": 8, "alpha": 32}]
    assert train["val_file"] == "data/val.txt" and train["model"] == "meta-llama/Llama-3.2-1B"

    def no_none(value):
        if isinstance(value, dict):
            return all(no_none(v) for v in value.values())
        if isinstance(value, list):
            return all(no_none(v) for v in value)
        return value is not None

    assert no_none(data)  # TOML has no null
    assert "val_file" not in _recipe()["train"]


def test_lora_can_be_turned_off():
    for flag in ("--no_use_lora", "--no-lora", "--no_lora"):
        assert _recipe(flag)["train"]["adapters"] == []
    assert _recipe("--use_lora")["train"]["adapters"][0]["use"] == "lora"


def test_quantization_flags_add_their_adapter_before_lora():
    assert [a["use"] for a in _recipe("--use_4bit")["train"]["adapters"]] == ["4bit", "lora"]
    assert [a["use"] for a in _recipe("--use_8bit")["train"]["adapters"]] == ["8bit", "lora"]


def test_fsdp_flags_map_to_the_fsdp_adapter():
    adapters = _recipe("--fsdp", "full_shard auto_wrap")["train"]["adapters"]
    assert adapters[-1] == {"use": "fsdp", "strategy": "full_shard auto_wrap"}
    adapters = _recipe(
        "--fsdp", "full_shard auto_wrap", "--fsdp_transformer_layer_cls_to_wrap", "LlamaDecoderLayer"
    )["train"]["adapters"]
    assert adapters[-1] == {
        "use": "fsdp",
        "strategy": "full_shard auto_wrap",
        "layer_cls": "LlamaDecoderLayer",
    }
    # the seed accepted (and ignored) the layer class without --fsdp; so does qckit
    assert _recipe("--fsdp_transformer_layer_cls_to_wrap", "LlamaDecoderLayer")["train"]["adapters"] == [
        {"use": "lora", "r": 16, "alpha": 32}
    ]
    recipe = build_recipe(_recipe("--fsdp", "shard_grad_op offload"), source="qckit train")
    fsdp = recipe.train.adapters[-1].instance
    assert (fsdp.sharding, fsdp.offload, fsdp.layer_cls) == ("shard_grad_op", True, None)


def test_inspection_and_extras():
    train = _recipe(
        "--no_inspect_data",
        "--inspect_samples",
        "2",
        "--max_steps",
        "50",
        "--precision",
        "fp32",
        "--resume",
        "--export_merged",
        "--trust_remote_code",
        "--no_gradient_checkpointing",
        "--eval_steps",
        "25",
        "--lora_dropout",
        "0.05",
    )["train"]
    assert train["inspect_data"] is False and train["inspect_samples"] == 2
    assert (train["max_steps"], train["precision"], train["resume"], train["export_merged"]) == (
        50,
        "fp32",
        True,
        True,
    )
    assert train["trust_remote_code"] is True and train["gradient_checkpointing"] is False
    assert train["eval_steps"] == 25 and train["adapters"][0]["dropout"] == 0.05
    settings = build_recipe({"train": train}, source="qckit train").train.settings
    assert settings.max_steps == 50 and settings.eval_steps == 25 and not settings.inspect_data


def test_run_identity_tracking_and_attention_flags():
    train = _recipe(
        "--overwrite_output_dir", "--report_to", "tensorboard", "mlflow", "--attention", "window"
    )["train"]
    assert train["overwrite_output_dir"] is True and train["report_to"] == ["tensorboard", "mlflow"]
    assert train["chunker"]["attention"] == "window"
    settings = build_recipe({"train": train}, source="qckit train").train
    assert (
        settings.settings.report_to == ["tensorboard", "mlflow"]
        and settings.chunker.instance.attention == "window"
    )
    assert _recipe("--report_to", "none")["train"]["report_to"] == []
    defaults = _recipe()["train"]
    assert "report_to" not in defaults and "attention" not in defaults["chunker"]  # the recipe defaults apply
    assert build_recipe({"train": defaults}).train.chunker.instance.attention == "document"


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--batch_size", "0"], "--batch_size"),
        (["--gradient_accumulation_steps", "-1"], "--gradient_accumulation_steps"),
        (["--max_length", "0"], "--max_length"),
        (["--stride", "1024"], "--stride"),
        (["--stride", "-1"], "--stride"),
        (["--learning_rate", "0"], "--learning_rate"),
        (["--num_epochs", "0"], "--num_epochs"),
        (["--max_steps", "0"], "--max_steps"),
        (["--lora_r", "0"], "--lora_r"),
        (["--lora_dropout", "1.5"], "--lora_dropout"),
        (["--use_4bit", "--use_8bit"], "--use_8bit"),
        (["--eval_steps", "-3"], "--eval_steps"),
    ],
)
def test_bad_values_name_the_flag(argv, flag):
    with pytest.raises(RecipeError) as info:
        _recipe(*argv)
    assert info.value.key == flag
    assert str(info.value).startswith(f"{flag}: ")


def test_train_file_is_required_and_types_are_checked_by_argparse(capsys):
    parser = argparse.ArgumentParser()
    add_train_flags(parser)
    with pytest.raises(SystemExit):
        parser.parse_args([])
    assert "--train_file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["--train_file", "x", "--batch_size", "eight"])
    assert "--batch_size" in capsys.readouterr().err
