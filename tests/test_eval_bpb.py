"""Bits per byte under both protocols: ``document`` (lm-eval's loglikelihood_rolling) and ``stream``.

Each protocol is pinned against an independent, obviously-correct reference computation on a tiny model.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch

from qckit.errors import InputError
from qckit.evaluate import evaluate_lm, sliding_windows
from qckit.evaluate.loglik import prefix_token_id, rolling_windows
from qckit.progress import RecordingObserver
from qckit.testing import SAMPLE_SENTENCES, approx_sums, make_tiny_llama, train_tiny_tokenizer, write_corpus

DOCS = list(SAMPLE_SENTENCES)
stream_lm = functools.partial(evaluate_lm, protocol="stream")


def doc_ids(tokenizer, docs):
    return tokenizer(docs, add_special_tokens=False)["input_ids"]


def stream_ids(tokenizer, docs):
    eos = tokenizer.eos_token_id
    out = [eos]
    for ids in doc_ids(tokenizer, docs):
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
def nll_last(model, inputs, targets):
    """Summed NLL of ``targets``, predicted by the last len(targets) positions of one pass over ``inputs``."""
    logits = model(torch.tensor([inputs])).logits[0, -len(targets) :]
    return (
        -torch.log_softmax(logits.double(), -1)[torch.arange(len(targets)), torch.tensor(targets)]
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


# -- document protocol ---------------------------------------------------------------------------------


def test_document_protocol_scores_each_document_alone_after_the_prefix_token(tiny_model, tiny_tokenizer):
    docs = DOCS[:5]
    bos = tiny_tokenizer.bos_token_id
    # the reference: one forward pass per document over [BOS] + its tokens, no windows
    expected = sum(nll_full_context(tiny_model, [bos, *ids]) for ids in doc_ids(tiny_tokenizer, docs))
    tokens = sum(len(ids) for ids in doc_ids(tiny_tokenizer, docs))
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)  # no extra byte per document
    words = sum(len(d.split()) for d in docs)
    result = evaluate_lm(tiny_model, tiny_tokenizer, docs, max_length=128)
    assert result.protocol == "document" and result.prefix_token == bos and result.stride is None
    assert (result.tokens, result.bytes, result.words, result.documents, result.windows) == (
        tokens,
        n_bytes,
        words,
        5,
        5,
    )
    assert result.loss == pytest.approx(expected / tokens, rel=1e-5)
    assert result.perplexity == pytest.approx(math.exp(expected / tokens), rel=1e-5)
    assert result.bits_per_byte == pytest.approx(expected / n_bytes / math.log(2), rel=1e-5)
    assert result.byte_perplexity == pytest.approx(math.exp(expected / n_bytes), rel=1e-5)
    assert result.word_perplexity == pytest.approx(math.exp(expected / words), rel=1e-5)


def test_rolling_windows_follow_the_lm_eval_example():
    # lm_eval.api.model.LM.loglikelihood_rolling's docstring: tokens 0-9, prefix BOS, max context 4
    assert rolling_windows(list(range(10)), -1, 4) == [
        ([-1], [0, 1, 2, 3]),
        ([3], [4, 5, 6, 7]),
        ([5, 6, 7], [8, 9]),  # the last window reads 5 6 7 8 and scores only 8 9
    ]
    assert rolling_windows([7], -1, 4) == [([-1], [7])]
    assert rolling_windows(list(range(8)), -1, 4) == [([-1], [0, 1, 2, 3]), ([3], [4, 5, 6, 7])]
    assert rolling_windows([], -1, 4) == []


@pytest.mark.parametrize("max_length", [4, 7, 16])
def test_long_documents_are_scored_in_rolling_windows(tiny_model, tiny_tokenizer, max_length):
    docs = DOCS[:3]
    bos = tiny_tokenizer.bos_token_id
    expected = 0.0
    for ids in doc_ids(tiny_tokenizer, docs):
        # the windows as lm-eval's docstring draws them: blocks of max_length predicted tokens; the first
        # reads BOS + the block minus its last token, a full later block reads the max_length tokens before
        # its end, and the last (shorter) block reads the max_length tokens before its end too
        for start in range(0, len(ids), max_length):
            end = min(start + max_length, len(ids))
            inputs = [bos, *ids[: end - 1]] if start == 0 else ids[end - max_length - 1 : end - 1]
            expected += nll_last(tiny_model, inputs, ids[start:end])
    result = evaluate_lm(tiny_model, tiny_tokenizer, docs, max_length=max_length, batch_size=3)
    assert result.tokens == sum(len(ids) for ids in doc_ids(tiny_tokenizer, docs))
    assert result.windows == sum(math.ceil(len(ids) / max_length) for ids in doc_ids(tiny_tokenizer, docs))
    assert result.loss * result.tokens == approx_sums(expected)


def test_document_numbers_add_up_over_documents_and_ignore_batching(tiny_model, tiny_tokenizer):
    alone = [evaluate_lm(tiny_model, tiny_tokenizer, [d], max_length=32) for d in DOCS[:12]]
    together = [
        evaluate_lm(tiny_model, tiny_tokenizer, DOCS[:12], max_length=32, batch_size=b) for b in (1, 2, 50)
    ]
    total_nll = sum(r.loss * r.tokens for r in alone)
    for result in together:
        assert result.loss * result.tokens == approx_sums(total_nll)  # no document sees another
        assert result.bytes == sum(r.bytes for r in alone) and result.tokens == sum(r.tokens for r in alone)
    streamed = stream_lm(tiny_model, tiny_tokenizer, DOCS[:12], max_length=32)
    assert streamed.protocol == "stream" and streamed.bits_per_byte != pytest.approx(
        together[0].bits_per_byte
    )


def test_prefix_token_rule_and_override(tiny_model, tiny_tokenizer):
    class NoBos:
        bos_token_id, eos_token_id = None, 5

    assert prefix_token_id(tiny_tokenizer) == tiny_tokenizer.bos_token_id
    assert prefix_token_id(NoBos()) == 5
    assert prefix_token_id(tiny_tokenizer, "</s>") == tiny_tokenizer.eos_token_id
    assert prefix_token_id(tiny_tokenizer, 7) == 7
    with pytest.raises(ValueError, match="not a token"):
        prefix_token_id(tiny_tokenizer, "<nope>")
    eos = tiny_tokenizer.eos_token_id
    doc = DOCS[0]
    expected = nll_full_context(tiny_model, [eos, *doc_ids(tiny_tokenizer, [doc])[0]])
    result = evaluate_lm(tiny_model, tiny_tokenizer, [doc], max_length=64, prefix_token="</s>")
    assert result.prefix_token == eos
    assert result.loss * result.tokens == approx_sums(expected)


def test_document_protocol_settings_are_checked(tiny_model, tiny_tokenizer):
    with pytest.raises(ValueError, match="stream protocol only"):
        evaluate_lm(tiny_model, tiny_tokenizer, DOCS[:2], stride=4)
    with pytest.raises(ValueError, match="document protocol only"):
        stream_lm(tiny_model, tiny_tokenizer, DOCS[:2], prefix_token="</s>")
    with pytest.raises(ValueError, match="protocol must be one of"):
        evaluate_lm(tiny_model, tiny_tokenizer, DOCS[:2], protocol="lines")


def test_uniform_model_scores_log_vocab_per_token_in_both_protocols(tiny_tokenizer):
    model = make_tiny_llama(tiny_tokenizer)
    with torch.no_grad():
        model.lm_head.weight.zero_()  # every logit is 0: the model predicts the uniform distribution
    vocab = model.config.vocab_size
    for protocol in ("document", "stream"):
        result = evaluate_lm(model, tiny_tokenizer, DOCS[:5], max_length=16, protocol=protocol)
        assert result.loss == pytest.approx(math.log(vocab), rel=1e-6)
        assert result.bits_per_byte == pytest.approx(
            result.tokens * math.log2(vocab) / result.bytes, rel=1e-6
        )


# -- stream protocol -----------------------------------------------------------------------------------


def test_one_window_matches_a_direct_computation(tiny_model, tiny_tokenizer):
    docs = DOCS[:3]
    ids = stream_ids(tiny_tokenizer, docs)
    assert len(ids) < 128
    result = stream_lm(tiny_model, tiny_tokenizer, docs, max_length=128)
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
    result = stream_lm(
        tiny_model, tiny_tokenizer, docs, max_length=max_length, stride=max_length - 1, batch_size=16
    )
    expected = nll_rolling_context(tiny_model, ids, max_length - 1)
    assert result.tokens == len(ids) - 1
    assert result.loss * result.tokens == approx_sums(expected)


@pytest.mark.parametrize("stride", [None, 0, 1, 5, 15])
def test_every_token_is_predicted_once_whatever_the_stride(tiny_model, tiny_tokenizer, stride):
    docs = DOCS[:10]
    ids = stream_ids(tiny_tokenizer, docs)
    result = stream_lm(tiny_model, tiny_tokenizer, docs, max_length=16, stride=stride, batch_size=32)
    assert result.tokens == len(ids) - 1
    assert result.bytes == sum(len(d.encode()) + 1 for d in docs)
    step = 16 - (8 if stride is None else max(stride, 1))
    assert result.windows == math.ceil((len(ids) - 16) / step) + 1


def test_token_weighted_and_independent_of_batch_size(tiny_model, tiny_tokenizer):
    results = [
        stream_lm(tiny_model, tiny_tokenizer, DOCS, max_length=32, stride=8, batch_size=b) for b in (1, 3, 64)
    ]
    assert results[0].windows > 3
    for other in results[1:]:
        assert other.tokens == results[0].tokens
        assert other.bits_per_byte == pytest.approx(results[0].bits_per_byte, rel=1e-5)
        assert other.loss == pytest.approx(results[0].loss, rel=1e-5)


def test_bytes_do_not_depend_on_the_tokenizer():
    small, large = train_tiny_tokenizer(DOCS, vocab_size=300), train_tiny_tokenizer(DOCS, vocab_size=512)
    a = stream_lm(make_tiny_llama(small), small, DOCS, max_length=64)
    b = stream_lm(make_tiny_llama(large), large, DOCS, max_length=64)
    assert a.tokens > b.tokens  # a smaller vocabulary makes more tokens of the same text
    assert a.bytes == b.bytes == sum(len(d.encode()) + 1 for d in DOCS)


def test_restores_modes_and_works_with_peft(tiny_model, tiny_tokenizer):
    from peft import LoraConfig, get_peft_model

    plain = stream_lm(tiny_model, tiny_tokenizer, DOCS[:6], max_length=32)
    peft_model = get_peft_model(
        tiny_model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.5)
    )
    peft_model.train()
    frozen = peft_model.base_model.model.model.layers[0]
    frozen.eval()  # a submodule deliberately in eval mode must stay so
    wrapped = stream_lm(peft_model, tiny_tokenizer, DOCS[:6], max_length=32)
    # LoRA starts as a no-op and dropout is off during evaluation: same numbers as the base model
    assert wrapped.loss == pytest.approx(plain.loss, rel=1e-5)
    assert peft_model.training and not frozen.training
    assert peft_model.base_model.model.model.layers[1].training


def test_max_length_is_capped_at_the_model_positions(tiny_model, tiny_tokenizer):
    observer = RecordingObserver()
    result = stream_lm(tiny_model, tiny_tokenizer, DOCS[:3], max_length=2048, stride=1024, observer=observer)
    assert (result.max_length, result.stride) == (512, 511)  # the tiny model has 512 positions
    assert [data for kind, _, data in observer.events if kind == "warn"][0].startswith(
        "evaluation max_length 2048"
    )
    assert result.tokens == len(stream_ids(tiny_tokenizer, DOCS[:3])) - 1


def test_path_input_and_progress(tmp_path, tiny_model, tiny_tokenizer):
    path = write_corpus(tmp_path / "val.txt", ["", *DOCS[:8], "   "])
    observer = RecordingObserver()
    from_file = stream_lm(tiny_model, tiny_tokenizer, path, max_length=32, observer=observer)
    from_list = stream_lm(tiny_model, tiny_tokenizer, DOCS[:8], max_length=32)
    assert from_file.as_dict() | {"seconds": 0} == from_list.as_dict() | {"seconds": 0}
    assert observer.events[0] == ("start", "evaluate", from_file.windows)
    assert observer.events[-1] == ("finish", "evaluate", None)
    assert from_file.as_dict()["documents"] == 8


def test_training_on_a_text_lowers_its_bits_per_byte(tiny_model, tiny_tokenizer):
    text = DOCS[:4]
    before = stream_lm(tiny_model, tiny_tokenizer, text, max_length=64)
    ids = torch.tensor([stream_ids(tiny_tokenizer, text)])
    optimizer = torch.optim.AdamW(tiny_model.parameters(), lr=1e-2)
    tiny_model.train()
    for _ in range(30):
        optimizer.zero_grad()
        tiny_model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
    after = stream_lm(tiny_model, tiny_tokenizer, text, max_length=64)
    assert after.bits_per_byte < 0.7 * before.bits_per_byte
    assert tiny_model.training


def test_invalid_inputs(tiny_model, tiny_tokenizer, tmp_path):
    with pytest.raises(InputError, match="no documents"):
        stream_lm(tiny_model, tiny_tokenizer, ["", "  "])
    with pytest.raises(InputError, match="nope.txt"):
        stream_lm(tiny_model, tiny_tokenizer, tmp_path / "nope.txt")
    with pytest.raises(ValueError):
        stream_lm(tiny_model, tiny_tokenizer, DOCS, max_length=16, stride=16)
    with pytest.raises(ValueError):
        list(sliding_windows(10, 4, 0))


def test_the_bits_per_byte_interval_is_a_bootstrap_over_documents():
    import math

    import numpy as np

    from qckit.evaluate.bpb import bootstrap_bits_per_byte

    nll = np.array([10.0, 20.0, 30.0, 40.0])
    sizes = np.array([10.0, 10.0, 10.0, 10.0])
    low, high = bootstrap_bits_per_byte(nll, sizes)
    point = nll.sum() / sizes.sum() / math.log(2)
    assert low < point < high
    assert 1.0 / math.log(2) <= low and high <= 4.0 / math.log(2)  # within the extreme documents
    assert bootstrap_bits_per_byte(nll, sizes) == [low, high]  # a fixed seed: reproducible
    same = bootstrap_bits_per_byte(np.full(5, 7.0), np.full(5, 5.0))
    assert same == pytest.approx([7.0 / 5.0 / math.log(2)] * 2)  # identical documents: no spread
    assert bootstrap_bits_per_byte(nll[:1], sizes[:1]) is None
