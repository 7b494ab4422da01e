"""Exact and near-duplicate removal (stateful filters: fingerprints in workers, decisions in order)."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest

from qckit.components import Document
from qckit_builtins.filters.dedup import ExactDedup, MinHashDedup, dedup_key, dedup_keys


def run(flt, texts: list[str], batch: int = 1000) -> list[str | None]:
    """What the pipeline does: fingerprints per document, then decisions batch by batch, in order."""
    fingerprints = [flt.fingerprint(Document(t)) for t in texts]
    reasons: list[str | None] = []
    for start in range(0, len(fingerprints), batch):
        reasons.extend(flt.drop_reasons(fingerprints[start : start + batch]))
    return reasons


def test_key_ignores_case_punctuation_spacing_and_apostrophe_style():
    assert dedup_key("Bonjour  le monde!") == dedup_key("bonjour le monde") == "bonjour le monde"
    assert dedup_key("C'est l'été.") == dedup_key("C’EST L’ÉTÉ") == "c est l été"
    assert dedup_key("«\u00a0Allô\u00a0» — toi…") == "allô toi"
    assert dedup_key("ﬁn ½") == "fin 1⁄2"  # NFKC
    assert dedup_key("Straße") == dedup_key("STRASSE")  # case folding


def test_exact_dedup_collapses_trivial_variants_but_not_different_texts():
    texts = [
        "Bonjour  le monde!",
        "bonjour le monde",
        "Bonjour le monde, toi",
        "BONJOUR... le   MONDE",
        "Allô la gang",
        "Bonjour le monde toi",
    ]
    assert run(ExactDedup(), texts) == [None, "duplicate", None, "duplicate", None, "duplicate"]


def test_exact_dedup_without_key_normalization_compares_raw_text():
    texts = ["Bonjour  le monde!", "bonjour le monde", "Bonjour  le monde!"]
    assert run(ExactDedup(normalize_key=False), texts) == [None, None, "duplicate"]


def test_fingerprint_is_a_64_bit_int_and_stable():
    flt = ExactDedup()
    fp = flt.fingerprint(Document("Bonjour le monde"))
    assert isinstance(fp, int) and 0 <= fp < 2**64
    assert fp == ExactDedup().fingerprint(Document("bonjour, le monde!"))


@pytest.mark.parametrize("batch", [1, 3, 7, 1000])
def test_exact_dedup_across_the_merge_into_the_sorted_array(batch):
    rng = random.Random(11)
    uniques = [f"document numéro {i}" for i in range(40)]
    texts = (
        uniques + [rng.choice(uniques).upper() + "!" for _ in range(60)] + [f"nouveau {i}" for i in range(10)]
    )
    flt = ExactDedup(merge_threshold=4)
    reasons = run(flt, texts, batch=batch)
    assert reasons == [None] * 40 + ["duplicate"] * 60 + [None] * 10
    # Most hashes now live in the sorted uint64 array; the set holds fewer than merge_threshold.
    index = flt._index
    assert index.sorted.dtype == np.uint64 and len(index.sorted) >= 48
    assert len(index.recent) < 4 and flt.n_unique == 50
    assert np.all(index.sorted[1:] > index.sorted[:-1])


def test_duplicates_within_one_batch_keep_the_first():
    flt = ExactDedup()
    fps = [flt.fingerprint(Document(t)) for t in ["a b c", "x y z", "A B C!", "a b c"]]
    assert flt.drop_reasons(fps) == [None, None, "duplicate", "duplicate"]
    assert flt.drop_reasons([]) == []
    flt.reset()
    assert flt.drop_reasons(fps[:1]) == [None]


def test_exact_dedup_rejects_bad_threshold_and_survives_pickle():
    with pytest.raises(ValueError, match="merge_threshold must be at least 1"):
        ExactDedup(merge_threshold=0)
    flt = ExactDedup(merge_threshold=2)
    run(flt, ["un", "deux", "trois"])
    clone = pickle.loads(pickle.dumps(flt))
    assert run(clone, ["Deux!", "quatre"]) == ["duplicate", None]
    assert run(flt, ["Deux!", "quatre"]) == ["duplicate", None]


WORDS = [
    a + b for a in ("ma", "to", "pi", "lu", "ré", "son") for b in ("che", "ton", "ra", "lin", "vé", "don")
]


def forty_words(seed: int) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(WORDS) for _ in range(40)]


def test_minhash_finds_a_one_word_edit_and_not_an_unrelated_text():
    words = forty_words(1)
    edited = list(words)
    edited[-1] = "dépanneur"  # 35 of 37 five-word shingles shared: Jaccard ≈ 0.95
    texts = [" ".join(words), " ".join(edited), " ".join(forty_words(2))]
    assert run(MinHashDedup(), texts) == [None, "near_duplicate", None]


def test_minhash_threshold_decides_for_a_middle_edit():
    words = forty_words(1)
    edited = list(words)
    edited[20] = "dépanneur"  # changes 5 of 36 shingles: Jaccard = 31/41 ≈ 0.76
    texts = [" ".join(words), " ".join(edited)]
    assert run(MinHashDedup(threshold=0.5), texts) == [None, "near_duplicate"]
    assert run(MinHashDedup(threshold=0.9), texts) == [None, None]


def test_minhash_across_the_merge_into_the_sorted_array():
    originals = [" ".join(forty_words(seed)) for seed in range(10, 30)]
    edited = []
    for text in originals:
        words = text.split()
        words[-1] = "fin"
        edited.append(" ".join(words))
    flt = MinHashDedup(merge_threshold=20)  # 9 band hashes per kept document: merges every 3 documents
    reasons = run(flt, originals + edited, batch=4)
    assert reasons == [None] * 20 + ["near_duplicate"] * 20
    assert len(flt._index.sorted) >= 9 * 18


def test_minhash_short_and_empty_documents():
    flt = MinHashDedup()
    assert flt.shingles("Allô toi") == [b"all\xc3\xb4 toi"]
    assert flt.fingerprint(Document("!!!")) is None
    assert run(flt, ["Allô toi", "ALLÔ, toi!", "", "", "Bonjour là"]) == [
        None,
        "near_duplicate",
        None,
        None,
        None,
    ]


def test_minhash_fingerprint_is_compact_and_pickle_safe():
    flt = MinHashDedup(num_perm=64)
    fp = flt.fingerprint(Document(" ".join(forty_words(3))))
    # One 64-bit hash per LSH band: 5 bands of 11 rows for threshold 0.8 and 64 permutations.
    assert (flt.bands, flt.rows) == (5, 11)
    assert isinstance(fp, np.ndarray) and fp.dtype == np.uint64 and fp.shape == (5,)
    clone = pickle.loads(pickle.dumps(flt))
    assert np.array_equal(clone.fingerprint(Document(" ".join(forty_words(3)))), fp)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ngram": 0}, "ngram must be at least 1"),
        ({"threshold": 1.0}, "threshold must be between 0 and 1"),
        ({"threshold": 0.0}, "threshold must be between 0 and 1"),
        ({"num_perm": 1}, "num_perm must be at least 2"),
    ],
)
def test_minhash_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MinHashDedup(**kwargs)


def test_minhash_decisions_match_datasketch_lsh():
    from datasketch import LeanMinHash, MinHashLSH

    rng = random.Random(5)
    texts, n_variants = [], 0
    for seed in range(30):
        words = forty_words(100 + seed)
        texts.append(" ".join(words))
        for _ in range(rng.randint(0, 2)):  # a few variants of each, with 1 to 4 words changed
            variant = list(words)
            for _ in range(rng.randint(1, 4)):
                variant[rng.randrange(40)] = rng.choice(WORDS)
            texts.append(" ".join(variant))
            n_variants += 1
    rng.shuffle(texts)
    flt = MinHashDedup(threshold=0.7)
    ours = run(flt, texts, batch=8)
    lsh = MinHashLSH(threshold=0.7, num_perm=128)
    theirs = []
    for i, text in enumerate(texts):
        sketch = LeanMinHash(seed=1, hashvalues=flt.signature(text), scheme="affine32")
        if lsh.query(sketch):
            theirs.append("near_duplicate")
        else:
            lsh.insert(i, sketch)
            theirs.append(None)
    assert ours == theirs
    # Some variants are above the threshold, some below: both kinds of decision are compared.
    assert 3 <= ours.count("near_duplicate") < n_variants


@pytest.mark.parametrize("normalize_key", [True, False])
def test_fingerprint_batch_gives_what_one_by_one_gives(normalize_key, varied_batches):
    flt = ExactDedup(normalize_key=normalize_key)
    for batch in varied_batches:
        docs = [Document(t) for t in batch]
        assert flt.fingerprint_batch(docs) == [flt.fingerprint(d) for d in docs]


def test_dedup_keys_of_a_batch(varied_texts):
    texts = list(varied_texts)
    assert dedup_keys(texts) == [dedup_key(t).encode("utf-8", "surrogatepass") for t in texts]
    # keys that only a character-by-character table would get wrong: NFKC compositions, ß, ½
    tricky = ["e\u0301t\u00e9", "Stra\u00dfe", "STRASSE", "\u00bd pomme", "1\u20442 pomme", "x\u00a0\u0301"]
    assert dedup_keys(tricky) == [dedup_key(t).encode() for t in tricky]
    assert dedup_key("e\u0301t\u00e9") == "été"


# -- shingling = "short": near-duplicates of one-line documents --------------------------------------

SENTENCES = [
    "C'est l'été pis on s'en va au chalet avec ma blonde en fin de semaine",
    "Mon chum a magasiné une tuque neuve au dépanneur du coin hier soir",
    "Il fait frette en maudit à matin, mets ton manteau avant de sortir dehors",
    "La cabane à sucre ouvre ses portes le premier samedi du mois d'avril",
    "J'ai jasé avec la voisine pendant une heure à propos de la neige qui tombe",
    "On a mangé de la poutine au casse-croûte en revenant de la partie de hockey",
]


def variants(text: str) -> dict[str, str]:
    """The variant kinds of bench/bench_neardup.py, one each."""
    import unicodedata

    words = text.split()
    stripped = "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c))
    replaced = [*words[:5], "tabarnouche", *words[6:]]
    return {
        "accents": stripped,
        "apostrophe": text.replace("'", "ʼ"),
        "replace_1": " ".join(replaced),
        "drop_1": " ".join(words[:4] + words[5:]),
        "add_1": " ".join([*words[:3], "ben", *words[3:]]),
        "emoji": text + " 😂🎉",
        "case_punct": text.upper() + "!!!",
    }


def short() -> MinHashDedup:
    return MinHashDedup(shingling="short")


@pytest.mark.parametrize("kind", list(variants(SENTENCES[0])))
def test_short_shingling_catches_every_variant_kind_of_short_sentences(kind):
    for text in SENTENCES:
        assert run(short(), [text, variants(text)[kind]]) == [None, "near_duplicate"], text
    # the former setting misses most of them (the reason for shingling = "short")
    missed = sum(run(MinHashDedup(), [t, variants(t)[kind]])[1] is None for t in SENTENCES)
    assert kind in ("emoji", "case_punct") or missed >= 3


def test_short_shingling_finds_no_near_duplicate_among_unrelated_short_sentences():
    rng = random.Random(3)
    vocabulary = sorted({w.strip(",.") for t in SENTENCES for w in t.lower().split()})
    texts = [" ".join(rng.choice(vocabulary) for _ in range(rng.randint(8, 20))) for _ in range(400)]
    texts = list(dict.fromkeys(texts))
    # the same small vocabulary everywhere: many band collisions, all refused by the verification
    flt = short()
    assert run(flt, texts, batch=37) == [None] * len(texts)
    # band collisions happened and the verification refused them
    unverified = MinHashDedup(shingling="short")
    unverified._clusters.min_matches = 0
    assert run(unverified, texts).count("near_duplicate") > 0


def naive_clusters(flt: MinHashDedup, fingerprints: list) -> list[int | None]:
    """The rule, one document at a time: the earliest of the first kept documents of its bands whose b-bit
    signature agrees on enough values (its position in the stream), or None (then it is kept)."""
    first_of_band: dict[int, int] = {}
    kept: dict[int, np.ndarray] = {}
    out: list[int | None] = []
    width = 8 * flt.bands
    for serial, fp in enumerate(fingerprints):
        if fp is None:
            out.append(None)
            continue
        row = np.frombuffer(fp, dtype=np.uint8)
        bands, sketch = row[:width].view("<u8").tolist(), row[width:]
        candidates = sorted({first_of_band[b] for b in bands if b in first_of_band})
        match = next(
            (c for c in candidates if np.count_nonzero(kept[c] == sketch) >= flt._clusters.min_matches), None
        )
        out.append(match)
        if match is None:
            kept[serial] = sketch
            for b in bands:
                first_of_band.setdefault(b, serial)
    return out


def tagged(texts: list[str], batches: list[int]) -> list[int | None]:
    """The clusters a tagging filter gives ``texts`` decided in batches of the given sizes."""
    flt = MinHashDedup(shingling="short", duplicates="tag")
    fps = flt.fingerprint_batch([Document(t) for t in texts])
    out: list[int | None] = []
    start = 0
    for size in batches:
        out += flt.decide_clusters(fps[start : start + size], list(range(start, start + size)))[1]
        start += size
    assert start == len(texts)
    return out


@pytest.fixture(params=["accelerator", "numpy"])
def decide_path(request, monkeypatch):
    """Decisions by the ``_minhash`` accelerator, then by the numpy code (the same arrays, the same rule)."""
    from qckit_builtins import accelerated

    if request.param == "numpy":
        monkeypatch.setattr(accelerated, "minhash", None)
    elif accelerated.minhash is None:
        pytest.skip("the _minhash accelerator is not built (tests/test_accelerated.py says why)")
    return request.param


def test_short_decisions_follow_the_first_kept_document_whatever_the_batches(decide_path):
    rng = random.Random(8)
    texts = []
    for t in SENTENCES * 3:
        texts.append(t)
        texts += rng.sample(list(variants(t).values()), 2)
    rng.shuffle(texts)
    flt = short()
    expected = [
        None if c is None else "near_duplicate"
        for c in naive_clusters(flt, flt.fingerprint_batch([Document(t) for t in texts]))
    ]
    assert expected.count(None) == len(SENTENCES)  # each sentence and its variants: one kept
    for batch in (1, 5, 1000):
        assert run(short(), texts, batch=batch) == expected
    assert run(short(), texts, batch=4) == expected


def test_band_table_grows_and_finds_what_either_path_added(monkeypatch):
    from qckit_builtins import accelerated
    from qckit_builtins.filters.dedup import _BandTable

    rng = np.random.default_rng(4)
    keys = np.unique(rng.integers(1, 2**64, size=6000, dtype=np.uint64, endpoint=False))
    keys[:3] = [1, 2, 2**63]  # small and large values next to each other
    keys = np.unique(keys)
    rng.shuffle(keys)
    docs = np.arange(len(keys), dtype=np.int64)
    table = _BandTable()
    module = accelerated.minhash
    for turn, part in enumerate(np.array_split(np.arange(len(keys)), 12)):
        monkeypatch.setattr(accelerated, "minhash", module if turn % 2 else None)  # both fill one table
        table.add(keys[part], docs[part])
        assert len(table) == part[-1] + 1 <= table.MAX_LOAD * len(table.keys)
    assert len(table.keys) >= 8192  # it grew from 1024 (the moves done by both paths)
    assert np.array_equal(table.find(keys), docs)
    absent = np.setdiff1d(rng.integers(1, 2**64, size=2000, dtype=np.uint64, endpoint=False), keys)
    assert (table.find(absent.reshape(40, -1)) == -1).all()
    filled = np.flatnonzero(table.keys)
    assert sorted(table.keys[filled].tolist()) == sorted(keys.tolist())
    for turn in (0, 1):  # a key given twice in one call, or again later, is stored once by either path
        monkeypatch.setattr(accelerated, "minhash", module if turn else None)
        twice = _BandTable()
        twice.add(np.array([5, 5, 7], dtype=np.uint64), np.array([0, 1, 2]))
        twice.add(np.array([7], dtype=np.uint64), np.array([3]))
        assert len(twice) == 2 and np.count_nonzero(twice.keys) == 2
        assert twice.find(np.array([5, 7], dtype=np.uint64)).tolist() == [0, 2]


@pytest.mark.parametrize("stream", ["templated", "drifting"])
def test_a_document_is_compared_with_the_first_kept_document_of_each_band_only(decide_path, stream):
    # Lines of one template (spam with a number: half their word 1- and 2-grams shared) and chains of edits
    # (each variant one more word away) agree with many earlier lines: a line may agree with a kept line of
    # its batch that owns none of its bands (their common bands belong to an earlier batch's line), and must
    # not be joined to it. Batches of random sizes, decided by the accelerator and by numpy.
    rng = random.Random(5)
    if stream == "templated":
        texts = [f"$$$ GAGNEZ {rng.randint(1, 5000)}$ MAINTENANT $$$ CLIQUEZ ICI $$$" for _ in range(400)]
    else:
        vocabulary = sorted({w for t in SENTENCES for w in t.split()})
        texts = []
        for sentence in SENTENCES * 4:
            words = sentence.split()
            for position in rng.sample(range(len(words)), 6):
                words[position] = rng.choice(vocabulary)
                texts.append(" ".join(words))
    flt = short()
    expected = naive_clusters(flt, flt.fingerprint_batch([Document(t) for t in texts]))
    assert 0 < expected.count(None) < len(texts)
    for _ in range(10):
        sizes, left = [], len(texts)
        while left:
            sizes.append(min(left, rng.randint(1, 80)))
            left -= sizes[-1]
        assert tagged(texts, sizes) == expected, sizes
    assert tagged(texts, [len(texts)]) == expected


def test_short_tag_mode_keeps_near_duplicates_and_names_their_first_document():
    flt = MinHashDedup(shingling="short", duplicates="tag")
    texts = [SENTENCES[0], SENTENCES[1], variants(SENTENCES[0])["drop_1"], variants(SENTENCES[1])["emoji"]]
    fps = flt.fingerprint_batch([Document(t) for t in texts])
    reasons, clusters = flt.decide_clusters(fps, [10, 11, 12, 13])
    assert reasons == [None] * 4 and clusters == [None, None, 10, 11]
    again = flt.fingerprint_batch([Document(variants(SENTENCES[0])["accents"]), Document("!!!")])
    assert flt.decide_clusters(again, [20, 21]) == ([None, None], [10, None])
    dropper = MinHashDedup(shingling="short")
    assert dropper.decide_clusters(fps, [0, 1, 2, 3]) == (
        [None, None, "near_duplicate", "near_duplicate"],
        [None] * 4,
    )


def test_short_fingerprints_batch_equals_one_by_one_and_survive_pickle(varied_batches):
    flt = short()
    for batch in varied_batches[:40]:
        docs = [Document(t) for t in batch]
        assert flt.fingerprint_batch(docs) == [flt.fingerprint(d) for d in docs]
    run(flt, SENTENCES)
    clone = pickle.loads(pickle.dumps(flt))
    assert run(clone, [variants(SENTENCES[2])["replace_1"]]) == ["near_duplicate"]
    assert flt.fingerprint(Document("!!! 😂")) is None


def test_near_keys_ignore_case_accents_apostrophes_and_emoji(varied_texts):
    from qckit_builtins import accelerated
    from qckit_builtins.filters.dedup import near_key_bytes, near_keys, near_words

    assert near_words("C’est l’Été 🎉!") == near_words("cʼest l'ete") == ["c", "est", "l", "ete"]
    assert near_key_bytes("Straße, cœur — ŒUVRE naïve") == b"strasse coeur oeuvre naive"
    texts = [*varied_texts, "e\u0301te\u0301", "½ pomme", "\u02bcallo\u02bc", "x_y"]
    # the letters spelled out (œ → oe), which the accelerator scans again translated: with anything else
    spelled = [
        "cœur",
        "SŒUR",
        "ex æquo, Æsope",
        "Œ",
        "œœ-æ",
        "cœur 😂",
        "cœur™",
        "cœur e\u0301te\u0301",
        "Straße œ",
    ]
    texts += spelled + [f"{a} {b}" for a, b in zip(spelled, varied_texts[::7], strict=False)]
    expected = [near_key_bytes(t) for t in texts]
    assert near_keys(texts) == expected
    assert near_keys(["SŒUR", "ex æquo"]) == [b"soeur", b"ex aequo"]
    scan = accelerated.textscan
    try:
        accelerated.textscan = None  # the numpy table path
        assert near_keys(texts) == expected
    finally:
        accelerated.textscan = scan


@pytest.mark.parametrize(("short_words", "ngram"), [(40, 5), (3, 1), (6, 3), (16, 16)])
def test_short_features_c_and_numpy_agree(monkeypatch, varied_texts, short_words, ngram):
    import zlib

    from qckit_builtins import accelerated
    from qckit_builtins.filters.dedup import _GRAM_MULTIPLIERS, _fmix64, near_keys, short_features

    if accelerated.minhash is None:
        pytest.skip("the _minhash accelerator is not built (tests/test_accelerated.py says why)")
    rng = random.Random(short_words)
    keys = near_keys(varied_texts)
    keys += [b"", b" ", b"a", b"\tun  deux\x0btrois\n", "été ça".encode()]  # bytes.split()'s separators
    keys += [b" ".join(rng.choices([b"x", b"yy", b"zz", b"w"], k=n)) for n in range(60)]
    mine = short_features(keys, short_words, ngram)
    monkeypatch.setattr(accelerated, "minhash", None)
    reference = short_features(keys, short_words, ngram)
    assert [a.tolist() for a in mine] == [a.tolist() for a in reference]
    assert mine[1].sum() == len(mine[0])
    words = [zlib.crc32(w) for w in b"un deux trois".split()]  # the rule, written out for one document
    uni = [
        int(_fmix64(np.array([w * int(_GRAM_MULTIPLIERS[0, 0]) % 2**64], dtype=np.uint64))[0] >> 32)
        for w in words
    ]
    features, counts = short_features([b"un deux trois"], short_words, ngram)
    if short_words > 3:
        assert counts.tolist() == [5] and features[:3].tolist() == uni
    else:
        assert counts.tolist() == [3 - ngram + 1]


@pytest.mark.parametrize("seed", [0, 1])
def test_batch_signatures_c_and_numpy_agree(seed):
    from qckit_builtins import accelerated
    from qckit_builtins.filters.dedup import _permutations, batch_signatures

    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 120, size=400)
    counts[:3] = 0
    features = rng.integers(0, 2**32, size=int(counts.sum()), dtype=np.uint64).astype(np.uint32)
    perms = _permutations(64, seed + 1)
    module = accelerated.minhash
    try:
        accelerated.minhash = None
        reference = batch_signatures(features, counts, perms)
    finally:
        accelerated.minhash = module
    a, b = perms
    doc = int(np.flatnonzero(counts)[0])
    start = int(counts[:doc].sum())
    mine = features[start : start + counts[doc]].astype(np.uint64)
    assert np.array_equal(reference[doc], ((mine[:, None] * a + b) % 2**32).min(axis=0))
    assert (reference[:3] == 2**32 - 1).all()
    if module is None:
        pytest.skip("the C accelerator is not built here")
    assert np.array_equal(batch_signatures(features, counts, perms), reference)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shingling": "chars"}, "shingling must be 'words' or 'short'"),
        ({"duplicates": "keep"}, "duplicates must be 'drop' or 'tag'"),
        ({"shingling": "short", "short_words": 3}, "short_words must be at least ngram"),
        ({"shingling": "short", "ngram": 17}, "ngram must be at most 16"),
    ],
)
def test_short_shingling_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MinHashDedup(**kwargs)
    tuned, former = MinHashDedup(shingling="short"), MinHashDedup()
    assert (tuned.threshold, tuned.num_perm, former.threshold, former.num_perm) == (0.5, 64, 0.8, 128)


def test_short_setup_takes_datasketchs_parameters_from_the_table_cache(tmp_path):
    # datasketch imports scipy (0.4 s of every prepare run's driver): its values are read from the cache
    import os
    import subprocess
    import sys

    from datasketch import MinHash, MinHashLSH

    from qckit_builtins.filters.dedup import _scheme

    code = (
        "import sys; from qckit_builtins.filters.dedup import MinHashDedup; f = MinHashDedup(shingling='short');"
        "print(f.bands, f.rows, f._permutations.tolist(), 'datasketch' in sys.modules, sep=';')"
    )
    env = {**os.environ, "QCKIT_CACHE": str(tmp_path)}
    runs = [
        subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        ).stdout.split(";")
        for _ in range(2)
    ]
    assert [run[-1].strip() for run in runs] == ["True", "False"]  # built once, then read
    assert runs[0][:3] == runs[1][:3]
    lsh = MinHashLSH(threshold=0.5, num_perm=64)
    permutations = np.asarray(MinHash(num_perm=64, seed=1, **_scheme()).permutations).astype(np.uint32)
    assert runs[1][:3] == [str(lsh.b), str(lsh.r), str(permutations.tolist())]
