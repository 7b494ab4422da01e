"""The command line: seed flag parity, exit statuses, one-line errors, recipe check mode, plugins."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from rich.console import Console

from qckit.cli import main

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
import seed_prepare  # noqa: E402  (the faithful re-implementation of the seed, used as a reference)

CLEAN = [
    "Mon chum pis moi, on est allés magasiner au centre-ville samedi passé.",
    "Il fait frette à matin, mets ta tuque avant de sortir dehors!!!",
    "Le dépanneur du coin vend encore des chips au ketchup pis du lait en sac.",
    "On a jasé longtemps de la cabane à sucre avec ma blonde hier soir.",
    "Écris-moi à jean.tremblay@example.ca si tu veux venir au chalet en fin de semaine.",
    "ok ok ok ok ok ok ok ok ok ok ok ok",
    "12345 67890 111213 141516",
    "trop court",
    "Les Canadiens ont perdu encore une fois, c'est plate en titi pour les fans.",
    "Y a une tempête qui s'en vient, la ville va fermer les écoles demain matin.",
]


def run(argv, width=160):
    console = Console(width=width, record=True, force_terminal=False)
    status = main(argv, console=console)
    return status, console.export_text()


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_prepare_flags_match_the_seed_on_a_clean_corpus(tmp_path):
    src = tmp_path / "corpus.txt"
    src.write_text("\n".join(CLEAN) + "\n", encoding="utf-8")
    status, out = run(["prepare", "--input", str(src), "--output", str(tmp_path / "q"), "--workers", "1"])
    assert status == 0, out
    seed_prepare.prepare([str(src)], str(tmp_path / "s"))
    for name in ("train_1.txt", "val_1.txt"):
        assert (tmp_path / "q" / name).exists() and (tmp_path / "s" / name).exists()
    ours = sorted(lines(tmp_path / "q" / "train_1.txt") + lines(tmp_path / "q" / "val_1.txt"))
    seeds = sorted(lines(tmp_path / "s" / "train_1.txt") + lines(tmp_path / "s" / "val_1.txt"))
    assert ours == seeds
    assert len(lines(tmp_path / "q" / "val_1.txt")) == len(lines(tmp_path / "s" / "val_1.txt"))
    assert "Prepare funnel" in out


def test_prepare_merge_and_seed_defaults(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.jsonl"
    a.write_text("\n".join(CLEAN[:5]) + "\n", encoding="utf-8")
    b.write_text("\n".join(json.dumps({"content": t}) for t in CLEAN[5:]) + "\n", encoding="utf-8")
    status, out = run(
        [
            "prepare",
            "--input",
            str(a),
            str(b),
            "--output",
            str(tmp_path / "o"),
            "--merge",
            "--val_split",
            "0.2",
            "--seed",
            "7",
            "--min_length",
            "12",
            "--max_length",
            "500",
        ]
    )
    assert status == 0, out
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [
        ".qckit",
        "prepare_stats.json",
        "train.txt",
        "val.txt",
    ]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--val_split", "0.7"], "--val_split must be between 0.0 and 0.5"),
        (["--min_length", "0"], "--min_length must be at least 1"),
        (["--min_length", "50", "--max_length", "50"], "--max_length must be greater than --min_length"),
    ],
)
def test_prepare_validates_flags_like_the_seed(tmp_path, flags, message):
    src = tmp_path / "c.txt"
    src.write_text(CLEAN[0] + "\n", encoding="utf-8")
    status, out = run(["prepare", "--input", str(src), "--output", str(tmp_path / "o"), *flags])
    assert status == 2
    assert message in out
    assert not (tmp_path / "o").exists()


def test_missing_input_exits_non_zero_with_one_line(tmp_path):
    status, out = run(["prepare", "--input", str(tmp_path / "nope.txt"), "--output", str(tmp_path / "o")])
    assert status == 3
    assert out.strip() == f"error: {tmp_path / 'nope.txt'}: no such file"


def test_run_check_prints_the_plan_without_running(tmp_path):
    model = tmp_path / "model"  # --check resolves the model but loads nothing: a config.json is enough
    model.mkdir()
    (model / "config.json").write_text("{}", encoding="utf-8")
    status, out = run(
        [
            "run",
            str(REPO / "recipes" / "quickstart.toml"),
            "--check",
            "--set",
            "prepare.output=" + str(tmp_path / "never"),
            "--set",  # the prepare stage writes it: not there yet, and not an error
            "train.data[0].path=" + str(tmp_path / "never" / "train.txt"),
            "--set",
            f"train.model={model}",
        ]
    )
    assert status == 0, out
    assert "valid" in out and "exact_dedup" in out and "lora" in out
    assert not (tmp_path / "never").exists()


def test_run_rejects_a_bad_recipe_with_file_and_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[prepare]\ninputs = ['x.txt']\n[[prepare.filters]]\nuse = 'lenght'\n", encoding="utf-8")
    status, out = run(["run", str(bad)], width=300)
    assert status == 2
    assert f"{bad}:prepare.filters[0].use: unknown filter 'lenght'; did you mean 'length'?" in out


def test_run_prepare_stage_of_a_recipe(tmp_path):
    src = tmp_path / "c.txt"
    src.write_text("\n".join(CLEAN) + "\n", encoding="utf-8")
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        f"[prepare]\ninputs = ['{src}']\noutput = '{tmp_path / 'o'}'\nmerge = true\n", encoding="utf-8"
    )
    status, out = run(["run", str(recipe), "--set", "prepare.splitter.val_split=0.0"])
    assert status == 0, out
    assert len(lines(tmp_path / "o" / "train.txt")) == 7
    assert lines(tmp_path / "o" / "val.txt") == []


def test_plugins_shows_one_component():
    status, out = run(["plugins", "filter", "length"])
    assert status == 0
    assert "min_length" in out and "10" in out and "plugin 'filters', qckit" in out


def test_unknown_component_kind_and_name():
    assert run(["plugins", "gizmo"])[0] == 2
    status, out = run(["plugins", "filter", "lenght"])
    assert status == 2 and "did you mean 'length'" in out
