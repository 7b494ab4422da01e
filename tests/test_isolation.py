"""Document-isolated packing: a packed window scores exactly like its documents run one by one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qckit.components import IGNORE_INDEX, PackingStats
from qckit.documents import tokenize_batch
from qckit.errors import RecipeError
from qckit.testing import SAMPLE_SENTENCES, write_corpus
from qckit.train import TrainSettings, run_train
from qckit.train.isolation import check_document_isolation
from qckit.train.packing import document_positions, forward_inputs, pack_texts
from qckit_builtins.adapters import LoraAdapter
from qckit_builtins.chunkers import WindowChunker

EOS = 1


def _windows(chunker, docs):
    stats = PackingStats()
    return list(chunker.windows(docs, EOS, stats)), stats


def test_document_mode_labels_each_document_start_as_context():
    docs = [[10, 11, 12], [20, 21], [30, 31, 32, 33]]  # stream: 10 11 12 E 20 21 E 30 31 32 33 E
    (first, second), stats = _windows(WindowChunker(max_length=8, stride=2, min_length=1), docs)
    ids, labels = first
    assert ids == [10, 11, 12, EOS, 20, 21, EOS, 30]
    #              pos 0 | trained …       | doc start | …   | doc start
    assert labels == [IGNORE_INDEX, 11, 12, EOS, IGNORE_INDEX, 21, EOS, IGNORE_INDEX]
    ids, labels = second  # starts 2 tokens back: the stride is context only, as in window mode
    assert ids == [EOS, 30, 31, 32, 33, EOS]
    assert labels == [IGNORE_INDEX, IGNORE_INDEX, 31, 32, 33, EOS]
    assert stats.tokens_kept == sum(
        label != IGNORE_INDEX for _, window in (first, second) for label in window
    )
    window_mode, _ = _windows(WindowChunker(max_length=8, stride=2, min_length=1, attention="window"), docs)
    assert window_mode[0][1] == [IGNORE_INDEX, 11, 12, EOS, 20, 21, EOS, 30]  # the seed's labels
    assert WindowChunker().cache_key() != WindowChunker(attention="window").cache_key()
    with pytest.raises(ValueError, match="attention must be one of"):
        WindowChunker(attention="none")


def test_position_ids_restart_after_every_eos_and_at_the_padding():
    ids = np.array([5, 6, EOS, 7, EOS, 8, 9])
    assert document_positions(ids, EOS, size=10).tolist() == [0, 1, 2, 0, 1, 0, 1, 0, 1, 2]
    assert document_positions(np.array([EOS, 4]), EOS).tolist() == [0, 0]


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_packed_window_loss_equals_its_documents_run_one_by_one(
    tiny_model_dir, tiny_tokenizer, implementation
):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=implementation).eval()
    docs = list(SAMPLE_SENTENCES[:12])
    data = pack_texts(docs, tiny_tokenizer, WindowChunker(max_length=96, stride=16, min_length=4))
    eos = tiny_tokenizer.eos_token_id
    assert len(data) >= 3
    for index in (0, 1, len(data) - 1):  # the first window, one with overlap context, the short last one
        item = {k: v[None] for k, v in data[index].items()}
        with torch.no_grad():
            packed = float(model(**forward_inputs(item)).loss)
        ids, labels = (np.asarray(a, dtype=np.int64) for a in data.window(index))
        if index:
            assert (labels[:16] == IGNORE_INDEX).all()  # the stride stays context only
        starts = [0, *(np.flatnonzero(ids[:-1] == eos) + 1).tolist(), len(ids)]
        total_nll, total_count = 0.0, 0
        for start, end in zip(starts, starts[1:], strict=False):
            segment = torch.from_numpy(ids[start:end])[None]
            target = torch.from_numpy(labels[start:end])[None]
            count = int((target[:, 1:] != IGNORE_INDEX).sum())
            if count == 0:
                continue
            with torch.no_grad():
                loss = float(model(input_ids=segment, labels=target).loss)
            total_nll += loss * count
            total_count += count
        assert total_count == int((labels != IGNORE_INDEX).sum())
        assert packed == pytest.approx(total_nll / total_count, abs=1e-4)
        # and it is not what window attention gives (the check has teeth)
        with torch.no_grad():
            crossing = float(model(input_ids=item["input_ids"], labels=item["labels"]).loss)
        assert abs(crossing - packed) > 1e-3


def test_the_isolation_check_passes_llama_and_refuses_a_model_that_cannot(tiny_model):
    assert check_document_isolation(tiny_model, EOS) < 1e-3
    from transformers import OPTConfig, OPTForCausalLM

    opt = OPTForCausalLM(
        OPTConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            ffn_dim=64,
            vocab_size=64,
            word_embed_proj_dim=32,
        )
    )
    with pytest.raises(
        RecipeError, match=r"train\.chunker\.attention: OPTForCausalLM .* does not isolate packed documents"
    ):
        check_document_isolation(opt, EOS)


def test_a_run_refuses_document_attention_on_a_model_that_cannot_isolate(tmp_path, tiny_tokenizer):
    from transformers import OPTConfig, OPTForCausalLM

    model_dir = tmp_path / "opt"
    config = OPTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        ffn_dim=64,
        vocab_size=len(tiny_tokenizer),
        word_embed_proj_dim=32,
        max_position_embeddings=256,
        eos_token_id=tiny_tokenizer.eos_token_id,
        pad_token_id=tiny_tokenizer.pad_token_id,
        bos_token_id=tiny_tokenizer.bos_token_id,
    )
    OPTForCausalLM(config).save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    train = write_corpus(tmp_path / "train.txt", list(SAMPLE_SENTENCES) * 2)
    settings = TrainSettings(
        train_file=str(train),
        output_dir=str(tmp_path / "out"),
        model=str(model_dir),
        max_steps=2,
        batch_size=2,
        gradient_accumulation_steps=1,
        save_steps=0,
        inspect_data=False,
    )
    lora = LoraAdapter(target_modules=("q_proj", "v_proj"))
    with pytest.raises(
        RecipeError, match=r"OPTForCausalLM .* does not isolate packed documents.*attention = \"window\""
    ):
        run_train(settings, WindowChunker(max_length=64, stride=8, min_length=8), [lora])
    assert not list((tmp_path / "out").glob("checkpoint-*"))
    result = run_train(
        settings, WindowChunker(max_length=64, stride=8, min_length=8, attention="window"), [lora]
    )
    assert result.global_step == 2


def test_tokenizing_never_injects_eos_inside_a_document(tiny_tokenizer):
    # document boundaries are found from EOS ids, so a document's own text must never produce one
    ids = tokenize_batch(tiny_tokenizer, [f"fin {tiny_tokenizer.eos_token} encore"])[0]
    assert tiny_tokenizer.eos_token_id not in ids


class _TrainerPlacedLora(LoraAdapter):
    """LoRA declaring that the Trainer places (shards) the model, as the fsdp adapter does."""

    shards_model = True


def test_a_model_the_trainer_places_is_checked_when_training_begins(tmp_path, tiny_tokenizer, tiny_model_dir):
    train = write_corpus(tmp_path / "train.txt", list(SAMPLE_SENTENCES) * 2)
    settings = TrainSettings(
        train_file=str(train),
        output_dir=str(tmp_path / "out"),
        model=str(tiny_model_dir),
        max_steps=1,
        batch_size=2,
        save_steps=0,
        inspect_data=False,
    )
    chunker = WindowChunker(max_length=64, stride=8, min_length=8)
    assert run_train(settings, chunker, [_TrainerPlacedLora()]).global_step == 1
    from transformers import OPTConfig, OPTForCausalLM

    model_dir = tmp_path / "opt"
    OPTForCausalLM(
        OPTConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            ffn_dim=64,
            vocab_size=len(tiny_tokenizer),
            word_embed_proj_dim=32,
            max_position_embeddings=256,
        )
    ).save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    settings.model, settings.output_dir = str(model_dir), str(tmp_path / "opt_out")
    lora = _TrainerPlacedLora(target_modules=("q_proj", "v_proj"))
    with pytest.raises(RecipeError, match=r"OPTForCausalLM .* does not isolate packed documents"):
        run_train(settings, chunker, [lora])
    assert not list((tmp_path / "opt_out").glob("checkpoint-*"))
