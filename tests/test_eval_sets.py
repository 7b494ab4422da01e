"""Named eval sets: recipe tables validated with key paths, before/after/delta, the retain check, log keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from qckit import report
from qckit.errors import RecipeError
from qckit.evaluate.sets import breaches, logged_scalars, outcome, plan_sets
from qckit.outputs import is_scalar_key, scalar_key
from qckit.recipe import build_recipe


def recipe(*sets, **train):
    data = {"train": {"model": "m", "train_file": "t.txt", "val_file": "v.txt", **train, "eval": list(sets)}}
    return build_recipe(data, source="r.toml")


RETAIN = {"kind": "bpb", "name": "fr", "path": "fr.txt", "role": "retain", "max_regression": 0.03}
PAIRS = {"kind": "minimal_pairs", "name": "pairs", "path": "p.jsonl", "metric": "accuracy_norm"}


def test_recipe_sets_come_after_the_validation_file():
    plan = recipe(RETAIN, PAIRS, eval_protocol="stream", eval_stride=16).train
    sets = plan_sets(plan)
    assert [(s.name, s.kind, s.protocol, s.settings.role) for s in sets] == [
        ("val", "bpb", "stream", "target"),
        ("fr", "bpb", "document", "retain"),
        ("pairs", "minimal_pairs", "", "target"),
    ]
    assert sets[0].evaluator.stride == 16 and sets[1].settings.allowed_regression == 0.03
    assert sets[2].evaluator.metric == "accuracy_norm" and sets[2].settings.allowed_regression is None
    retain_default = plan_sets(recipe({**RETAIN, "max_regression": None} | {"name": "x"}).train)[1]
    assert retain_default.settings.allowed_regression == 0.02
    # the resolved recipe keeps the sets, kind first, with every default written out
    text = recipe(RETAIN).to_toml()
    assert '[[train.eval]]\nkind = "bpb"\nname = "fr"\npath = "fr.txt"\nrole = "retain"' in text
    assert build_recipe(__import__("tomllib").loads(text)).train.eval[0].entry.max_regression == 0.03


@pytest.mark.parametrize(
    ("table", "key", "message"),
    [
        ({**RETAIN, "role": "keep"}, "train.eval[0].role", "must be one of target, retain"),
        ({**PAIRS, "max_regression": 0.1}, "train.eval[0].max_regression", "only a retain set"),
        ({**PAIRS, "kind": "pairz"}, "train.eval[0].kind", "unknown evaluator 'pairz'"),
        ({k: v for k, v in PAIRS.items() if k != "kind"}, "train.eval[0]", "missing 'kind'"),
        ({k: v for k, v in PAIRS.items() if k != "path"}, "train.eval[0]", "missing key 'path'"),
        ({**PAIRS, "metric": "f1"}, "train.eval[0].metric", "metric must be one of accuracy"),
        ({**PAIRS, "name": "val"}, "train.eval[0].name", "already used by train.val_file"),
        ({**PAIRS, "name": "a b"}, "train.eval[0].name", "must be letters, digits"),
        ({**RETAIN, "stride": 8}, "train.eval[0].stride", "stream protocol only"),
        ({**RETAIN, "colour": 1}, "train.eval[0].colour", "unknown key 'colour' in evaluator 'bpb'"),
        ({**RETAIN, "max_regression": "lots"}, "train.eval[0].max_regression", "expected a number"),
        ({**PAIRS, "kind": "choice", "template": "{a.b}"}, "train.eval[0].template", "plain field names"),
    ],
)
def test_bad_tables_name_the_key_path(table, key, message):
    with pytest.raises(RecipeError, match=message) as err:
        recipe(table)
    assert err.value.key == key


def test_two_sets_with_one_name_and_eval_settings_of_the_wrong_protocol():
    with pytest.raises(RecipeError, match="already used by train.eval") as err:
        recipe(RETAIN, {**PAIRS, "name": "fr"})
    assert err.value.key == "train.eval[1].name"
    with pytest.raises(RecipeError, match="stream protocol only") as err:
        recipe(eval_stride=8)
    assert err.value.key == "train.eval_stride"


def test_set_by_name_override():
    data = {"train": {"model": "m", "train_file": "t.txt", "eval": [RETAIN, PAIRS]}}
    plan = build_recipe(data, overrides=["train.eval.fr.max_regression=0.1"]).train
    assert plan.eval[0].entry.max_regression == 0.1


DESCRIBED = {
    "val": {
        "metric": "bits_per_byte",
        "higher_is_better": False,
        "regression_unit": "relative",
        "role": "target",
    },
    "fr": {
        "metric": "bits_per_byte",
        "higher_is_better": False,
        "regression_unit": "relative",
        "role": "retain",
        "max_regression": 0.02,
    },
    "pairs": {
        "metric": "accuracy",
        "higher_is_better": True,
        "regression_unit": "points",
        "role": "retain",
        "max_regression": 0.05,
    },
}
for _entry in DESCRIBED.values():
    _entry.update(kind="k", protocol="", path="p")


def test_outcome_relative_and_points_and_the_retain_check():
    before = {"val": {"bits_per_byte": 2.0}, "fr": {"bits_per_byte": 1.0}, "pairs": {"accuracy": 0.80}}
    after = {"val": {"bits_per_byte": 1.5}, "fr": {"bits_per_byte": 1.03}, "pairs": {"accuracy": 0.76}}
    out = outcome(DESCRIBED, before, after)
    assert out["val"]["delta"] == pytest.approx(-0.5) and out["val"]["change"] == pytest.approx(-0.25)
    assert out["val"]["gain"] == pytest.approx(0.25) and not out["val"]["breach"]
    assert out["fr"]["regression"] == pytest.approx(0.03) and out["fr"]["breach"]  # 3 % worse, 2 % allowed
    assert (
        out["pairs"]["regression"] == pytest.approx(0.04) and not out["pairs"]["breach"]
    )  # 4 points, 5 allowed
    assert breaches(out) == ["fr"]
    missing = outcome(DESCRIBED, None, after)["val"]
    assert missing["before"] is None and missing["delta"] is None and not missing["breach"]


def test_report_table_flags_a_breach_in_red():
    before = {"val": {"bits_per_byte": 2.0}, "fr": {"bits_per_byte": 1.0}, "pairs": {"accuracy": 0.80}}
    after = {"val": {"bits_per_byte": 1.5}, "fr": {"bits_per_byte": 1.03}, "pairs": {"accuracy": 0.76}}
    table = report.eval_sets_table(outcome(DESCRIBED, before, after))
    console = Console(width=100, record=True, force_terminal=False)
    console.print(table)
    text = console.export_text()
    assert "BREACH (>2 %)" in text and "+3.0 %" in text and "-4.0 pts" in text and "retained (≤5 pts)" in text
    check = table.columns[-1]._cells
    assert [c.style for c in check] == ["green", "bold red", "green"]


def test_logged_scalars_carry_set_and_protocol():
    measurement = {
        "val": {"protocol": "document", "bits_per_byte": 1.5, "tokens": 10, "seconds": 0.5},
        "pairs": {"protocol": "", "accuracy": 0.75, "accuracy_ci95": [0.5, 0.9], "pairs": 4},
    }
    assert logged_scalars(measurement) == {
        "eval_val/document/bits_per_byte": 1.5,
        "eval_pairs/accuracy": 0.75,
    }
    assert scalar_key("a", "stream", "loss") == "eval_a/stream/loss"


def test_a_suite_reports_bad_rows_when_it_loads(tmp_path, tiny_tokenizer):
    import json

    from qckit.components import EvalSetSettings
    from qckit.evaluate.loglik import EvalContext
    from qckit.evaluate.sets import EvalSet, EvalSuite
    from qckit.progress import RecordingObserver
    from qckit_builtins.evaluators import MinimalPairs

    path = tmp_path / "p.jsonl"
    good = {"sentence_good": "Je mange pas.", "sentence_bad": "Je pas mange."}
    path.write_text(json.dumps(good) + "\n{oops\n", encoding="utf-8")
    observer = RecordingObserver()
    suite = EvalSuite(
        [EvalSet(EvalSetSettings("p", str(path)), MinimalPairs())],
        EvalContext(tiny_tokenizer, observer=observer),
    )
    [warning] = [data for event, _, data in observer.events if event == "warn"]
    assert (
        warning
        == f"eval set p: 1 bad row(s) in {path} skipped; first: {path}:2: invalid JSON: Expecting property name enclosed in double quotes"
    )
    assert suite.names == ["p"] and len(suite.data["p"].pairs) == 1


class _AcmeLineLength:
    """A third-party eval-set kind: mean log-probability per token of each line (higher is better)."""

    name = "acme.logprob"
    metric = "mean_logprob"
    higher_is_better = True
    regression = "points"

    def __init__(self, scale: float = 1.0) -> None:
        if scale <= 0:
            raise ValueError("scale must be positive")
        self.scale = scale

    def load(self, path, tokenizer):
        from qckit.evaluate.loglik import encode_pairs, prefix_token_id

        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return encode_pairs(tokenizer, [("", line) for line in lines], prefix_token_id(tokenizer))

    def measure(self, model, data, context):
        scores = context.scorer(model).loglikelihoods(model, data)
        tokens = sum(len(cont) for _, cont in data)
        return {"mean_logprob": self.scale * float(scores.sum()) / tokens, "lines": len(data)}


class _AcmePlugin:
    from qckit import hookimpl

    @hookimpl
    def register_evaluators(self, register):
        register(_AcmeLineLength)


def test_a_third_party_kind_runs_like_a_built_in(tmp_path, tiny_model, tiny_tokenizer):
    from qckit.evaluate.loglik import EvalContext
    from qckit.evaluate.sets import EvalSuite
    from qckit.host import PluginHost
    from qckit.testing import SAMPLE_SENTENCES

    host = PluginHost.from_entry_points(extra=[("acme", _AcmePlugin())])
    text = tmp_path / "lines.txt"
    text.write_text("\n".join(SAMPLE_SENTENCES[:5]) + "\n", encoding="utf-8")
    table = {"kind": "acme.logprob", "name": "acme", "path": str(text), "role": "retain", "scale": 2.0}
    data = {"train": {"model": "m", "train_file": "t.txt", "eval": [table]}}
    with pytest.raises(RecipeError, match="scale must be positive") as err:
        build_recipe({"train": {**data["train"], "eval": [{**table, "scale": -1.0}]}}, host=host)
    assert err.value.key == "train.eval[0].scale"
    [eval_set] = plan_sets(build_recipe(data, host=host).train, host)
    suite = EvalSuite([eval_set], EvalContext(tiny_tokenizer, max_length=64))
    before = suite.measure(tiny_model, 0)
    assert before["acme"]["kind"] == "acme.logprob" and before["acme"]["lines"] == 5
    assert before["acme"]["mean_logprob"] < 0
    worse = {"acme": {"mean_logprob": before["acme"]["mean_logprob"] - 0.05}}
    result = outcome(suite.describe(), before, worse)["acme"]
    assert result["regression"] == pytest.approx(0.05) and result["breach"]  # 0.05 points > the default 0.02


def test_run_labels_are_recipe_names_else_what_tells_runs_apart(tmp_path):
    from qckit.evaluate.runs import Run

    def runs(*paths, names=()):
        names = list(names) or [""] * len(paths)
        return [Run(Path(p), {}, recipe_name=n) for p, n in zip(paths, names, strict=True)]

    assert report.run_labels(runs("runs/a/model", "runs/b/model")) == ["a", "b"]
    assert report.run_labels(runs("runs/qc/model")) == ["qc"]  # never "model"
    assert report.run_labels(runs("/tmp/x/out", "runs/y/out")) == ["x", "y"]
    assert report.run_labels(runs("/tmp/a/model", "runs/b/model")) == ["a", "b"]  # never "//tmp/a"
    assert report.run_labels(runs("/s/lr1/m", "/s/lr2/m", names=["qc-lr1", "qc-lr2"])) == ["qc-lr1", "qc-lr2"]
    assert report.run_labels(runs("/s/lr1/m", "/s/lr2/m", names=["qc", "qc"])) == ["lr1", "lr2"]
    assert report.run_labels(runs("x/model", "x/model")) == ["x", "x (2)"]  # the same run twice
    assert not any("//" in label for label in report.run_labels(runs("/a/model", "b/c/model", "/a/d/model")))


def test_is_scalar_key_tells_an_eval_sets_number_from_the_trainers():
    assert is_scalar_key(scalar_key("val", "document", "bits_per_byte"))
    assert is_scalar_key(scalar_key("pairs", "", "accuracy"))
    assert not any(is_scalar_key(k) for k in ("eval_loss", "loss", "train/loss", "learning_rate"))
