from __future__ import annotations

import pickle
import random
from collections import Counter

import pytest

from qckit.components import PackingStats
from qckit.kinds import kind
from qckit_builtins.chunkers import WindowChunker

EOS = 1


def random_docs(n_docs: int, seed: int, max_len: int = 40) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(10, 1000) for _ in range(rng.randrange(0, max_len))] for _ in range(n_docs)]


def stream_of(docs: list[list[int]]) -> list[int]:
    out: list[int] = []
    for doc in docs:
        out += doc + [EOS]
    return out


def run(chunker: WindowChunker, docs) -> tuple[list[tuple[list[int], list[int]]], PackingStats]:
    stats = PackingStats()
    return list(chunker.windows(iter(docs), EOS, stats)), stats


def trained_positions(windows, step: int) -> Counter:
    """Stream positions that are a loss target after the causal-LM shift (position t predicts t+1)."""
    counts: Counter = Counter()
    for k, (_, labels) in enumerate(windows):
        for t in range(1, len(labels)):  # labels[0] is never predicted: the shift drops it
            if labels[t] != -100:
                counts[k * step + t] += 1
    return counts


def test_is_a_chunker_and_picklable():
    chunker = WindowChunker(max_length=16, stride=4, min_length=2)
    assert kind("chunker").missing(type(chunker)) == ()
    clone = pickle.loads(pickle.dumps(chunker))
    assert run(clone, random_docs(20, 0))[0] == run(chunker, random_docs(20, 0))[0]


def test_seed_window_positions():
    # The seed's documented layout: stride 512 of 1024 gives [0:1024], [512:1536], [1024:2048] …
    stream = list(range(100, 100 + 3000))
    windows, _ = run(WindowChunker(max_length=1024, stride=512, min_length=1), [stream[:-1]])
    # stream[:-1] + EOS: the last token becomes EOS
    full = stream[:-1] + [EOS]
    assert [w[0] for w in windows[:3]] == [full[0:1024], full[512:1536], full[1024:2048]]
    windows0, _ = run(WindowChunker(max_length=1024, stride=0, min_length=1), [stream[:-1]])
    assert [w[0] for w in windows0[:2]] == [full[0:1024], full[1024:2048]]


@pytest.mark.parametrize("attention", ["window", "document"])
@pytest.mark.parametrize("max_length,stride", [(16, 0), (16, 1), (16, 5), (16, 15), (7, 3), (2, 1)])
def test_every_token_trained_exactly_once_after_shift(max_length, stride, attention):
    docs = random_docs(60, seed=max_length * 31 + stride)
    stream = stream_of(docs)
    chunker = WindowChunker(max_length=max_length, stride=stride, min_length=1, attention=attention)
    windows, stats = run(chunker, docs)
    step = max_length - stride
    # the windows are slices of the one stream, EOS after every document
    for k, (ids, labels) in enumerate(windows):
        assert ids == stream[k * step : k * step + len(ids)]
        assert all(lab in (-100, tok) for lab, tok in zip(labels, ids, strict=True))
    counts = trained_positions(windows, step)
    assert max(counts.values()) == 1  # never trained twice (the seed trained the overlap twice)
    # document isolation: a document's first token (the one after an EOS) is never a target
    starts = {p for p in range(1, len(stream)) if stream[p - 1] == EOS} if attention == "document" else set()
    if stride > 0:
        # min_length=1 keeps the tail: every token but the stream's first is trained exactly once
        assert sorted(counts) == [p for p in range(1, len(stream)) if p not in starts]
    else:
        # without overlap, the first token of each window has no context in its window
        assert sorted(counts) == [p for p in range(len(stream)) if p % max_length != 0 and p not in starts]
    assert stats.tokens_kept == sum(counts.values())
    assert stats.tokens_total == len(stream)
    assert stats.documents == len(docs)
    assert stats.windows == len(windows)
    assert all(len(ids) == max_length for ids, _ in windows[:-1])


def test_remainder_carries_across_documents_and_is_streamed():
    chunker = WindowChunker(max_length=8, stride=2, min_length=1)
    docs = random_docs(200, 3)
    pulled = 0

    def lazy():
        nonlocal pulled
        for doc in docs:
            pulled += 1
            yield doc

    stats = PackingStats()
    gen = chunker.windows(lazy(), EOS, stats)
    first = next(gen)
    assert pulled < 10  # a generator: it does not read the whole input before yielding
    rest = list(gen)
    joined = [first] + rest
    # concatenating the new part of every window rebuilds the whole stream: nothing lost between docs
    rebuilt = joined[0][0] + [tok for ids, _ in joined[1:] for tok in ids[2:]]
    assert rebuilt == stream_of(docs)


def test_short_final_window_dropped_or_kept_with_its_context():
    docs = [list(range(10, 30))]  # 20 tokens + EOS = 21
    # max 8, stride 3, step 5: windows at 0, 5, 10, 15 -> [15:21] has new tokens 18..20 = 3 new tokens
    windows, stats = run(WindowChunker(max_length=8, stride=3, min_length=4), docs)
    assert len(windows) == 3 and stats.windows_dropped_short == 1
    assert stats.tokens_kept == 7 + 5 + 5  # the dropped tail (3 tokens) is not kept
    windows, stats = run(WindowChunker(max_length=8, stride=3, min_length=3), docs)
    assert len(windows) == 4 and stats.windows_dropped_short == 0
    ids, labels = windows[-1]
    stream = stream_of(docs)
    assert ids == stream[15:21] and len(ids) < 8  # the kept tail keeps its 3 tokens of overlap context
    assert labels == [-100, -100, -100] + stream[18:21]


def test_a_stream_shorter_than_one_window():
    windows, stats = run(WindowChunker(max_length=64, stride=8, min_length=4), [[5, 6, 7]])
    assert windows == [([5, 6, 7, EOS], [-100, 6, 7, EOS])]
    windows, stats = run(WindowChunker(max_length=64, stride=8, min_length=4), [[5, 6]])
    assert windows == [] and stats.windows_dropped_short == 1 and stats.tokens_total == 3


def test_exact_multiple_has_no_empty_tail():
    windows, stats = run(WindowChunker(max_length=4, stride=0, min_length=1), [[5, 6, 7], [8, 9, 10]])
    assert [w[0] for w in windows] == [[5, 6, 7, EOS], [8, 9, 10, EOS]]
    assert stats.windows_dropped_short == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_length": 1},
        {"max_length": 8, "stride": 8},
        {"stride": -1},
        {"min_length": 0},
        {"max_length": 8, "stride": 0, "min_length": 9},
        {"max_length": 8.0},
    ],
)
def test_invalid_settings(kwargs):
    with pytest.raises(ValueError):
        WindowChunker(**kwargs)


def test_cache_key_changes_with_every_setting():
    keys = {
        WindowChunker().cache_key(),
        WindowChunker(max_length=512).cache_key(),
        WindowChunker(stride=0).cache_key(),
        WindowChunker(min_length=1).cache_key(),
    }
    assert len(keys) == 4
    assert WindowChunker().cache_key() == WindowChunker(1024, 128, 32).cache_key()
    assert "window" in WindowChunker().cache_key()


def test_registered_through_the_entry_point():
    from qckit.host import PluginHost

    host = PluginHost.from_entry_points()
    assert host.get("chunker", "window").cls is WindowChunker
