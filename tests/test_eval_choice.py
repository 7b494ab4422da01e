"""Multiple-choice tasks: prompts, templates, answers by index or text, the chat template, bad rows, scores
against hand-computed log-probabilities."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from qckit.errors import InputError, QckitError
from qckit.evaluate.choice import read_choices, score_choices
from qckit.evaluate.loglik import EvalContext
from qckit.evaluate.rows import template_fields
from qckit.evaluate.stats import macro_f1
from qckit.testing import approx_sums

ROWS = [
    {"prompt": "Le contraire de frette, c'est", "choices": ["chaud", "froid", "bleu"], "answer": 0},
    {"prompt": "Une tuque, ça se met sur la", "choices": ["tête", "main"], "answer": "tête"},
    {"prompt": "", "choices": ["Il fait beau.", "Beau fait il."], "answer": 0},
    {"prompt": "Pis, t'as-tu fini ta job? Réponse :", "choices": ["oui", "non"], "answer": 1},
]
BAD = [
    {"choices": ["a", "b"], "answer": 0},  # no prompt
    {"prompt": "x", "choices": ["seul"], "answer": 0},
    {"prompt": "x", "choices": ["a", "b"], "answer": 2},
    {"prompt": "x", "choices": ["a", "b"], "answer": "c"},
    {"prompt": "x", "choices": ["a", "b"], "answer": 0, "chat": "yes"},
]


def write(path, rows):
    path.write_text(
        "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8"
    )
    return path


@torch.no_grad()
def continuation_logprob(model, context_ids, continuation_ids):
    ids = [*context_ids, *continuation_ids]
    logits = model(torch.tensor([ids])).logits[0].double().log_softmax(-1)
    start = len(context_ids)
    return sum(logits[start - 1 + k, t].item() for k, t in enumerate(continuation_ids))


def reference_ll(model, tokenizer, prompt, continuation):
    """lm-eval's split, written out: trailing spaces move over, the continuation is what follows the context."""
    enc = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    if not prompt:
        return continuation_logprob(model, [tokenizer.bos_token_id], enc(continuation))
    stripped = prompt.rstrip()
    continuation = prompt[len(stripped) :] + continuation
    whole, context = enc(stripped + continuation), enc(stripped)
    assert whole[: len(context)] == context
    return continuation_logprob(model, context, whole[len(context) :])


def test_rows_answers_and_bad_rows(tmp_path):
    path = write(tmp_path / "c.jsonl", [*ROWS, *BAD, "[1]"])
    items = read_choices(path)
    assert [i.answer for i in items.items] == [0, 0, 0, 1]
    assert items.issues.counts == {
        "missing_prompt": 1,
        "bad_choices": 1,
        "bad_answer": 2,
        "bad_chat": 1,
        "not_an_object": 1,
    }
    assert items.issues.examples["bad_answer"][0] == (
        f"{path}:7: answer must be the index or the text of one of the 2 choices, got 2"
    )
    with pytest.raises(InputError, match="no usable choice items"):
        read_choices(write(tmp_path / "bad.jsonl", BAD))


def test_template_and_set_level_choices(tmp_path):
    rows = [
        {"sentence": "Je vas au dépanneur.", "label": 1},
        {"sentence": "Dépanneur au vas je.", "label": 0},
        {"text": "x", "label": 0},
    ]
    path = write(tmp_path / "cola.jsonl", rows)
    items = read_choices(
        path, template="Phrase : {sentence}\nAcceptable?", choices=["non", "oui"], answer_field="label"
    )
    assert [i.prompt for i in items.items] == [
        "Phrase : Je vas au dépanneur.\nAcceptable?",
        "Phrase : Dépanneur au vas je.\nAcceptable?",
    ]
    assert [i.answer for i in items.items] == [1, 0] and items.items[0].choices == ("non", "oui")
    assert items.issues.examples["template_field"] == [
        f"{path}:3: the row has no field 'sentence' for the template"
    ]
    assert template_fields("{a} {{literal}} {b}") == ["a", "b"]
    for bad in ("{a.__class__}", "{a[0]}", "{a!r}", "{a:>10}", "{"):
        with pytest.raises(ValueError):
            template_fields(bad)


def test_scores_match_hand_computed_log_probabilities(tmp_path, tiny_model, tiny_tokenizer):
    items = read_choices(write(tmp_path / "c.jsonl", ROWS))
    result = score_choices(
        tiny_model, items, EvalContext(tiny_tokenizer, max_length=64, batch_size=2), details=True
    )
    gold, pred, pred_norm = [], [], []
    for item, detail in zip(items.items, result["per_item"], strict=True):
        lls = [reference_ll(tiny_model, tiny_tokenizer, item.prompt, " " + c) for c in item.choices]
        assert detail["loglikelihoods"] == approx_sums(lls)
        gold.append(item.answer)
        pred.append(max(range(len(lls)), key=lambda j: (lls[j], -j)))
        norm = [v / len(c) for v, c in zip(lls, item.choices, strict=True)]
        pred_norm.append(max(range(len(norm)), key=lambda j: (norm[j], -j)))
    assert result["items"] == 4
    assert result["accuracy"] == pytest.approx(sum(p == g for p, g in zip(pred, gold, strict=True)) / 4)
    assert result["accuracy_norm"] == pytest.approx(
        sum(p == g for p, g in zip(pred_norm, gold, strict=True)) / 4
    )
    assert result["macro_f1"] == pytest.approx(macro_f1(gold, pred))
    assert result["bad_rows"] == 0 and result["chat_items"] == 0
    json.dumps(result)


def test_chat_rows_use_the_chat_template(tmp_path, tiny_model, tiny_tokenizer):
    rows = [{"prompt": "Ça va?", "choices": ["Oui", "Non"], "answer": 0, "chat": True}]
    path = write(tmp_path / "chat.jsonl", rows)
    with pytest.raises(
        QckitError, match=r"chat.jsonl:1: the row asks for the chat template but the tokenizer has none"
    ):
        score_choices(tiny_model, read_choices(path), EvalContext(tiny_tokenizer, max_length=64))
    chatty = copy.deepcopy(tiny_tokenizer)
    chatty.chat_template = (
        "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    )
    result = score_choices(tiny_model, read_choices(path), EvalContext(chatty, max_length=64), details=True)
    context = "<s>user: Ça va?\nassistant:"
    ids = lambda s: chatty(s, add_special_tokens=False)["input_ids"]  # noqa: E731  (<s> is the BOS token here)
    assert ids(context)[0] == chatty.bos_token_id
    lls = [
        continuation_logprob(tiny_model, ids(context), ids(context + c)[len(ids(context)) :])
        for c in ("Oui", "Non")
    ]
    assert result["chat_items"] == 1
    assert result["per_item"][0]["loglikelihoods"] == approx_sums(lls)
    assert result["accuracy"] == float(lls[0] > lls[1])
