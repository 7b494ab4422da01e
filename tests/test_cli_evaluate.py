"""``qckit evaluate`` on one file: plain one-line output (80 columns, user strings literal) and --json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from qckit.cli import main
from qckit.testing import SAMPLE_SENTENCES, write_corpus

REPO = Path(__file__).resolve().parents[1]
PAIRS = REPO / "data" / "sample" / "quebec_minimal_pairs.jsonl"
CHOICE = REPO / "data" / "sample" / "quebec_choice.jsonl"


def run(argv, width=80):
    console = Console(width=width, record=True, force_terminal=False)
    status = main(argv, console=console)
    return status, console.export_text()


def json_of(text):
    return json.loads(text[text.index("{") :])


@pytest.fixture(scope="module")
def val(tmp_path_factory):
    # a file name rich would read as markup if it were not printed literally
    return write_corpus(tmp_path_factory.mktemp("val") / "[bold]val.txt", SAMPLE_SENTENCES[:6])


def test_val_file_one_line_and_json(tiny_model_dir, val):
    base = ["evaluate", "--model", str(tiny_model_dir), "--val_file", str(val), "--max_length", "64"]
    status, text = run(base)
    assert status == 0, text
    assert text.splitlines() == [text.rstrip("\n")]  # one line
    assert text.startswith("[bold]val.txt [bpb/document]: bits/byte ") and "(6 docs)" in text
    status, text = run([*base, "--json"])
    data = json_of(text)
    assert (data["name"], data["kind"], data["protocol"], data["metric"]) == (
        "set_bold_val",
        "bpb",
        "document",
        "bits_per_byte",
    )
    assert data["documents"] == 6 and data["bytes"] == sum(len(s.encode()) for s in SAMPLE_SENTENCES[:6])
    status, text = run([*base, "--protocol", "stream", "--stride", "8", "--json"])
    streamed = json_of(text)
    assert streamed["protocol"] == "stream" and streamed["stride"] == 8
    assert streamed["bytes"] == data["bytes"] + 6  # the stream counts one EOS byte per document


def test_pairs_and_choice(tiny_model_dir):
    status, text = run(
        ["evaluate", "--model", str(tiny_model_dir), "--pairs", str(PAIRS), "--max_length", "64"]
    )
    assert status == 0, text
    assert len(text.splitlines()) == 1 and text.startswith("quebec_minimal_pairs.jsonl [minimal_pairs]: acc ")
    status, text = run(["evaluate", "--model", str(tiny_model_dir), "--pairs", str(PAIRS), "--json"])
    data = json_of(text)
    assert data["pairs"] == 43 and set(data["phenomena"]) >= {"negation", "tu_particle", "pis", "clitics"}
    assert 0 <= data["accuracy_ci95"][0] <= data["accuracy"] <= data["accuracy_ci95"][1] <= 1
    status, text = run(
        [
            "evaluate",
            "--model",
            str(tiny_model_dir),
            "--choice",
            str(CHOICE),
            "--metric",
            "macro_f1",
            "--json",
        ]
    )
    data = json_of(text)
    assert data["metric"] == "macro_f1" and data["items"] == 12 and 0 <= data["macro_f1"] <= 1


def test_template_and_shared_choices_from_flags(tiny_model_dir, tmp_path):
    rows = tmp_path / "cola.jsonl"
    rows.write_text(
        "\n".join(json.dumps({"sentence": s, "label": i % 2}) for i, s in enumerate(SAMPLE_SENTENCES[:6]))
        + "\n",
        encoding="utf-8",
    )
    status, text = run(
        [
            "evaluate",
            "--model",
            str(tiny_model_dir),
            "--choice",
            str(rows),
            "--template",
            "Phrase : {sentence}\nAcceptable ?",
            "--choices",
            "non",
            "oui",
            "--answer_field",
            "label",
            "--json",
        ]
    )
    assert status == 0, text
    assert json_of(text)["items"] == 6


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--pairs", str(PAIRS), "--template", "{x}"], "--template does not apply to --pairs"),
        (
            ["--pairs", str(PAIRS), "--metric", "f1"],
            "<command line>:--metric: evaluator 'minimal_pairs': metric must be one of",
        ),
        (["--val_file", str(PAIRS), "--stride", "4"], "stride applies to the stream protocol only"),
        (["--pairs", str(PAIRS), "--set", "train.x=1"], "--set applies to --recipe only"),
        (["--pairs", "nope.jsonl"], "nope.jsonl: file not found"),
        (
            ["--pairs", str(PAIRS), "--max_length", "-3"],
            "--max_length: must be 0 (the default) or at least 2",
        ),
    ],
)
def test_bad_flags_are_one_line_errors(tiny_model_dir, extra, message):
    status, text = run(["evaluate", "--model", str(tiny_model_dir), *extra], width=200)
    assert status != 0 and message in text and len(text.strip().splitlines()) == 1


def test_max_length_defaults_to_the_model_context_and_special_tokens_can_be_split(tiny_model_dir, tmp_path):
    docs = write_corpus(tmp_path / "docs.txt", ["Il fait frette</s> pis on rentre.", "Bonjour."])
    base = ["evaluate", "--model", str(tiny_model_dir), "--val_file", str(docs), "--json"]
    status, text = run(base)
    assert status == 0, text
    parsed = json_of(text)
    assert parsed["max_length"] == 512  # the tiny model's max_position_embeddings, lm-eval's rule
    status, text = run([*base, "--split_special_tokens"])
    assert status == 0, text
    split = json_of(text)
    assert split["tokens"] == parsed["tokens"] + 3  # "</s>": one special token, or four plain ones
    assert split["bytes"] == parsed["bytes"]
    for flag, path in (("--pairs", PAIRS), ("--choice", CHOICE)):
        argv = [
            "evaluate",
            "--model",
            str(tiny_model_dir),
            flag,
            str(path),
            "--split_special_tokens",
            "--json",
        ]
        status, text = run(argv)
        assert status == 0, text
