"""Minimal pairs: row layouts, bad rows counted with file:line, scores against hand-computed log-probabilities."""

from __future__ import annotations

import json
import math

import pytest
import torch

from qckit.errors import InputError
from qckit.evaluate.loglik import EvalContext
from qckit.evaluate.pairs import read_pairs, score_pairs
from qckit.evaluate.stats import macro_f1, wilson_interval
from qckit.testing import approx_sums

PAIRS = [
    {
        "sentence_good": "Je mange pas de pain.",
        "sentence_bad": "Je mange pain pas de.",
        "phenomenon": "negation",
    },
    {
        "sentence_good": "Tu viens-tu au chalet?",
        "sentence_bad": "Tu-tu viens au chalet?",
        "UID": "tu_particle",
    },
    {
        "sentence_a": "On s'en va pis on revient.",
        "sentence_b": "On s'en va on pis revient.",
        "label": 0,
        "category": "pis",
    },
    {"sentence_a": "Je le lui ai donné.", "sentence_b": "Je lui le ai donné.", "label": 0, "type": "clitics"},
    {
        "sentence_a": "Les filles sont partis.",
        "sentence_b": "Les filles sont parties.",
        "label": 1,
        "category": "agreement",
    },
    {
        "sentence_good": "Il fait frette à matin.",
        "sentence_bad": "Il fait frette matin à.",
        "phenomenon": "negation",
    },
]
BAD = [
    "{not json",
    json.dumps(["a", "list"]),
    json.dumps({"sentence_good": "Seule phrase."}),
    json.dumps({"sentence_good": "Pareil.", "sentence_bad": "Pareil."}),
    json.dumps({"sentence_a": "Une.", "sentence_b": "Deux.", "label": 2}),
    json.dumps({"sentence_a": "Une.", "sentence_b": "Deux.", "label": True}),
    json.dumps({"text": "rien à voir"}),
]


@pytest.fixture
def pairs_file(tmp_path):
    lines = [
        json.dumps(PAIRS[0]),
        BAD[0],
        json.dumps(PAIRS[1]),
        "",
        *BAD[1:4],
        *map(json.dumps, PAIRS[2:]),
        *BAD[4:],
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@torch.no_grad()
def logprob(model, tokenizer, sentence):
    """log p(sentence | BOS): one forward pass over [BOS] + its tokens."""
    ids = [tokenizer.bos_token_id, *tokenizer(sentence, add_special_tokens=False)["input_ids"]]
    logits = model(torch.tensor([ids])).logits[0, :-1].double()
    return torch.log_softmax(logits, -1)[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].sum().item()


def test_both_layouts_are_read_and_bad_rows_counted_with_file_and_line(pairs_file):
    pair_set = read_pairs(pairs_file)
    assert [(p.good, p.phenomenon) for p in pair_set.pairs] == [
        ("Je mange pas de pain.", "negation"),
        ("Tu viens-tu au chalet?", "tu_particle"),
        ("On s'en va pis on revient.", "pis"),
        ("Je le lui ai donné.", "clitics"),
        ("Les filles sont parties.", "agreement"),  # label 1: sentence_b is the grammatical one
        ("Il fait frette à matin.", "negation"),
    ]
    issues = pair_set.issues
    assert issues.total() == 7
    assert issues.counts == {
        "invalid_json": 1,
        "not_an_object": 1,
        "missing_sentence": 2,
        "identical_sentences": 1,
        "bad_label": 2,
    }
    assert issues.examples["invalid_json"] == [
        f"{pairs_file}:2: invalid JSON: Expecting property name enclosed in double quotes"
    ]
    assert issues.examples["identical_sentences"][0].startswith(f"{pairs_file}:7:")
    assert [e.split(":")[1] for e in issues.examples["bad_label"]] == ["12", "13"]
    assert read_pairs(pairs_file, group_by="category").pairs[2].phenomenon == "pis"


def test_no_usable_pair_is_an_input_error(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(BAD[3] + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"no usable minimal pairs; 1 bad row\(s\), first: .*bad.jsonl:1"):
        read_pairs(path)
    with pytest.raises(InputError, match="file not found"):
        read_pairs(tmp_path / "missing.jsonl")


def test_scores_match_hand_computed_log_probabilities(pairs_file, tiny_model, tiny_tokenizer):
    pair_set = read_pairs(pairs_file)
    result = score_pairs(
        tiny_model, pair_set, EvalContext(tiny_tokenizer, max_length=64, batch_size=2), examples=3
    )
    ll = {s: logprob(tiny_model, tiny_tokenizer, s) for p in pair_set.pairs for s in (p.good, p.bad)}
    right = [ll[p.good] > ll[p.bad] for p in pair_set.pairs]
    right_norm = [ll[p.good] / len(p.good) > ll[p.bad] / len(p.bad) for p in pair_set.pairs]
    assert result["pairs"] == 6 and result["correct"] == sum(right)
    assert result["accuracy"] == pytest.approx(sum(right) / 6)
    assert result["accuracy_norm"] == pytest.approx(sum(right_norm) / 6)
    assert result["accuracy_ci95"] == pytest.approx(list(wilson_interval(sum(right), 6)))
    negation = [r for p, r in zip(pair_set.pairs, right, strict=True) if p.phenomenon == "negation"]
    assert result["phenomena"]["negation"] == {
        "pairs": 2,
        "accuracy": sum(negation) / 2,
        "accuracy_norm": pytest.approx(result["phenomena"]["negation"]["accuracy_norm"]),
    }
    wrong = sorted(
        ((ll[p.bad] - ll[p.good], p.line) for p, r in zip(pair_set.pairs, right, strict=True) if not r),
        reverse=True,
    )[:3]
    by_line = {p.line: p for p in pair_set.pairs}
    assert [(w["margin"], w["line"]) for w in result["confidently_wrong"]] == [
        (approx_sums(m, ll[by_line[line].good], ll[by_line[line].bad]), line) for m, line in wrong
    ]
    assert result["bad_rows"] == 7 and result["bad_row_kinds"]["bad_label"]["count"] == 2
    assert result["prefix_token"] == tiny_tokenizer.bos_token_id
    json.dumps(result)  # plain numbers only


def test_a_uniform_model_prefers_the_sentence_with_fewer_tokens(tmp_path, tiny_tokenizer):
    from qckit.testing import make_tiny_llama

    model = make_tiny_llama(tiny_tokenizer)
    with torch.no_grad():
        model.lm_head.weight.zero_()  # every token has probability 1/V: LL(s) = -tokens(s) * ln V
    rows = [
        {"sentence_good": "On y va.", "sentence_bad": "On y va pas pantoute."},
        {"sentence_good": "Viens-tu?", "sentence_bad": "Viens-tu-tu-tu?"},
        {"sentence_good": "Je me suis fait une tasse de thé.", "sentence_bad": "Je fait thé."},
    ]
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(map(json.dumps, rows)) + "\n", encoding="utf-8")
    result = score_pairs(model, read_pairs(path), EvalContext(tiny_tokenizer, max_length=32))
    assert result["accuracy"] == pytest.approx(2 / 3)
    [wrong] = result["confidently_wrong"]
    tokens = [
        len(tiny_tokenizer(rows[2][k], add_special_tokens=False)["input_ids"])
        for k in ("sentence_good", "sentence_bad")
    ]
    log_v = math.log(model.config.vocab_size)
    assert wrong["line"] == 3 and wrong["margin"] == approx_sums(
        (tokens[0] - tokens[1]) * log_v, tokens[0] * log_v, tokens[1] * log_v
    )


def test_wilson_interval_and_macro_f1_known_values():
    low, high = wilson_interval(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert macro_f1([0, 0, 1, 1], [0, 1, 1, 1]) == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert macro_f1([0, 1, 2], [0, 1, 2]) == 1.0


def test_a_delimiter_goes_before_each_sentence(tmp_path, tiny_model, tiny_tokenizer):
    row = PAIRS[0]
    swapped = {"sentence_good": row["sentence_bad"], "sentence_bad": row["sentence_good"]}
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps(swapped) + "\n", encoding="utf-8")
    result = score_pairs(
        tiny_model, read_pairs(path), EvalContext(tiny_tokenizer, max_length=64), delimiter=" "
    )
    good, bad = (logprob(tiny_model, tiny_tokenizer, " " + row[k]) for k in ("sentence_good", "sentence_bad"))
    # one of the two orders is wrong, by exactly the difference of the two log-probabilities
    assert result["correct"] == 1
    [wrong] = result["confidently_wrong"]
    assert wrong["line"] == (2 if good > bad else 1) and wrong["margin"] == approx_sums(
        abs(good - bad), good, bad
    )
