"""Growing the vocabulary (qckit.vocab): new BPE tokens for words, embedding rows from their pieces."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from qckit.errors import InputError, QckitError
from qckit.testing import make_tiny_llama
from qckit.train.packing import BatchEncoder, tokenizer_fingerprint
from qckit.vocab import fertility, grow_embeddings, grow_tokenizer, read_token_list

WORDS = ["magasiner", "tuque", "maringouins", "dépanneur", "pantoute", "écoeurants"]
SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample" / "quebec_sample.txt"


def _lines() -> list[str]:
    text = SAMPLE.read_bytes().decode("utf-8", errors="replace")
    return [line for line in text.split("\n") if line.strip()]


@pytest.fixture(scope="module")
def grown(tiny_tokenizer):
    return grow_tokenizer(tiny_tokenizer, WORDS)


def test_each_word_becomes_one_token_in_running_text(tiny_tokenizer, grown) -> None:
    tokenizer, growth = grown
    assert growth.words == WORDS and growth.old_size == len(tiny_tokenizer)
    assert growth.new_size == len(tokenizer) == len(tiny_tokenizer) + len(growth.added)
    assert [t.id for t in growth.added] == list(range(len(tiny_tokenizer), len(tokenizer)))
    encode = BatchEncoder(tokenizer)
    for word in WORDS:
        ids = encode([f"Je vais {word} demain"])[0]
        new = [t for t in growth.added if t.word == word][0]
        assert new.id in ids and new.text == f" {word}"
        assert len(ids) < len(BatchEncoder(tiny_tokenizer)([f"Je vais {word} demain"])[0])


def test_the_rest_of_the_corpus_tokenizes_as_before(tiny_tokenizer, grown) -> None:
    tokenizer, growth = grown
    lines = _lines()
    old, new = BatchEncoder(tiny_tokenizer)(lines), BatchEncoder(tokenizer)(lines)
    added = {t.id for t in growth.added}
    untouched = [i for i, ids in enumerate(new) if not added & set(ids)]
    assert len(untouched) > len(lines) // 2
    assert all(new[i] == old[i] for i in untouched)
    assert [tokenizer.decode(ids) for ids in new] == lines  # lossless everywhere
    assert tokenizer("Salut").input_ids == tiny_tokenizer("Salut").input_ids  # BOS still added
    assert (tokenizer.eos_token, tokenizer.pad_token) == (tiny_tokenizer.eos_token, tiny_tokenizer.pad_token)


def test_new_tokens_lower_fertility(tiny_tokenizer, grown) -> None:
    tokenizer, _ = grown
    texts = [f"Y'a des {w} partout, {w} encore" for w in WORDS] * 5
    before, after = fertility(tiny_tokenizer, texts), fertility(tokenizer, texts)
    assert before["words"] == after["words"] and before["bytes"] == after["bytes"]
    assert after["tokens_per_word"] < before["tokens_per_word"]
    assert after["bytes_per_token"] > before["bytes_per_token"]
    assert after["bytes_per_token"] == pytest.approx(after["bytes"] / after["tokens"])


def test_words_already_one_token_and_repeats_are_skipped(tiny_tokenizer) -> None:
    word = "pis"
    assert len(BatchEncoder(tiny_tokenizer)([f"a {word}"])[0]) == 2
    tokenizer, growth = grow_tokenizer(tiny_tokenizer, [word, "tuque", "tuque"])
    assert growth.skipped == {"pis": "already one token"} and growth.words == ["tuque"]


def test_a_word_split_before_bpe_is_refused(tiny_tokenizer) -> None:
    with pytest.raises(InputError, match="c'est: cannot become one token.*before BPE"):
        grow_tokenizer(tiny_tokenizer, ["c'est"])


def test_non_bpe_tokenizers_are_refused() -> None:
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    wordlevel = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"a": 0, "</s>": 1}, "a"))
    )
    with pytest.raises(QckitError, match="BPE tokenizer; this tokenizer is WordLevel"):
        grow_tokenizer(wordlevel, ["tuque"])


def test_token_list_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text("# mots du Québec\nmagasiner\n\n  tuque  \n", encoding="utf-8")
    assert read_token_list(str(path)) == ["magasiner", "tuque"]
    assert read_token_list(["a", " ", "b "]) == ["a", "b"]
    with pytest.raises(InputError, match="token list not found"):
        read_token_list(str(tmp_path / "missing.txt"))


def test_growing_changes_the_packing_cache_key(tiny_tokenizer, grown) -> None:
    assert tokenizer_fingerprint(grown[0]) != tokenizer_fingerprint(tiny_tokenizer)


def test_saved_grown_tokenizer_loads_back_identically(grown, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer, _ = grown
    tokenizer.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    lines = _lines()
    assert BatchEncoder(again)(lines) == BatchEncoder(tokenizer)(lines) and len(again) == len(tokenizer)


@pytest.mark.parametrize("tied", [False, True])
def test_new_embedding_rows_start_at_the_mean_of_their_pieces(tiny_tokenizer, grown, tied: bool) -> None:
    tokenizer, growth = grown
    model = make_tiny_llama(tiny_tokenizer)
    if tied:
        model.config.tie_word_embeddings = True
        model.tie_weights()
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_out = model.get_output_embeddings().weight.detach().clone()
    grow_embeddings(model, growth)
    new_in = model.get_input_embeddings().weight
    new_out = model.get_output_embeddings().weight
    assert new_in.shape[0] == len(tokenizer) and model.config.vocab_size == len(tokenizer)
    assert torch.equal(new_in[: len(tiny_tokenizer)], old_in)
    for token in growth.added:
        torch.testing.assert_close(new_in[token.id], old_in[list(token.pieces)].mean(0))
        torch.testing.assert_close(new_out[token.id], old_out[list(token.pieces)].mean(0))
    assert (new_out.data_ptr() == new_in.data_ptr()) == tied
    # the grown model predicts: a new token's input vector behaves like its pieces' average
    ids = BatchEncoder(tokenizer)(["Mets ta tuque"])[0]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits
    assert torch.isfinite(logits).all() and logits.shape[-1] == len(tokenizer)


def test_a_grown_model_exports_to_gguf_with_the_same_ids(tiny_tokenizer, grown, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qckit.gguf_export import write_gguf

    tokenizer, growth = grown
    model = make_tiny_llama(tiny_tokenizer)
    grow_embeddings(model, growth)
    path = write_gguf(model, tokenizer, tmp_path / "grown.gguf", outtype="f32")
    loaded_tok = AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name)
    assert loaded.config.vocab_size == len(tokenizer)
    # every token keeps its id (transformers' GGUF loader may append its own <|endoftext|> after them)
    loaded_vocab = loaded_tok.get_vocab()
    assert all(loaded_vocab[token] == i for token, i in tokenizer.get_vocab().items())
    lines = _lines() + [f"Mets ta {w} pis va {w}" for w in WORDS]
    assert BatchEncoder(loaded_tok)(lines) == BatchEncoder(tokenizer)(lines)
    assert torch.equal(loaded.get_input_embeddings().weight, model.get_input_embeddings().weight)
