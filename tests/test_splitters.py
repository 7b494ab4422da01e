"""Built-in splitters: the seed's train/validation counts, determinism, per-set seeding, hash stability."""

from __future__ import annotations

import pickle
import random
import sys
from pathlib import Path

import pytest

from qckit.components import Document
from qckit.kinds import kind
from qckit_builtins.splitters import HashSplitter, RandomSplitter, register_splitters, validation_count

BENCH = Path(__file__).resolve().parent.parent / "bench"


def val_indices(splitter, docs, set_index=0) -> list[int]:
    splitter.start(len(docs), set_index)
    return [i for i, doc in enumerate(docs) if splitter.is_val(i, doc)]


def docs_of(n: int) -> list[Document]:
    return [Document(f"Document numéro {i}, pis y est ben correct.", "c.txt", i + 1) for i in range(n)]


def test_splitters_are_registered_and_follow_the_protocol():
    registered = []
    register_splitters(registered.append)
    assert {cls.name for cls in registered} == {"random", "hash"}
    for cls in registered:
        assert kind("splitter").missing(cls) == ()


@pytest.mark.parametrize(
    ("n", "val_split", "n_val"),
    [
        (0, 0.1, 0),
        (1, 0.1, 1),
        (3, 0.1, 1),
        (10, 0.1, 1),
        (25, 0.3, 8),
        (100, 0.0, 0),
        (7, 0.5, 4),
        (1000, 0.1, 100),
    ],
)
def test_random_split_counts_match_the_seed_arithmetic(n, val_split, n_val):
    assert validation_count(n, val_split) == n_val
    assert len(val_indices(RandomSplitter(val_split=val_split), docs_of(n))) == n_val


def test_random_split_counts_match_the_seed_reimplementation(tmp_path):
    sys.path.insert(0, str(BENCH))
    try:
        import seed_prepare
    finally:
        sys.path.remove(str(BENCH))
    corpus = tmp_path / "c.txt"
    lines = [f"Le document numéro {i} parle de hockey pis de cabane à sucre." for i in range(1, 238)]
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for val_split in (0.05, 0.1, 0.33, 0.5):
        stats = seed_prepare.prepare([corpus], tmp_path / "out", val_split=val_split)
        assert len(val_indices(RandomSplitter(val_split=val_split), docs_of(stats["kept"]))) == stats["val"]


def test_random_split_is_deterministic_and_seed_and_set_dependent():
    docs = docs_of(500)
    first = val_indices(RandomSplitter(seed=42), docs)
    assert val_indices(RandomSplitter(seed=42), docs) == first
    assert val_indices(RandomSplitter(seed=43), docs) != first
    # every output set (one per input file when not merged) honours the seed, and sets differ
    assert val_indices(RandomSplitter(seed=42), docs, set_index=1) == val_indices(
        RandomSplitter(seed=42), docs, 1
    )
    assert val_indices(RandomSplitter(seed=42), docs, set_index=1) != first
    assert val_indices(RandomSplitter(seed=-42), docs) != first


def test_random_split_survives_pickling_between_start_and_is_val():
    docs = docs_of(300)
    splitter = RandomSplitter(val_split=0.2, seed=7)
    splitter.start(len(docs), 0)
    copy = pickle.loads(pickle.dumps(splitter))
    assert [copy.is_val(i, d) for i, d in enumerate(docs)] == [
        splitter.is_val(i, d) for i, d in enumerate(docs)
    ]


def test_random_split_picks_documents_uniformly():
    # 20 documents, 5 in validation, 4000 seeds: each index should land in validation ~1000 times (sd ~27).
    hits = [0] * 20
    for seed in range(4000):
        splitter = RandomSplitter(val_split=0.25, seed=seed)
        splitter.start(20, 0)
        for i in range(20):
            hits[i] += splitter.is_val(i, None)
    assert sum(hits) == 4000 * 5
    assert min(hits) > 880 and max(hits) < 1120, hits


def test_random_split_handles_millions_of_documents_quickly():
    splitter = RandomSplitter(val_split=0.1, seed=1)
    splitter.start(3_000_000, 0)
    assert sum(splitter.is_val(i, None) for i in range(0, 3_000_000, 1000)) in range(200, 400)
    assert len(pickle.dumps(splitter)) < 3_000_000 + 10_000  # one byte per document, never the texts


def test_is_val_before_start_is_an_error():
    with pytest.raises(RuntimeError, match="start"):
        RandomSplitter().is_val(0, Document("x"))


@pytest.mark.parametrize("cls", [RandomSplitter, HashSplitter])
@pytest.mark.parametrize("bad", [-0.1, 0.51, 1, 2.0, "0.1", True, None])
def test_bad_val_split_is_rejected(cls, bad):
    with pytest.raises(ValueError, match="val_split must be"):
        cls(val_split=bad)


def test_bad_seed_and_salt_are_rejected():
    with pytest.raises(ValueError, match="seed"):
        RandomSplitter(seed=1.5)
    with pytest.raises(ValueError, match="salt"):
        HashSplitter(salt=3)


def test_hash_split_keeps_every_document_on_its_side_when_the_corpus_grows():
    old = [Document(f"Vieux document {i} sur la météo de Québec.") for i in range(2000)]
    new = [Document(f"Nouveau document {i} sur le dépanneur du coin.") for i in range(2000)]
    before = {old[i].text for i in val_indices(HashSplitter(), old)}
    grown = old + new
    random.Random(0).shuffle(grown)
    after_idx = val_indices(HashSplitter(), grown, set_index=3)
    after = {grown[i].text for i in after_idx}
    assert {t for t in after if t.startswith("Vieux")} == before
    assert 0.08 < len(after) / len(grown) < 0.12


def test_hash_split_puts_case_and_space_variants_on_the_same_side_and_depends_on_salt():
    splitter = HashSplitter(val_split=0.5)
    texts = [f"Le Canadien a perdu {i} à zéro hier soir." for i in range(200)]
    sides = [splitter.is_val(0, Document(t)) for t in texts]
    assert sides == [splitter.is_val(5, Document("  " + t.upper().replace(" ", "   "))) for t in texts]
    other = HashSplitter(val_split=0.5, salt="autre")
    assert sides != [other.is_val(0, Document(t)) for t in texts]
    assert not any(HashSplitter(val_split=0.0).is_val(0, Document(t)) for t in texts)


@pytest.mark.parametrize("seed", [0, 42, -7, 2**40])
def test_random_split_batch_path_equals_is_val_at_every_offset(seed):
    splitter = RandomSplitter(val_split=0.25, seed=seed)
    splitter.start(500, 3)
    one_by_one = [splitter.is_val(i, Document("x")) for i in range(500)]
    for size in (1, 7, 64, 500):
        batched = [
            flag
            for start in range(0, 500, size)
            for flag in splitter.is_val_batch(start, min(size, 500 - start))
        ]
        assert batched == one_by_one
    with pytest.raises(IndexError):
        splitter.is_val_batch(490, 20)


def clustered_leaders(n: int, seed: int) -> list[int]:
    """Leaders of ``n`` documents: most alone, some in clusters of 2 to 5 led by their first member."""
    rng = random.Random(seed)
    order = rng.sample(range(n), n // 3)
    leaders = list(range(n))
    while order:
        group = [order.pop() for _ in range(min(rng.randint(2, 5), len(order)))]
        for member in group:
            leaders[member] = min(group)
    return leaders


@pytest.mark.parametrize(("n", "val_split"), [(1000, 0.1), (137, 0.25), (20, 0.5)])
def test_random_split_by_cluster_keeps_members_with_their_first_and_the_count(n, val_split):
    leaders = clustered_leaders(n, n)
    splitter = RandomSplitter(val_split=val_split, seed=3)
    splitter.start_clusters(n, 0, leaders)
    sides = splitter.is_val_batch(0, n)
    assert all(sides[i] == sides[lead] for i, lead in enumerate(leaders))
    assert sum(sides) == validation_count(n, val_split)
    again = RandomSplitter(val_split=val_split, seed=3)
    again.start_clusters(n, 0, leaders)
    assert again.is_val_batch(0, n) == sides  # deterministic
    other = RandomSplitter(val_split=val_split, seed=4)
    other.start_clusters(n, 0, leaders)
    assert other.is_val_batch(0, n) != sides


def test_random_split_by_cluster_leaves_earlier_set_members_and_refuses_bad_leaders():
    splitter = RandomSplitter(val_split=0.5, seed=1)
    splitter.start_clusters(4, 1, [-1, 1, 1, -1])
    sides = splitter.is_val_batch(0, 4)
    assert sides[0] is False and sides[3] is False and sides[1] == sides[2]
    with pytest.raises(ValueError, match="one leader per document"):
        splitter.start_clusters(3, 0, [0, 1])


def test_split_set_gives_members_their_leaders_side_whatever_the_splitter():
    import types

    import numpy as np

    from qckit.prepare.clusters import SetClusters
    from qckit.prepare.output import MemorySink, SpoolBatch, split_set

    docs = [Document(f"Document {i} pis toute", "c.txt", i + 1) for i in range(200)]
    leaders = clustered_leaders(200, 5)
    spec = types.SimpleNamespace(instance=HashSplitter(val_split=0.3), name="hash", owner="qckit")
    batches = [SpoolBatch(len(docs[i : i + 32]), None, 0, docs[i : i + 32]) for i in range(0, 200, 32)]
    sink = MemorySink()
    clusters = SetClusters(0, np.array(leaders), {}, {})
    counts = split_set(iter(batches), 200, 0, spec, sink, clusters)
    val = {d.line - 1 for d in sink.val}
    assert all((i in val) == (lead in val) for i, lead in enumerate(leaders))
    assert counts["clustered"] == sum(i != lead for i, lead in enumerate(leaders)) > 0
    # the hash splitter alone would have split some clusters: the pipeline's following is what holds them
    alone = {i for i, d in enumerate(docs) if spec.instance.is_val(i, d)}
    assert any((i in alone) != (lead in alone) for i, lead in enumerate(leaders))
