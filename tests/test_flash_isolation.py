"""Document isolation under every attention kernel, in training's batch form.

Flash attention runs through transformers' real wrapper (``integrations.flash_attention``,
``_flash_attention_forward``) with the exact pure-torch kernels of :mod:`qckit.testing` (dense and varlen),
so the padding-free collation, the packed-sequence paths and the isolation check are tested on a CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qckit.errors import RecipeError
from qckit.testing import (
    SAMPLE_SENTENCES,
    approx_sums,
    flash_attn_func,
    flash_attn_varlen_func,
    register_reference_flash_attention,
    tiny_train_settings,
    write_corpus,
)
from qckit.train import run_train
from qckit.train.isolation import check_document_isolation
from qckit.train.packing import WindowCollator, flattens_batches, forward_inputs, pack_texts, window_collator
from qckit_builtins.chunkers import WindowChunker

FLASH = register_reference_flash_attention()
IMPLEMENTATIONS = ["sdpa", "eager", FLASH]
#: float32 logits of one tiny-model forward: a difference of two runs with other batch shapes stays
#: at rounding level (~1e-6); attending across a boundary moves them by ~0.1
LOGIT_ATOL = 1e-4


def _leaky_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, **kwargs):
    """A varlen kernel that ignores the sequence lengths: causal attention over the whole flattened row."""
    whole = torch.tensor([0, q.shape[0]], dtype=torch.int32)
    return flash_attn_varlen_func(q, k, v, whole, whole, **kwargs)


LEAKY = register_reference_flash_attention("qckit_flash_leaky", varlen=_leaky_varlen)


def _counted_kernels():
    """A stand-in registered under its own name that counts its dense and varlen calls, the most rows one
    dense call got (over 1: dense attention over rows of several documents) and the most sequences one
    varlen call got."""
    calls = {"dense": 0, "dense_rows": 0, "varlen": 0, "sequences": 0}

    def dense(q, *args, **kwargs):
        calls["dense"] += 1
        calls["dense_rows"] = max(calls["dense_rows"], q.shape[0])
        return flash_attn_func(q, *args, **kwargs)

    def varlen(q, k, v, cu_seqlens_q, cu_seqlens_k, **kwargs):
        calls["varlen"] += 1
        calls["sequences"] = max(calls["sequences"], len(cu_seqlens_q) - 1)
        return flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, **kwargs)

    return register_reference_flash_attention("qckit_flash_counted", dense=dense, varlen=varlen), calls


@pytest.fixture(scope="module")
def packed(tiny_tokenizer):
    # windows of 48 tokens over short documents: several documents per window, the last window short
    return pack_texts(
        list(SAMPLE_SENTENCES[:16]), tiny_tokenizer, WindowChunker(max_length=48, stride=8, min_length=4)
    )


def _model(tiny_model_dir, implementation):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=implementation).eval()


def _documents(batch, flatten):
    """``(row, start, end)`` of every document in a collated batch (padding excluded), from its position ids."""
    spans = []
    for row, (positions, mask) in enumerate(zip(batch["position_ids"], batch["attention_mask"], strict=True)):
        n = int(mask.sum()) if not flatten else len(positions)
        starts = [int(i) for i in torch.nonzero(positions[:n] == 0).flatten()] + [n]
        spans += [(row, a, b) for a, b in zip(starts, starts[1:], strict=False)]
    return spans


def test_the_stand_in_kernels_are_exact_attention():
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 7, 4, 8, generator=generator) for _ in range(3))
    expected = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
    ).transpose(1, 2)
    torch.testing.assert_close(flash_attn_func(q, k, v, causal=True), expected, atol=1e-6, rtol=0)
    # varlen: sequences of 3 and 4 tokens in one flattened row, each one alone
    cu = torch.tensor([0, 3, 7], dtype=torch.int32)
    out = flash_attn_varlen_func(q[0], k[0], v[0], cu, cu, causal=True)
    for a, b in ((0, 3), (3, 7)):
        alone = flash_attn_func(q[:1, a:b], k[:1, a:b], v[:1, a:b], causal=True)[0]
        torch.testing.assert_close(out[a:b], alone, atol=1e-6, rtol=0)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("rows", ["one", "two", "padded"])
def test_every_document_of_a_training_batch_scores_as_if_alone(tiny_model_dir, packed, implementation, rows):
    model = _model(tiny_model_dir, implementation)
    indices = {"one": [0], "two": [0, 1], "padded": [0, len(packed) - 1]}[rows]
    items = [packed[i] for i in indices]
    if rows == "padded":
        assert int(items[1]["attention_mask"].sum()) < len(items[1]["input_ids"])  # the short last window
    collator = window_collator(model)
    assert collator.flatten == (implementation == FLASH)
    batch = collator(items)
    if collator.flatten:  # one row, padding-free
        assert batch["input_ids"].shape == (1, sum(int(item["attention_mask"].sum()) for item in items))
    inputs = forward_inputs(batch)
    embeddings = model.get_input_embeddings()(inputs.pop("input_ids")).detach().requires_grad_(True)
    logits = model(inputs_embeds=embeddings, **{k: v for k, v in inputs.items() if k != "labels"}).logits
    spans = _documents(batch, collator.flatten)
    assert len(spans) > len(items)  # documents packed after others
    for row, start, end in spans:
        ids = batch["input_ids"][row, start:end]
        with torch.no_grad():
            alone = model(input_ids=ids[None], use_cache=False).logits[0]
        torch.testing.assert_close(logits[row, start:end].detach(), alone, atol=LOGIT_ATOL, rtol=0)
        (grad,) = torch.autograd.grad(logits[row, start:end].sum(), embeddings, retain_graph=True)
        assert grad[row, start:end].abs().max() > 0
        grad[row, start:end] = 0
        assert float(grad.abs().max()) == 0.0  # no gradient crosses a document boundary


@pytest.mark.parametrize("implementation", [FLASH, LEAKY])
def test_stacked_rows_or_a_kernel_ignoring_lengths_leak_across_documents(
    tiny_model_dir, packed, implementation
):
    # the check's teeth: transformers runs dense attention over a row of several documents when the batch
    # has more than one row (its issue with flash attention), or a kernel ignores the sequence lengths
    model = _model(tiny_model_dir, implementation)
    collator = WindowCollator(flatten=implementation == LEAKY)
    batch = collator([packed[0], packed[1]])
    with torch.no_grad():
        logits = model(**{k: v for k, v in forward_inputs(batch).items() if k != "labels"}).logits
    worst = 0.0
    for row, start, end in _documents(batch, collator.flatten):
        with torch.no_grad():
            alone = model(input_ids=batch["input_ids"][row, start:end][None]).logits[0]
        worst = max(worst, float((logits[row, start:end] - alone).abs().max()))
    assert worst > 100 * LOGIT_ATOL


def test_the_flattened_batch_keeps_labels_loss_and_token_counts(tiny_model_dir, tiny_tokenizer, packed):
    items = [packed[0], packed[len(packed) - 1]]
    stacked, flat = WindowCollator(flatten=False)(items), WindowCollator(flatten=True)(items)
    real = torch.stack([item["attention_mask"] for item in items]).bool()
    assert torch.equal(flat["labels"][0], torch.stack([item["labels"] for item in items])[real])
    assert int(flat["attention_mask"].sum()) == int(stacked["attention_mask"].sum())  # num_input_tokens_seen
    assert flat["cu_seq_lens_q"].tolist()[-1] == flat["input_ids"].shape[1]
    assert flat["max_length_q"] == int(torch.diff(flat["cu_seq_lens_q"]).max())
    sdpa, flash = _model(tiny_model_dir, "sdpa"), _model(tiny_model_dir, FLASH)
    with torch.no_grad():
        padded_loss = float(sdpa(**forward_inputs(stacked)).loss)
        flat_loss = float(flash(**forward_inputs(flat)).loss)
    assert flat_loss == approx_sums(padded_loss)  # the same mean over the same trained tokens
    # window attention (no position ids in the items) flattens too, one sequence per window
    window = pack_texts(list(SAMPLE_SENTENCES[:16]), tiny_tokenizer, WindowChunker(48, 8, 4, "window"))
    flat_windows = WindowCollator(flatten=True)([window[0], window[1]])
    assert flat_windows["cu_seq_lens_q"].tolist() == [0, 48, 96]


def test_flash_implementations_are_recognised(tiny_model_dir):
    from types import SimpleNamespace

    assert flattens_batches(_model(tiny_model_dir, FLASH))
    assert not flattens_batches(_model(tiny_model_dir, "sdpa"))
    # transformers' flash wrapper serves these too (the names as the model config holds them)
    for name in ("flash_attention_2", "flash_attention_3", "kernels-community/flash-attn2"):
        assert flattens_batches(SimpleNamespace(config=SimpleNamespace(_attn_implementation=name)))
    for name in ("eager", "flex_attention", None):
        assert not flattens_batches(SimpleNamespace(config=SimpleNamespace(_attn_implementation=name)))


@pytest.mark.parametrize("autocast", [None, torch.bfloat16])
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_the_isolation_check_passes_the_kernels_that_isolate(tiny_model_dir, implementation, autocast):
    assert (
        check_document_isolation(_model(tiny_model_dir, implementation), 1, pad_id=0, autocast=autocast)
        < 1e-3
    )


@pytest.mark.parametrize("autocast", [None, torch.bfloat16])
def test_the_isolation_check_refuses_a_kernel_it_cannot_prove_naming_it(tiny_model_dir, autocast):
    with pytest.raises(
        RecipeError,
        match=r"train\.chunker\.attention: LlamaForCausalLM \(attn_implementation 'qckit_flash_leaky'\) does not "
        r"isolate packed documents in training's batch form \(2 windows, one padded, flattened\)",
    ):
        check_document_isolation(_model(tiny_model_dir, LEAKY), 1, pad_id=0, autocast=autocast)


def test_the_isolation_check_refuses_a_kernel_that_fails_on_the_batch(tiny_model_dir):
    def broken(*args, **kwargs):
        raise RuntimeError("FlashAttention only supports fp16 and bf16 data type")

    name = register_reference_flash_attention("qckit_flash_broken", varlen=broken)
    with pytest.raises(
        RecipeError, match=r"cannot check that .*'qckit_flash_broken'.*RuntimeError: FlashAttention only"
    ):
        check_document_isolation(_model(tiny_model_dir, name), 1)


def test_a_run_with_the_flash_stand_in_trains_like_sdpa(tmp_path, tiny_model_dir):
    train = write_corpus(tmp_path / "train.txt", list(SAMPLE_SENTENCES) * 2)
    counted, calls = _counted_kernels()
    results = {}
    for implementation in ("sdpa", counted):
        settings = tiny_train_settings(
            [train],
            tmp_path / implementation,
            tiny_model_dir,
            attn_implementation=implementation,
            max_steps=3,
            inspect_data=False,
            lr_scheduler="constant",
        )
        results[implementation] = run_train(
            settings, WindowChunker(max_length=64, stride=8, min_length=8), []
        )
    sdpa, flash = results["sdpa"], results[counted]
    # the Trainer's batches reach the varlen kernel, several documents per micro-batch of 4 windows
    # (dense calls: the isolation check's documents run alone, one row each)
    assert calls["varlen"] and calls["dense_rows"] <= 1 and calls["sequences"] > 4
    assert flash.global_step == sdpa.global_step == 3
    assert flash.summary["tokens_seen"] == sdpa.summary["tokens_seen"]
    # the same documents, isolated the same way: the same losses up to float32 rounding over 3 steps
    assert flash.summary["train_loss"] == pytest.approx(sdpa.summary["train_loss"], abs=1e-4)
    assert np.isfinite(flash.summary["train_loss"])


def test_the_time_estimate_times_training_batch_form(tiny_model_dir, packed):
    from qckit.train.inspection import measure_pass_seconds

    name, calls = _counted_kernels()
    seconds = measure_pass_seconds(_model(tiny_model_dir, name), packed, 2, 1, torch.device("cpu"), "fp32")
    assert seconds is not None and seconds > 0
    assert calls["varlen"] and not calls["dense"]  # the flattened rows, as training runs them


@pytest.mark.parametrize("flatten", [False, True])
def test_the_check_batch_is_two_windows_one_padded_with_no_special_id_inside_a_document(flatten):
    from qckit.train.isolation import _windows

    rows, spans = _windows(8, 3, 4, flatten)
    assert len(rows) == 2 and int(rows[1]["attention_mask"].sum()) < len(rows[1]["input_ids"])
    batch = WindowCollator(flatten)(rows)
    for span in spans:
        assert not set(span.ids[:-1].tolist()) & {3, 4} and int(span.ids[-1]) == 3
        assert torch.equal(batch["input_ids"][span.row, span.flat], span.ids)
        assert int(batch["position_ids"][span.row, span.flat][0]) == 0
