from __future__ import annotations

import math

import pytest
import torch

from qckit.errors import InputError
from qckit.evaluate import evaluate_lm, sliding_windows
from qckit.progress import RecordingObserver
from qckit.testing import SAMPLE_SENTENCES, make_tiny_llama, train_tiny_tokenizer, write_corpus

DOCS = list(SAMPLE_SENTENCES)


def stream_ids(tokenizer, docs):
    eos = tokenizer.eos_token_id
    out = [eos]
    for ids in tokenizer(docs, add_special_tokens=False)["input_ids"]:
        out += ids + [eos]
    return out


@torch.no_grad()
def nll_full_context(model, ids):
    """Summed NLL of ids[1:], each token predicted from everything before it (one forward pass)."""
    logits = model(torch.tensor([ids])).logits[0, :-1]
    return (
        -torch.log_softmax(logits.double(), -1)[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
        .sum()
        .item()
    )


@torch.no_grad()
def nll_rolling_context(model, ids, context):
    """Summed NLL of ids[1:], token p predicted from at most the `context` tokens before it (one pass per token)."""
    total = 0.0
    for p in range(1, len(ids)):
        window = ids[max(0, p - context) : p]
        logits = model(torch.tensor([window])).logits[0, -1]
        total -= torch.log_softmax(logits.double(), -1)[ids[p]].item()
    return total


def test_one_window_matches_a_direct_computation(tiny_model, tiny_tokenizer):
    docs = DOCS[:3]
    ids = stream_ids(tiny_tokenizer, docs)
    assert len(ids) < 128
    result = evaluate_lm(tiny_model, tiny_tokenizer, docs, max_length=128)
    expected = nll_full_context(tiny_model, ids)
    n_bytes = sum(len(d.encode()) + 1 for d in docs)
    assert result.tokens == len(ids) - 1  # every document token and every EOS is predicted
    assert result.windows == 1 and result.documents == 3 and result.bytes == n_bytes
    assert result.loss == pytest.approx(expected / result.tokens, rel=1e-5)
    assert result.perplexity == pytest.approx(math.exp(expected / result.tokens), rel=1e-5)
    assert result.bits_per_byte == pytest.approx(expected / math.log(2) / n_bytes, rel=1e-5)


def test_sliding_windows_give_each_token_its_rolling_context(tiny_model, tiny_tokenizer):
    docs = DOCS[:2]
    ids = stream_ids(tiny_tokenizer, docs)
    max_length = 8
    # stride = max_length - 1: every token is predicted from exactly the max_length-1 tokens before it
    result = evaluate_lm(
        tiny_model, tiny_tokenizer, docs, max_length=max_length, stride=max_length - 1, batch_size=16
    )
    expected = nll_rolling_context(tiny_model, ids, max_length - 1)
    assert result.tokens == len(ids) - 1
    assert result.loss * result.tokens == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("stride", [None, 0, 1, 5, 15])
def test_every_token_is_predicted_once_whatever_the_stride(tiny_model, tiny_tokenizer, stride):
    docs = DOCS[:10]
    ids = stream_ids(tiny_tokenizer, docs)
    result = evaluate_lm(tiny_model, tiny_tokenizer, docs, max_length=16, stride=stride, batch_size=32)
    assert result.tokens == len(ids) - 1
    assert result.bytes == sum(len(d.encode()) + 1 for d in docs)
    step = 16 - (8 if stride is None else max(stride, 1))
    assert result.windows == math.ceil((len(ids) - 16) / step) + 1


def test_token_weighted_and_independent_of_batch_size(tiny_model, tiny_tokenizer):
    results = [
        evaluate_lm(tiny_model, tiny_tokenizer, DOCS, max_length=32, stride=8, batch_size=b)
        for b in (1, 3, 64)
    ]
    assert results[0].windows > 3
    for other in results[1:]:
        assert other.tokens == results[0].tokens
        assert other.bits_per_byte == pytest.approx(results[0].bits_per_byte, rel=1e-5)
        assert other.loss == pytest.approx(results[0].loss, rel=1e-5)


def test_uniform_model_scores_log_vocab_per_token(tiny_tokenizer):
    model = make_tiny_llama(tiny_tokenizer)
    with torch.no_grad():
        model.lm_head.weight.zero_()  # every logit is 0: the model predicts the uniform distribution
    result = evaluate_lm(model, tiny_tokenizer, DOCS[:5], max_length=16)
    vocab = model.config.vocab_size
    assert result.loss == pytest.approx(math.log(vocab), rel=1e-6)
    assert result.bits_per_byte == pytest.approx(result.tokens * math.log2(vocab) / result.bytes, rel=1e-6)


def test_bytes_do_not_depend_on_the_tokenizer():
    small, large = train_tiny_tokenizer(DOCS, vocab_size=300), train_tiny_tokenizer(DOCS, vocab_size=512)
    a = evaluate_lm(make_tiny_llama(small), small, DOCS, max_length=64)
    b = evaluate_lm(make_tiny_llama(large), large, DOCS, max_length=64)
    assert a.tokens > b.tokens  # a smaller vocabulary makes more tokens of the same text
    assert a.bytes == b.bytes == sum(len(d.encode()) + 1 for d in DOCS)


def test_restores_modes_and_works_with_peft(tiny_model, tiny_tokenizer):
    from peft import LoraConfig, get_peft_model

    plain = evaluate_lm(tiny_model, tiny_tokenizer, DOCS[:6], max_length=32)
    peft_model = get_peft_model(
        tiny_model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.5)
    )
    peft_model.train()
    frozen = peft_model.base_model.model.model.layers[0]
    frozen.eval()  # a submodule deliberately in eval mode must stay so
    wrapped = evaluate_lm(peft_model, tiny_tokenizer, DOCS[:6], max_length=32)
    # LoRA starts as a no-op and dropout is off during evaluation: same numbers as the base model
    assert wrapped.loss == pytest.approx(plain.loss, rel=1e-5)
    assert peft_model.training and not frozen.training
    assert peft_model.base_model.model.model.layers[1].training


def test_max_length_is_capped_at_the_model_positions(tiny_model, tiny_tokenizer):
    observer = RecordingObserver()
    result = evaluate_lm(
        tiny_model, tiny_tokenizer, DOCS[:3], max_length=2048, stride=1024, observer=observer
    )
    assert (result.max_length, result.stride) == (512, 511)  # the tiny model has 512 positions
    assert [data for kind, _, data in observer.events if kind == "warn"][0].startswith(
        "evaluation max_length 2048"
    )
    assert result.tokens == len(stream_ids(tiny_tokenizer, DOCS[:3])) - 1


def test_path_input_and_progress(tmp_path, tiny_model, tiny_tokenizer):
    path = write_corpus(tmp_path / "val.txt", ["", *DOCS[:8], "   "])
    observer = RecordingObserver()
    from_file = evaluate_lm(tiny_model, tiny_tokenizer, path, max_length=32, observer=observer)
    from_list = evaluate_lm(tiny_model, tiny_tokenizer, DOCS[:8], max_length=32)
    assert from_file.as_dict() | {"seconds": 0} == from_list.as_dict() | {"seconds": 0}
    assert observer.events[0] == ("start", "evaluate", from_file.windows)
    assert observer.events[-1] == ("finish", "evaluate", None)
    assert from_file.as_dict()["documents"] == 8


def test_training_on_a_text_lowers_its_bits_per_byte(tiny_model, tiny_tokenizer):
    text = DOCS[:4]
    before = evaluate_lm(tiny_model, tiny_tokenizer, text, max_length=64)
    ids = torch.tensor([stream_ids(tiny_tokenizer, text)])
    optimizer = torch.optim.AdamW(tiny_model.parameters(), lr=1e-2)
    tiny_model.train()
    for _ in range(30):
        optimizer.zero_grad()
        tiny_model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
    after = evaluate_lm(tiny_model, tiny_tokenizer, text, max_length=64)
    assert after.bits_per_byte < 0.7 * before.bits_per_byte
    assert tiny_model.training


def test_invalid_inputs(tiny_model, tiny_tokenizer, tmp_path):
    with pytest.raises(InputError, match="no documents"):
        evaluate_lm(tiny_model, tiny_tokenizer, ["", "  "])
    with pytest.raises(InputError, match="nope.txt"):
        evaluate_lm(tiny_model, tiny_tokenizer, tmp_path / "nope.txt")
    with pytest.raises(ValueError):
        evaluate_lm(tiny_model, tiny_tokenizer, DOCS, max_length=16, stride=16)
    with pytest.raises(ValueError):
        list(sliding_windows(10, 4, 0))
