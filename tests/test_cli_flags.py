"""A CLI that agrees with itself: one canonical name per flag with the seed's spellings as aliases, the
exit statuses in ``qckit --help``, ``qckit run --resume``, and ``--check`` refusing what the run would
refuse (model reference, eval files) before anything is loaded."""

from __future__ import annotations

import argparse
import socket
import time

import pytest
from huggingface_hub import constants
from rich.console import Console

from qckit import errors, hub
from qckit.cli import main
from qckit.cli.main import build_parser
from qckit.cli.train_flags import SEED_DEFAULTS

#: the flags of the seed's prepare_data.py (its README table), with a value each
SEED_PREPARE = {
    "--output": "out",
    "--merge": None,
    "--val_split": "0.2",
    "--min_length": "5",
    "--max_length": "500",
    "--seed": "7",
}
#: a value for each flag of the seed's train.py (every key of SEED_DEFAULTS is one of its flags)
SEED_TRAIN = {
    "--output_dir": "o",
    "--model_name": "org/model",
    "--num_epochs": "2",
    "--batch_size": "4",
    "--max_length": "256",
    "--learning_rate": "2e-5",
    "--use_lora": None,
    "--use_4bit": None,
    "--lora_r": "8",
    "--lora_alpha": "16",
    "--stride": "32",
    "--inspect_data": None,
    "--inspect_samples": "2",
    "--gradient_accumulation_steps": "2",
    "--seed": "1",
    "--fsdp": "full_shard auto_wrap",
    "--fsdp_transformer_layer_cls_to_wrap": "LlamaDecoderLayer",
}


def run(argv, width=200):
    console = Console(width=width, record=True, force_terminal=False)
    status = main(argv, console=console)
    return status, console.export_text()


def argv_of(flags: dict[str, str | None], spell=lambda f: f) -> list[str]:
    return [part for flag, value in flags.items() for part in (spell(flag), value) if part is not None]


def parsed(argv: list[str]) -> dict:
    ns = build_parser().parse_args(argv)
    return {k: v for k, v in vars(ns).items() if k != "func"}


def canonical_spelling(flag: str) -> str:
    return {"--model_name": "--model", "--output_dir": "--output"}.get(flag, flag.replace("_", "-"))


def test_the_seed_flags_cover_its_train_script():
    assert {f"--{name}" for name in SEED_DEFAULTS} <= set(SEED_TRAIN)


def test_every_seed_flag_works_and_means_what_its_canonical_name_means():
    seed = parsed(["train", "--train_file", "t.txt", *argv_of(SEED_TRAIN)])
    assert (seed["model_name"], seed["output_dir"], seed["lora_r"], seed["stride"]) == (
        "org/model",
        "o",
        8,
        32,
    )
    assert parsed(["train", "--train-file", "t.txt", *argv_of(SEED_TRAIN, canonical_spelling)]) == seed
    prepare = parsed(["prepare", "--input", "a.txt", *argv_of(SEED_PREPARE)])
    assert (prepare["val_split"], prepare["min_length"], prepare["merge"]) == (0.2, 5, True)
    assert parsed(["prepare", "--input", "a.txt", *argv_of(SEED_PREPARE, canonical_spelling)]) == prepare


def test_one_name_per_idea_in_help_and_every_flag_has_an_underscore_alias():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        help_text = sub.format_help()
        for action in sub._actions:
            longs = [o for o in action.option_strings if o.startswith("--")]
            if not longs:
                continue
            first = longs[0]
            assert "_" not in first, (name, first)  # the canonical name has hyphens
            assert f"--{first[2:].replace('-', '_')}" in action.option_strings, (name, first)
            for alias in longs[1:]:
                assert f"{alias} " not in help_text and f"{alias}," not in help_text, (name, alias)
    train_help = subparsers.choices["train"].format_help()
    assert (
        "--model MODEL" in train_help and "--output OUTPUT" in train_help and "--model_name" not in train_help
    )
    evaluate_help = subparsers.choices["evaluate"].format_help()
    assert "--model MODEL" in evaluate_help and "--val-file" in evaluate_help


def test_abbreviations_see_through_aliases():
    ns = parsed(["train", "--train", "t.txt", "--learning", "3e-4"])
    assert ns["train_file"] == "t.txt" and ns["learning_rate"] == 3e-4


def test_help_lists_every_exit_status_from_the_one_table(capsys):
    assert main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "exit statuses:" in text
    for status, meaning, raised in errors.exit_statuses():
        expected = f"{status} {meaning}" + (f" ({raised})" if raised else "")
        assert expected in text, expected
    assert "--model_name" in text and "--train_file" in text  # the aliases are named


# -- qckit run --resume ------------------------------------------------------------------------------


def write_recipe(tmp_path, train: str = "", extra: str = "") -> str:
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text("{}", encoding="utf-8")  # enough for --check: nothing is loaded
    (tmp_path / "train.txt").write_text("Une phrase du corpus d'entraînement.\n", encoding="utf-8")
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        f'[train]\nmodel = "{model}"\ntrain_file = "{tmp_path / "train.txt"}"\n'
        f'output_dir = "{tmp_path / "out"}"\n{train}\n{extra}',
        encoding="utf-8",
    )
    return str(recipe)


def test_run_resume_sets_train_resume(tmp_path):
    recipe = write_recipe(tmp_path)
    status, text = run(["run", recipe, "--check"])
    assert status == 0, text
    assert "resume no" in " ".join(text.split())
    status, text = run(["run", recipe, "--check", "--resume"])
    assert status == 0, text
    assert "resume yes" in " ".join(text.split())
    status, text = run(["run", recipe, "--check", "--resume", "--overwrite_output_dir"])
    assert status == 2 and "cannot be combined with resume" in text


def test_run_resume_without_a_train_stage_is_refused(tmp_path):
    (tmp_path / "in.txt").write_text("Une phrase.\n", encoding="utf-8")
    recipe = tmp_path / "p.toml"
    recipe.write_text(f'[prepare]\ninputs = ["{tmp_path / "in.txt"}"]\n', encoding="utf-8")
    status, text = run(["run", str(recipe), "--resume"])
    assert status == 2
    assert (
        text.strip()
        == f"error: {recipe}: --resume applies to the train stage, and this recipe has no [train]"
    )


# -- qckit run --check -------------------------------------------------------------------------------


def test_check_refuses_a_missing_model_path(tmp_path):
    recipe = write_recipe(tmp_path, extra="")
    status, text = run(["run", recipe, "--check", "--set", f"train.model={tmp_path / 'no-such-model'}"])
    assert status == 3
    assert text.strip() == f"error: {tmp_path / 'no-such-model'}: model path does not exist"


def test_check_refuses_a_missing_eval_file(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    extra = f'[[train.eval]]\nname = "pairs"\nkind = "minimal_pairs"\npath = "{pairs}"\n'
    recipe = write_recipe(tmp_path, extra=extra)
    status, text = run(["run", recipe, "--check"])
    assert status == 3
    assert text.strip() == f"error: {pairs}: eval set pairs: file not found"
    pairs.write_text('{"sentence_good": "a", "sentence_bad": "b"}\n', encoding="utf-8")
    status, text = run(["run", recipe, "--check"])
    assert status == 0, text


def test_check_refuses_a_missing_validation_file(tmp_path):
    recipe = write_recipe(tmp_path, train=f'val_file = "{tmp_path / "val.txt"}"')
    status, text = run(["run", recipe, "--check"])
    assert status == 3
    assert text.strip() == f"error: {tmp_path / 'val.txt'}: validation file not found"


def test_check_accepts_training_files_the_recipes_prepare_stage_writes(tmp_path):
    (tmp_path / "in.txt").write_text("Une phrase.\n", encoding="utf-8")
    recipe = write_recipe(
        tmp_path,
        extra=f'[prepare]\ninputs = ["{tmp_path / "in.txt"}"]\noutput = "{tmp_path / "data"}"\nmerge = true\n',
    )
    data = tmp_path / "data"
    overrides = [
        "--set",
        f"train.train_file={data / 'train.txt'}",
        "--set",
        f"train.val_file={data / 'val.txt'}",
    ]
    status, text = run(["run", recipe, "--check", *overrides])
    assert status == 0, text
    status, text = run(["run", recipe, "--check", "--stage", "train", *overrides])  # prepare would not run
    assert status == 3 and "training file not found" in text


@pytest.fixture
def unreachable_hub(tmp_path, monkeypatch):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")  # closed: refused at once
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    hub._decide.cache_clear()
    yield
    hub._decide.cache_clear()


def test_check_of_a_hub_id_fails_fast_in_one_line_when_the_hub_cannot_be_reached(tmp_path, unreachable_hub):
    recipe = write_recipe(tmp_path)
    started = time.monotonic()
    status, text = run(["run", recipe, "--check", "--set", "train.model=meta-llama/Llama-3.2-1B"], width=400)
    assert time.monotonic() - started < hub.PROBE_TIMEOUT_S + 10
    assert status == 3
    assert len(text.strip().splitlines()) == 1
    assert text.startswith("error: meta-llama/Llama-3.2-1B: cannot reach the Hugging Face Hub to check")
    assert "set HF_HUB_OFFLINE=1 to use the local cache only, or give a local path" in text


def test_check_of_a_hub_id_offline_looks_in_the_local_cache(tmp_path, unreachable_hub, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    recipe = write_recipe(tmp_path)
    status, text = run(["run", recipe, "--check", "--set", "train.model=meta-llama/Llama-3.2-1B"], width=400)
    assert status == 3
    assert "not in the local Hugging Face cache, and HF_HUB_OFFLINE=1 forbids downloading it" in text
