"""Growing the vocabulary (qckit.vocab): new BPE tokens for words, embedding rows from their pieces."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from qckit.documents import BatchEncoder
from qckit.errors import InputError, QckitError
from qckit.testing import make_tiny_llama
from qckit.train.packing import tokenizer_fingerprint
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


def test_the_packing_cache_misses_after_growing(tiny_tokenizer, grown, tmp_path: Path) -> None:
    from qckit.testing import write_corpus
    from qckit.train.packing import pack_file
    from qckit_builtins.chunkers import WindowChunker

    corpus = write_corpus(tmp_path / "c.txt", [f"Mets ta {w} pis va {w}" for w in WORDS] * 4)
    chunker = WindowChunker(max_length=16, stride=0, min_length=4)
    base = pack_file(corpus, tiny_tokenizer, chunker, cache_dir=tmp_path / "cache")
    assert pack_file(corpus, tiny_tokenizer, chunker, cache_dir=tmp_path / "cache").from_cache
    after = pack_file(corpus, grown[0], chunker, cache_dir=tmp_path / "cache")
    assert not after.from_cache and after.stats.tokens_total < base.stats.tokens_total


# -- through the train stage -----------------------------------------------------------------------


@pytest.fixture(scope="module", params=["untied", "tied"])
def vocab_run(request, tmp_path_factory):
    """A LoRA run that adds WORDS and trains the embeddings at their own learning rate, on the untied tiny
    model (two trained matrices) and on the tied one (one); ``(run, result, observer, root, base)``."""
    from qckit.progress import RecordingObserver
    from qckit.testing import SAMPLE_SENTENCES, write_corpus
    from qckit.train import TrainRun, TrainSettings
    from qckit_builtins.adapters import LoraAdapter
    from qckit_builtins.chunkers import WindowChunker

    torch.set_num_threads(1)
    base = request.getfixturevalue("tiny_tied_model_dir" if request.param == "tied" else "tiny_model_dir")
    root = tmp_path_factory.mktemp(f"vocab_run_{request.param}")
    words = root / "words.txt"
    words.write_text("\n".join(WORDS) + "\n", encoding="utf-8")
    corpus = write_corpus(
        root / "train.txt", [*SAMPLE_SENTENCES, *(f"Mets ta {w} pis va {w}" for w in WORDS)] * 2
    )
    settings = TrainSettings(
        train_file=str(corpus),
        val_file=str(write_corpus(root / "val.txt", SAMPLE_SENTENCES[:6])),
        output_dir=str(root / "model"),
        model=str(base),
        add_tokens=str(words),
        max_steps=4,
        batch_size=4,
        gradient_accumulation_steps=1,
        learning_rate=5e-3,
        save_steps=0,
        timing_warmup_steps=0,
    )
    obs = RecordingObserver()
    lora = LoraAdapter(r=4, alpha=8, train_embeddings=True, embedding_learning_rate=1e-3)
    run = TrainRun(settings, WindowChunker(max_length=32, stride=0, min_length=8), [lora], observer=obs)
    result = run.run()
    return run, result, obs, root, base


def test_train_grows_the_vocabulary_and_reports_fertility(vocab_run, tiny_tokenizer) -> None:
    run, result, obs, _, _ = vocab_run
    inspection = next(data for event, name, data in obs.events if event == "report" and name == "inspection")
    vocab = inspection["vocabulary"]
    assert vocab["words_added"] == len(WORDS) and vocab["old_vocab_size"] == len(tiny_tokenizer)
    before, after = vocab["fertility"]["before"], vocab["fertility"]["after"]
    assert after["tokens_per_word"] < before["tokens_per_word"]
    assert after["bytes_per_token"] > before["bytes_per_token"]
    assert after["tokens_per_word"] == pytest.approx(inspection["fertility_tokens_per_word"])
    summary = result.summary
    assert summary["vocabulary"]["new_vocab_size"] == vocab["new_vocab_size"]
    assert {t["word"] for t in summary["vocabulary"]["tokens"] if t["word"]} == set(WORDS)
    # the embeddings learn at their own rate, the LoRA matrices at the run's
    rates = {g["initial_lr"] for g in run.trainer.optimizer.param_groups}  # before the schedule
    assert rates == {5e-3, 1e-3}
    from rich.console import Console

    from qckit.report import inspection_report

    console = Console(width=120, record=True)
    console.print(inspection_report(inspection))
    text = console.export_text()
    assert "Vocabulary:" in text and "before" in text and "after" in text


def test_new_rows_trained_and_the_adapter_loads_with_the_grown_vocabulary(vocab_run) -> None:
    from qckit.models import load_adapter, load_model, load_tokenizer, resolve_model

    run, _, _, root, base_dir = vocab_run
    out = root / "model"
    growth = run.vocab_growth
    tokenizer = load_tokenizer(resolve_model(str(out)))
    assert len(tokenizer) == growth.new_size
    tuned = load_adapter(load_model(resolve_model(str(base_dir))), out).eval()
    assert tuned.get_input_embeddings().weight.shape[0] == growth.new_size
    # trained, so no longer the mean of the pieces it started from
    base = load_model(resolve_model(str(base_dir))).get_input_embeddings().weight
    trained = tuned.get_input_embeddings().weight
    token = growth.added[-1]
    assert not torch.allclose(trained[token.id], base[list(token.pieces)].mean(0), atol=1e-6)
    ids = torch.tensor([BatchEncoder(tokenizer)(["Mets ta tuque pis va magasiner"])[0]])
    with torch.no_grad():
        expected = run.model.eval()(input_ids=ids.to(run.model.device)).logits
        got = tuned(input_ids=ids).logits
    torch.testing.assert_close(got, expected.cpu(), rtol=1e-4, atol=1e-4)


@contextlib.contextmanager
def _load_messages() -> Iterator[list[str]]:
    """The warnings (deprecations of lazily imported code aside) and the transformers/peft log records of
    warning level or above emitted inside the block, filled in when it ends."""
    import logging
    import warnings

    messages: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(f"{record.name}: {record.getMessage()}")

    handler = Keep(logging.WARNING)
    loggers = [logging.getLogger(name) for name in ("transformers", "peft")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield messages
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    messages += [str(w.message) for w in caught if not issubclass(w.category, DeprecationWarning)]


def test_the_adapter_holds_each_trained_matrix_once_and_peft_alone_loads_it(vocab_run) -> None:
    from peft import AutoPeftModelForCausalLM, PeftModel
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM

    run, _, _, root, base_dir = vocab_run
    tied = AutoConfig.from_pretrained(base_dir).tie_word_embeddings
    path = root / "model" / "adapter_model.safetensors"
    with safe_open(str(path), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not iterable)
    full = sorted(key for key in tensors if "lora_" not in key)
    embed, head = "base_model.model.model.embed_tokens.weight", "base_model.model.lm_head.weight"
    assert full == ([embed] if tied else [head, embed])  # a tied model's one matrix, under one name
    rows, hidden = run.vocab_growth.new_size, run.model.config.hidden_size
    matrix = rows * hidden * 4  # float32
    assert all(tensors[k].shape == (rows, hidden) and tensors[k].dtype == torch.float32 for k in full)
    lora = sum(t.numel() * t.element_size() for k, t in tensors.items() if k not in full)
    assert 0 < lora < matrix
    assert len(full) * matrix + lora <= path.stat().st_size < len(full) * matrix + lora + 64 * 1024

    ids = torch.tensor([BatchEncoder(run.tokenizer)(["Mets ta tuque pis va magasiner au dépanneur"])[0]])
    assert max(ids[0]) >= run.vocab_growth.old_size
    with torch.no_grad():
        expected = run.model.eval()(input_ids=ids).logits
    # peft alone, as the model card says (the tokenizer in the folder grows the base) and by hand
    assert "AutoPeftModelForCausalLM.from_pretrained" in (root / "model" / "README.md").read_text("utf-8")
    with _load_messages() as auto_messages:
        auto = AutoPeftModelForCausalLM.from_pretrained(str(root / "model"))
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    base.resize_token_embeddings(rows)
    with _load_messages() as messages:
        loaded = PeftModel.from_pretrained(base, str(root / "model"))
    # AutoPeft grows the base with transformers' default mean resizing, which says so; nothing else
    assert messages == [] and [m for m in auto_messages if "mean_resizing=False" not in m] == []
    for model in (auto, loaded):
        inner = model.get_base_model()
        assert (inner.lm_head.weight is inner.model.embed_tokens.weight) == tied
        with torch.no_grad():
            torch.testing.assert_close(model.eval()(input_ids=ids).logits, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("fmt", ["safetensors", "gguf"])
def test_exported_models_have_the_grown_vocabulary(vocab_run, fmt: str) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from qckit.export import export_model

    run, _, _, root, base = vocab_run
    target = root / ("merged" if fmt == "safetensors" else "gguf" / Path("tuned.gguf"))
    out = export_model(str(base), target, adapter_dir=root / "model", format=fmt, outtype="f32")
    if fmt == "safetensors":
        model = AutoModelForCausalLM.from_pretrained(out)
        tokenizer = AutoTokenizer.from_pretrained(out)
    else:
        model = AutoModelForCausalLM.from_pretrained(out.parent, gguf_file=out.name)
        tokenizer = AutoTokenizer.from_pretrained(out.parent, gguf_file=out.name)
    size = run.vocab_growth.new_size
    assert model.config.vocab_size == size and model.get_input_embeddings().weight.shape[0] == size
    tied = AutoConfig.from_pretrained(base).tie_word_embeddings
    assert (model.lm_head.weight is model.get_input_embeddings().weight) == tied  # one matrix, as trained
    text = "Mets ta tuque pis va magasiner au dépanneur"
    ids = BatchEncoder(tokenizer)([text])[0]
    assert ids == BatchEncoder(run.tokenizer)([text])[0] and max(ids) >= run.vocab_growth.old_size
    with torch.no_grad():
        expected = run.model.eval()(input_ids=torch.tensor([ids])).logits
        got = model.eval()(input_ids=torch.tensor([ids])).logits
    assert float((got - expected).abs().max()) <= 1e-3


def test_qckit_generate_on_the_run_folder_is_the_trained_model(vocab_run) -> None:
    from qckit.generate import GenerationSettings, complete, load_for_generation

    run, _, _, root, base = vocab_run
    loaded = load_for_generation(str(root / "model"))  # the adapter merged into its base
    assert len(loaded.tokenizer) == run.vocab_growth.new_size
    tied = loaded.model.config.tie_word_embeddings
    assert (loaded.model.lm_head.weight is loaded.model.get_input_embeddings().weight) == tied
    ids = torch.tensor([BatchEncoder(loaded.tokenizer)(["Mets ta tuque pis va magasiner"])[0]])
    with torch.no_grad():
        expected = run.model.eval()(input_ids=ids).logits
        got = loaded.model.eval()(input_ids=ids).logits
    assert float((got - expected).abs().max()) <= 1e-4  # merged: the LoRA products summed in another order
    assert complete(loaded.model, loaded.tokenizer, ["Mets ta tuque"], GenerationSettings(max_new_tokens=3))


def test_add_tokens_with_frozen_embeddings_is_refused_before_loading(tmp_path: Path, tiny_model_dir) -> None:
    from qckit.errors import RecipeError
    from qckit.testing import SAMPLE_SENTENCES, write_corpus
    from qckit.train import TrainSettings, run_train
    from qckit_builtins.adapters import LoraAdapter
    from qckit_builtins.chunkers import WindowChunker

    settings = TrainSettings(
        train_file=str(write_corpus(tmp_path / "t.txt", SAMPLE_SENTENCES)),
        output_dir=str(tmp_path / "out"),
        model=str(tiny_model_dir),
        add_tokens=["tuque"],
    )
    with pytest.raises(RecipeError, match="lora adapter freezes them: set train_embeddings = true") as err:
        run_train(settings, WindowChunker(max_length=32, stride=0), [LoraAdapter()])
    assert err.value.key == "train.add_tokens" and not (tmp_path / "out").exists()


def test_add_tokens_setting_is_validated() -> None:
    from qckit.errors import RecipeError
    from qckit.recipe import build_recipe

    with pytest.raises(RecipeError, match=r"train.add_tokens: expected an array of a string or a string"):
        build_recipe({"train": {"train_file": "x.txt", "add_tokens": 3}})
    with pytest.raises(RecipeError, match=r"train.add_tokens: must be a list of words"):
        build_recipe({"train": {"train_file": "x.txt", "add_tokens": ["ok", " "]}})


def test_qckit_evaluate_with_the_adapter_uses_the_runs_grown_tokenizer(vocab_run) -> None:
    import json

    from rich.console import Console

    from qckit.cli import main

    _, result, _, root, base = vocab_run
    out = Console(width=200, record=True, force_terminal=False)
    argv = ["evaluate", "--model", str(base), "--adapter", str(root / "model")]
    argv += ["--val_file", str(root / "val.txt"), "--max_length", "32", "--json"]
    assert main(argv, console=out, stderr=Console(file=open(os.devnull, "w"))) == 0  # noqa: SIM115
    numbers = json.loads(out.export_text())
    after = result.summary["eval_sets"]["val"]["after"]
    assert numbers["bits_per_byte"] == pytest.approx(after, rel=1e-5)
