"""What evaluation feeds the model: special-token text encoded as lm-eval encodes it (or as plain text on
request), lm-eval's empty-context rule, the default max_length (the model's context length, lm-eval's
rule), and rows that cannot be scored counted as bad rows."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from transformers import GPT2Config, LlamaConfig, Qwen2VLConfig

from qckit.errors import InputError
from qckit.evaluate import evaluate_lm
from qckit.evaluate.bpb import load_documents
from qckit.evaluate.choice import read_choices, score_choices
from qckit.evaluate.loglik import (
    DEFAULT_CONTEXT_LENGTH,
    EvalContext,
    context_length,
    encode_pairs,
    prefix_token_id,
)
from qckit.evaluate.pairs import read_pairs, score_pairs
from qckit.testing import approx_sums

#: a document holding the text of both special tokens of the tiny tokenizer
SPECIAL_DOC = "Il fait frette</s> pis <s>on rentre."


@torch.no_grad()
def direct_ll(model, ids):
    """Summed log p(ids[k] | ids[:k]) for k >= 1, one forward pass."""
    logits = model(torch.tensor([ids])).logits[0, :-1].double().log_softmax(-1)
    return logits[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].sum().item()


def test_special_token_text_is_the_special_token_unless_split(tiny_tokenizer):
    eos, bos = tiny_tokenizer.eos_token_id, tiny_tokenizer.bos_token_id
    parsed = load_documents([SPECIAL_DOC], tiny_tokenizer).tokens[0]
    split = load_documents([SPECIAL_DOC], tiny_tokenizer, split_special_tokens=True).tokens[0]
    # lm-eval's HFLM.tok_encode: tokenizer.encode(text), less the special tokens it adds
    assert parsed == tiny_tokenizer.encode(SPECIAL_DOC, add_special_tokens=False)
    assert parsed.count(eos) == 1 and parsed.count(bos) == 1
    assert eos not in split and bos not in split
    assert (
        split == tiny_tokenizer(SPECIAL_DOC, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    )


def test_a_document_with_special_token_text_is_scored_on_the_special_tokens(tiny_model, tiny_tokenizer):
    prefix = tiny_tokenizer.bos_token_id
    for split in (False, True):
        ids = tiny_tokenizer(SPECIAL_DOC, add_special_tokens=False, split_special_tokens=split)["input_ids"]
        result = evaluate_lm(tiny_model, tiny_tokenizer, [SPECIAL_DOC], split_special_tokens=split)
        assert result.tokens == len(ids)
        assert -result.loss * result.tokens == approx_sums(direct_ll(tiny_model, [prefix, *ids]))


def test_an_empty_context_continuation_that_starts_with_the_prefix_token_uses_it_as_context(tiny_tokenizer):
    bos = prefix_token_id(tiny_tokenizer)
    rest = tiny_tokenizer.encode(" bonjour", add_special_tokens=False)
    [(context, continuation)] = encode_pairs(tiny_tokenizer, [("", "<s> bonjour")], bos)
    assert (context, continuation) == ([bos], rest)  # lm-eval: not [bos] → [bos, …]
    [(context, continuation)] = encode_pairs(
        tiny_tokenizer, [("", "<s> bonjour")], bos, split_special_tokens=True
    )
    assert context == [bos] and bos not in continuation


def test_choices_with_special_token_text(tmp_path, tiny_model, tiny_tokenizer):
    row = {"prompt": "Fin de la phrase :", "choices": ["</s>", "pis encore"], "answer": 0}
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    items = read_choices(path)
    context = EvalContext(tiny_tokenizer, max_length=64)
    lls = {}
    for split in (False, True):
        result = score_choices(tiny_model, items, context, details=True, split_special_tokens=split)
        lls[split] = result["per_item"][0]["loglikelihoods"][0]
    prompt = tiny_tokenizer.encode(row["prompt"], add_special_tokens=False)
    whole = tiny_tokenizer.encode(row["prompt"] + " </s>", add_special_tokens=False)
    assert whole[-1] == tiny_tokenizer.eos_token_id
    whole_ll, prompt_ll = direct_ll(tiny_model, whole), direct_ll(tiny_model, prompt)
    assert lls[False] == approx_sums(whole_ll - prompt_ll, whole_ll, prompt_ll)
    assert abs(lls[True] - lls[False]) > 0.1  # the three characters score differently from the one token


def test_context_length_follows_lm_eval(tiny_tokenizer):
    assert context_length(GPT2Config(n_positions=96), tiny_tokenizer) == 96
    assert context_length(LlamaConfig(max_position_embeddings=77), tiny_tokenizer) == 77
    # a composite config: its text model's length, not the top level's
    vl = Qwen2VLConfig(text_config={"max_position_embeddings": 333})
    assert context_length(vl, tiny_tokenizer) == 333
    assert context_length(None, tiny_tokenizer) == tiny_tokenizer.model_max_length == 512

    no_limit = copy.deepcopy(tiny_tokenizer)
    no_limit.model_max_length = int(1e30)  # what transformers gives a tokenizer that sets none
    assert context_length(None, no_limit) == DEFAULT_CONTEXT_LENGTH == 2048


def test_max_length_defaults_to_the_model_context_length(tiny_model, tiny_tokenizer):
    tiny_model.config.max_position_embeddings = 1500  # rotary positions: any length works
    # a document longer than the old default of 1024: one window of the model's context, as lm-eval reads it
    words = "Il fait frette à matin pis on rentre de bonne heure. " * 60
    ids = tiny_tokenizer.encode(words.strip(), add_special_tokens=False)
    assert 1024 < len(ids) < 1500
    result = evaluate_lm(tiny_model, tiny_tokenizer, [words])
    assert (result.max_length, result.windows) == (1500, 1)
    assert -result.loss * result.tokens == approx_sums(
        direct_ll(tiny_model, [tiny_tokenizer.bos_token_id, *ids])
    )
    short = evaluate_lm(tiny_model, tiny_tokenizer, [words], max_length=1024)
    assert (short.max_length, short.windows) == (1024, 2)
    assert EvalContext(tiny_tokenizer).scorer(tiny_model).max_length == 1500


def test_a_pair_that_cannot_be_scored_is_a_bad_row(tmp_path, tiny_model, tiny_tokenizer):
    rows = [
        {"sentence_good": "Il fait frette.", "sentence_bad": "Il frette fait."},
        {"sentence_good": "<s>", "sentence_bad": "Il fait."},  # only the prefix token: nothing to score
        {"sentence_good": "Il fait beau " * 20, "sentence_bad": "Il fait."},  # longer than max_length
    ]
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(map(json.dumps, rows)) + "\n", encoding="utf-8")
    result = score_pairs(tiny_model, read_pairs(path), EvalContext(tiny_tokenizer, max_length=16))
    assert result["pairs"] == 1 and result["bad_rows"] == 2
    assert [e.split(":")[1] for e in result["bad_row_kinds"]["unscorable"]["examples"]] == ["2", "3"]
    only_bad = tmp_path / "only.jsonl"
    only_bad.write_text(json.dumps(rows[1]) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"only\.jsonl: no usable minimal pairs; 1 bad row"):
        score_pairs(tiny_model, read_pairs(only_bad), EvalContext(tiny_tokenizer, max_length=16))


def test_a_choice_item_that_cannot_be_scored_is_a_bad_row(tmp_path, tiny_model, tiny_tokenizer):
    rows = [
        {"prompt": "Une tuque, ça se met sur la", "choices": ["tête", "main"], "answer": 0},
        {"prompt": "Une tuque, ça se met sur la", "choices": ["tête " * 30, "main"], "answer": 0},
        {"prompt": "Pis?", "choices": ["oui", "non"], "answer": "non"},
    ]
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(map(json.dumps, rows)) + "\n", encoding="utf-8")
    result = score_choices(
        tiny_model, read_choices(path), EvalContext(tiny_tokenizer, max_length=16), details=True
    )
    assert result["items"] == 2 and result["bad_rows"] == 1
    assert [item["line"] for item in result["per_item"]] == [1, 3]
    assert result["bad_row_kinds"]["unscorable"]["examples"][0].startswith(f"{path}:2: the text to score is ")
