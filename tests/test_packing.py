from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from transformers import default_data_collator

from qckit.components import IGNORE_INDEX, PackingStats
from qckit.errors import InputError
from qckit.progress import RecordingObserver
from qckit.testing import SAMPLE_SENTENCES, write_corpus
from qckit.train.packing import pack_file, pack_texts
from qckit_builtins.chunkers import WindowChunker

DOCS = list(SAMPLE_SENTENCES)


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "train.txt"
    lines = []
    for i, doc in enumerate(DOCS):
        lines.append(doc)
        if i % 7 == 0:
            lines.append("   ")  # blank lines are skipped
    write_corpus(path, lines)
    return path


def expected_windows(tokenizer, chunker, docs):
    """The chunker's windows of ``docs``, each document after a BOS that is context, never a target."""
    bos = tokenizer.bos_token_id
    ids = [[bos, *doc] for doc in tokenizer(docs, add_special_tokens=False)["input_ids"]]
    stats = PackingStats()
    windows = []
    for window_ids, labels in chunker.windows(ids, tokenizer.eos_token_id, stats):
        starts = [t == bos and label != IGNORE_INDEX for t, label in zip(window_ids, labels, strict=True)]
        stats.tokens_kept -= sum(starts)
        windows.append(
            (window_ids, [IGNORE_INDEX if s else label for s, label in zip(starts, labels, strict=True)])
        )
    return windows, stats


def test_pack_file_matches_the_chunker_and_counts_the_corpus(corpus, tiny_tokenizer):
    chunker = WindowChunker(max_length=64, stride=16, min_length=4)
    data = pack_file(corpus, tiny_tokenizer, chunker, cache_dir=None, batch_size=7)
    windows, stats = expected_windows(tiny_tokenizer, chunker, DOCS)
    assert data.stats == stats and data.documents == len(DOCS)
    assert len(data) == len(windows) > 3
    for i, (ids, labels) in enumerate(windows):
        got_ids, got_labels = data.window(i)
        assert got_ids.tolist() == ids and got_labels.tolist() == labels
    n_tokens = sum(len(x) for x in tiny_tokenizer(DOCS, add_special_tokens=False)["input_ids"])
    assert stats.tokens_total == n_tokens + 2 * len(DOCS)  # a BOS and an EOS per document
    assert data.num_bytes == sum(len(d.encode()) for d in DOCS)
    assert data.num_words == sum(len(d.split()) for d in DOCS)
    assert data.fertility == pytest.approx(n_tokens / data.num_words)
    assert data.from_cache is False


def test_items_collate_and_pad_the_short_final_window(tiny_tokenizer):
    chunker = WindowChunker(max_length=32, stride=8, min_length=1)
    data = pack_texts(DOCS, tiny_tokenizer, chunker)
    last_ids, last_labels = data.window(len(data) - 1)
    assert len(last_ids) < 32  # the corpus does not end on a window boundary
    batch = default_data_collator([data[0], data[len(data) - 1]])
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (2, 32)
    assert batch["input_ids"].dtype == torch.long
    n = len(last_ids)
    assert batch["attention_mask"][1].tolist() == [1] * n + [0] * (32 - n)
    assert (
        batch["labels"][1, n:].eq(-100).all()
        and batch["input_ids"][1, n:].eq(tiny_tokenizer.pad_token_id).all()
    )
    assert batch["labels"][1, :n].tolist() == last_labels.tolist()
    # the window's first 8 positions are overlap context; a tiny model computes a finite loss on the batch
    assert batch["labels"][1, :8].eq(-100).all()


def test_batch_size_and_input_form_do_not_change_the_windows(corpus, tiny_tokenizer):
    chunker = WindowChunker(max_length=48, stride=5, min_length=2)
    a = pack_file(corpus, tiny_tokenizer, chunker, cache_dir=None, batch_size=1)
    b = pack_file(corpus, tiny_tokenizer, chunker, cache_dir=None, batch_size=1000)
    c = pack_texts(DOCS, tiny_tokenizer, chunker, batch_size=5)
    for other in (b, c):
        assert np.array_equal(a.input_ids, other.input_ids) and np.array_equal(a.labels, other.labels)
        assert np.array_equal(a.offsets, other.offsets) and a.stats == other.stats


def test_cache_hits_on_same_content_and_misses_on_changes(tmp_path, corpus, tiny_tokenizer):
    cache = tmp_path / "cache"
    chunker = WindowChunker(max_length=64, stride=16, min_length=4)
    first = pack_file(corpus, tiny_tokenizer, chunker, cache_dir=cache)
    assert not first.from_cache and first.cache_path.parent == cache
    assert (first.cache_path / "meta.json").is_file()
    assert [p.name for p in cache.iterdir()] == [first.cache_path.name]  # no temporary debris left

    os.utime(corpus, (1, 1))  # a new mtime alone changes nothing
    again = pack_file(
        corpus, tiny_tokenizer, WindowChunker(max_length=64, stride=16, min_length=4), cache_dir=cache
    )
    assert again.from_cache and again.cache_path == first.cache_path
    assert np.array_equal(again.input_ids, first.input_ids) and np.array_equal(again.labels, first.labels)
    assert (
        again.stats == first.stats
        and again.fertility == first.fertility
        and again.num_bytes == first.num_bytes
    )
    assert all(torch.equal(again[3][k], first[3][k]) for k in ("input_ids", "labels", "attention_mask"))

    other_chunker = pack_file(
        corpus, tiny_tokenizer, WindowChunker(max_length=64, stride=8, min_length=4), cache_dir=cache
    )
    assert not other_chunker.from_cache

    # same size, same mtime, different content: must miss
    text = corpus.read_text(encoding="utf-8")
    stat = corpus.stat()
    corpus.write_text(text.replace("chalet", "cHalet"), encoding="utf-8")
    os.utime(corpus, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert corpus.stat().st_size == stat.st_size
    edited = pack_file(corpus, tiny_tokenizer, chunker, cache_dir=cache)
    assert not edited.from_cache and not np.array_equal(edited.input_ids, first.input_ids)
    assert len(list(cache.iterdir())) == 3


def test_cache_entry_without_metadata_is_rebuilt(tmp_path, corpus, tiny_tokenizer):
    cache = tmp_path / "cache"
    chunker = WindowChunker(max_length=64, stride=16, min_length=4)
    first = pack_file(corpus, tiny_tokenizer, chunker, cache_dir=cache)
    (first.cache_path / "meta.json").write_text("{not json", encoding="utf-8")
    observer = RecordingObserver()
    rebuilt = pack_file(corpus, tiny_tokenizer, chunker, cache_dir=cache, observer=observer)
    assert not rebuilt.from_cache and np.array_equal(rebuilt.input_ids, first.input_ids)
    assert any(kind == "warn" for kind, _, _ in observer.events)
    assert pack_file(corpus, tiny_tokenizer, chunker, cache_dir=cache).from_cache


def test_progress_is_reported_per_batch(corpus, tiny_tokenizer):
    observer = RecordingObserver()
    pack_file(
        corpus,
        tiny_tokenizer,
        WindowChunker(max_length=64, stride=0),
        cache_dir=None,
        batch_size=10,
        observer=observer,
    )
    kinds = [(kind, task) for kind, task, _ in observer.events]
    assert kinds[0] == ("start", "tokenize") and kinds[-1] == ("finish", "tokenize")
    advances = [data for kind, _, data in observer.events if kind == "advance"]
    assert len(advances) == 4  # 40 documents in batches of 10
    assert sum(amount for amount, _ in advances) == sum(len(d.encode()) for d in DOCS)
    assert advances[-1][1]["documents"] == 40


def test_decode_sample_marks_the_overlap_context(tiny_tokenizer):
    data = pack_texts(DOCS, tiny_tokenizer, WindowChunker(max_length=32, stride=8, min_length=1))
    first, second = data.decode_sample(0, tiny_tokenizer), data.decode_sample(1, tiny_tokenizer)
    assert "⟦context" not in first and first.startswith("<s>" + DOCS[0][:10])
    assert second.startswith("⟦context: ") and "⟧" in second
    ids, _ = data.window(1)
    assert second.replace("⟦context: ", "").replace("⟧", "") == tiny_tokenizer.decode(ids.tolist())
    assert "</s>" in data.decode_sample(0, tiny_tokenizer) + second + data.decode_sample(2, tiny_tokenizer)


def test_errors_name_the_file_and_line(tmp_path, tiny_tokenizer):
    chunker = WindowChunker(max_length=64, stride=0)
    with pytest.raises(InputError, match="missing.txt"):
        pack_file(tmp_path / "missing.txt", tiny_tokenizer, chunker, cache_dir=None)
    blank = write_corpus(tmp_path / "blank.txt", ["", "  "])
    with pytest.raises(InputError, match="no documents"):
        pack_file(blank, tiny_tokenizer, chunker, cache_dir=None)
    short = write_corpus(tmp_path / "short.txt", ["Salut."])
    with pytest.raises(InputError, match="no training windows"):
        pack_file(short, tiny_tokenizer, chunker, cache_dir=None)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"bonjour\n" + b"caf\xe9\n")
    with pytest.raises(InputError, match=r"bad.txt:2: not valid UTF-8"):
        pack_file(bad, tiny_tokenizer, chunker, cache_dir=None)


def test_lone_carriage_return_does_not_split_a_document(tmp_path, tiny_tokenizer):
    path = tmp_path / "cr.txt"
    path.write_bytes(b"Il fait frette\rce matin\r\nOn s'en va au chalet\n")
    data = pack_file(
        path, tiny_tokenizer, WindowChunker(max_length=64, stride=0, min_length=1), cache_dir=None
    )
    assert data.documents == 2


def test_special_token_strings_in_documents_stay_text(tiny_tokenizer):
    # "</s>" is the EOS of this tokenizer and an HTML closing tag in web text: it must not end the document
    doc = "Prix: <s>20 $</s> 15 $ seulement"
    data = pack_texts([doc, doc], tiny_tokenizer, WindowChunker(max_length=128, stride=0, min_length=1))
    ids, _ = data.window(0)
    assert ids.tolist().count(tiny_tokenizer.eos_token_id) == 2  # the two document ends, nothing else
    assert ids.tolist().count(tiny_tokenizer.bos_token_id) == 2  # the two document starts, nothing else
    assert tiny_tokenizer.decode(ids.tolist()) == f"<s>{doc}</s><s>{doc}</s>"
    plain = tiny_tokenizer(DOCS, add_special_tokens=False)["input_ids"]
    assert pack_texts(
        DOCS, tiny_tokenizer, WindowChunker(max_length=4096, stride=0, min_length=1)
    ).input_ids.tolist() == [
        tok for ids in plain for tok in [tiny_tokenizer.bos_token_id, *ids, tiny_tokenizer.eos_token_id]
    ]


@pytest.mark.parametrize("attention", ["window", "document"])
def test_each_document_starts_with_the_evaluation_prefix_token_as_context(tiny_tokenizer, attention):
    from qckit.evaluate.loglik import prefix_token_id

    bos = tiny_tokenizer.bos_token_id
    assert prefix_token_id(tiny_tokenizer) == bos  # the evaluation scores a document after its BOS
    chunker = WindowChunker(max_length=4096, stride=0, min_length=1, attention=attention)
    data = pack_texts(DOCS[:5], tiny_tokenizer, chunker)
    ids, labels = (a.tolist() for a in data.window(0))
    starts = [0] + [i + 1 for i, t in enumerate(ids[:-1]) if t == tiny_tokenizer.eos_token_id]
    assert len(starts) == 5 and all(ids[i] == bos for i in starts) and ids.count(bos) == 5
    assert all(labels[i] == IGNORE_INDEX for i in starts)  # context, never a target
    assert all(labels[i + 1] == ids[i + 1] for i in starts)  # the first word is predicted from the BOS
    assert data.stats.tokens_kept == int(data.trained.sum()) == sum(label != IGNORE_INDEX for label in labels)


def test_without_a_separate_bos_documents_are_eos_separated(tiny_tokenizer, tmp_path):
    import copy

    from qckit.train.packing import cache_key, document_start

    path = write_corpus(tmp_path / "train.txt", DOCS[:5])
    chunker = WindowChunker(max_length=4096, stride=0, min_length=1)
    no_bos = copy.deepcopy(tiny_tokenizer)
    no_bos.bos_token = None
    assert document_start(tiny_tokenizer) == tiny_tokenizer.bos_token_id and document_start(no_bos) is None
    shared = copy.deepcopy(tiny_tokenizer)
    shared.bos_token = shared.eos_token  # GPT-2's rule: BOS = EOS, which already separates documents
    assert document_start(shared) is None
    plain = tiny_tokenizer(DOCS[:5], add_special_tokens=False)["input_ids"]
    assert pack_texts(DOCS[:5], no_bos, chunker).input_ids.tolist() == [
        tok for ids in plain for tok in [*ids, tiny_tokenizer.eos_token_id]
    ]
    assert cache_key(path, tiny_tokenizer, chunker) != cache_key(path, no_bos, chunker)
