"""The C accelerator of the heuristic filters (``qckit_builtins._textscan``) against the Python it replaces:
the same counts on random Unicode text, and the same filter decisions with and without it."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qckit.components import Document
from qckit_builtins import accelerated
from qckit_builtins.filters.dedup import ExactDedup, dedup_key_bytes, dedup_keys
from qckit_builtins.filters.heuristics import (
    LOWER_TABLE_SIZE,
    AlphaRatioFilter,
    MinWordsFilter,
    UniqueWordsFilter,
    _lower_table,
)
from qckit_builtins.normalizers.cleaners import CollapsePunctuation, StripEmails, StripUrls
from qckit_builtins.normalizers.text import (
    ControlCharsNormalizer,
    FoldLigaturesNormalizer,
    MojibakeNormalizer,
    UnicodeNormalizer,
    WhitespaceNormalizer,
)
from qckit_builtins.writers import TxtWriter

textscan = pytest.importorskip("qckit_builtins._textscan", reason="the C accelerators are not built here")


# Characters a corpus really mixes, plus the ones whose case or spacing is special: "Σ" (context-dependent
# lower case), "İ" and "ẞ" (lower case of another length or form), astral letters and emoji, every kind of
# Unicode space, lone surrogates and U+0000.
SPECIAL = "ΣσςİıẞßǅǄﬁÉéÀàŒœ𝐀𝐚𐐀𐐨😀 \t\n\r\x0b\x0c\x1c\x85\u00a0\u1680\u2003\u2028\u202f\u3000\ud800\udfff\x00"
alphabet = st.one_of(
    st.sampled_from(list("aAbBcC éÉ ' -,.") + list(SPECIAL)),
    st.characters(codec=None, exclude_categories=()),
)
texts = st.lists(st.text(alphabet, max_size=40), max_size=12)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(texts)
def test_counts_match_python(batch: list[str]) -> None:
    assert textscan.word_counts(batch) == [len(t.split()) for t in batch]
    assert textscan.non_alpha_space(batch) == [
        sum(not (c.isalpha() or c.isspace()) for c in t) for t in batch
    ]
    for ratio in (0.0, 0.3, 0.5, 2 / 3, 1.0):
        verdicts = textscan.repetitive(batch, _lower_table(), ratio)
        for text, verdict in zip(batch, verdicts, strict=True):
            if verdict is not None:  # None: a character whose lower case is not its own one character
                words = text.lower().split()
                assert verdict == (bool(words) and len(set(words)) / len(words) < ratio)


def test_repetitive_asks_python_only_for_special_case_mappings() -> None:
    batch = ["Le CHAT le chat", "ΣΑΣ σας", "İyi iyi", "Straße STRASSE", "𐐀 𐐨 😀 😀", "a b c d", ""]
    # distinct/words: 2/4, ?, ?, 2/2, 2/4 ("𐐀".lower() is "𐐨"), 4/4, no words
    assert textscan.repetitive(batch, _lower_table(), 0.6) == [True, None, None, False, True, False, False]
    # a text is read only until it has enough distinct words, so a late "Σ" does not matter
    assert textscan.repetitive(["un deux trois quatre Σ"], _lower_table(), 0.5) == [False]


def test_no_code_point_beyond_the_lower_table_has_a_case_and_none_beyond_the_bmp_is_a_space() -> None:
    beyond = "".join(map(chr, range(LOWER_TABLE_SIZE, 0x110000)))
    assert beyond.lower() == beyond
    assert not any(map(str.isspace, map(chr, range(0x10000, 0x110000))))


def test_bad_arguments_are_type_errors() -> None:
    with pytest.raises(TypeError, match="list of str"):
        textscan.word_counts(("a", "b"))
    with pytest.raises(TypeError, match=r"texts\[1\] is not a str"):
        textscan.non_alpha_space(["a", b"b"])
    with pytest.raises(ValueError, match="lower must hold"):
        textscan.repetitive(["a"], b"\x00" * 8, 0.3)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(texts)
def test_filters_decide_the_same_with_and_without_it(batch: list[str]) -> None:
    docs = [Document(t, "<t>", i) for i, t in enumerate(batch, 1)]
    filters = [MinWordsFilter(3), UniqueWordsFilter(0.5), AlphaRatioFilter(0.7)]
    accelerated_reasons = [f.drop_reason_batch(docs) for f in filters]
    python_reasons = _without_accelerator(lambda: [f.drop_reason_batch(docs) for f in filters])
    per_document = [[f.drop_reason(d) for d in docs] for f in filters]
    assert accelerated_reasons == python_reasons == per_document


def _without_accelerator(fn, *args):
    saved = accelerated.textscan
    accelerated.textscan = None
    try:
        return fn(*args)
    finally:
        accelerated.textscan = saved


# pieces rather than characters, so that URLs, e-mail addresses, mojibake and spaces in a row occur often
normalizer_texts = st.lists(
    st.lists(
        st.one_of(
            st.sampled_from(
                [
                    "a",
                    "é",
                    ".",
                    "!",
                    "?",
                    "@",
                    "://",
                    "www.",
                    "  ",
                    "\t",
                    "Ã©",
                    "â€™",
                    "e\u0301",
                    "œ",
                    "ﬁ",
                    " ",
                ]
                + list(SPECIAL)
            ),
            st.characters(codec=None, exclude_categories=()),
        ),
        max_size=20,
    ).map("".join),
    max_size=10,
)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(normalizer_texts)
def test_normalizers_and_dedup_keys_are_the_same_with_and_without_it(batch: list[str]) -> None:
    normalizers = [
        UnicodeNormalizer(),
        UnicodeNormalizer("NFKC"),
        MojibakeNormalizer(),
        ControlCharsNormalizer(),
        WhitespaceNormalizer(),
        WhitespaceNormalizer(keep_nbsp=False),
        FoldLigaturesNormalizer(),
        StripUrls(),
        StripEmails(),
        CollapsePunctuation(),
    ]
    for normalizer in normalizers:
        fast = normalizer.normalize_batch(batch)
        assert (
            fast
            == _without_accelerator(normalizer.normalize_batch, batch)
            == list(map(normalizer.normalize, batch))
        )
    assert dedup_keys(batch) == _without_accelerator(dedup_keys, batch) == list(map(dedup_key_bytes, batch))
    docs = [Document(t, "<t>", i) for i, t in enumerate(batch, 1)]
    writer = TxtWriter()
    lines = writer.format_batch(docs)
    assert lines == _without_accelerator(writer.format_batch, docs) == list(map(writer.format, docs))


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=600), max_size=8))
def test_blake2b_64_is_hashlibs(keys: list[bytes]) -> None:
    assert textscan.blake2b_64(keys) == b"".join(hashlib.blake2b(k, digest_size=8).digest() for k in keys)


def test_blake2b_64_at_block_boundaries() -> None:
    keys = [bytes(range(256))[:n] * (1 + n // 256) for n in (0, 1, 127, 128, 129, 255, 256, 257, 1024)]
    assert textscan.blake2b_64(keys) == b"".join(hashlib.blake2b(k, digest_size=8).digest() for k in keys)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(normalizer_texts)
def test_exact_dedup_fingerprints_are_the_same_with_and_without_it(batch: list[str]) -> None:
    for normalize_key in (True, False):
        dedup = ExactDedup(normalize_key=normalize_key)
        docs = [Document(t, "<t>", i) for i, t in enumerate(batch, 1)]
        fast = dedup.fingerprint_batch(docs)
        assert (
            fast == _without_accelerator(dedup.fingerprint_batch, docs) == list(map(dedup.fingerprint, docs))
        )


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(normalizer_texts)
def test_a_chain_of_normalizers_is_the_same_with_and_without_it(batch: list[str]) -> None:
    """As in the pipeline: each normalizer gets the previous one's output, so the kept per-text flags
    must follow the texts that each one changed."""
    chain = [
        UnicodeNormalizer(),
        MojibakeNormalizer(),
        ControlCharsNormalizer(),
        StripUrls(),
        CollapsePunctuation(),
        WhitespaceNormalizer(),
        FoldLigaturesNormalizer(),
        UnicodeNormalizer("NFKC"),
    ]

    def run(texts: list[str]) -> list[str]:
        for normalizer in chain:
            texts = normalizer.normalize_batch(texts)
        return texts

    def one_by_one(text: str) -> str:
        for normalizer in chain:
            text = normalizer.normalize(text)
        return text

    assert run(batch) == _without_accelerator(run, batch) == list(map(one_by_one, batch))


def test_a_character_that_one_normalizer_brings_is_seen_by_the_next() -> None:
    # mojibake repair turns "Å“" into "œ", which the ligature folder (run after it) must then see
    batch = ["Le cÅ“ur de la ville.", "Rien à faire ici."]
    texts = MojibakeNormalizer().normalize_batch(batch)
    assert FoldLigaturesNormalizer().normalize_batch(texts) == ["Le coeur de la ville.", "Rien à faire ici."]


@settings(max_examples=60, deadline=None)
@given(texts=st.lists(st.text(alphabet=alphabet, max_size=40), max_size=8))
def test_langid_features_are_py3langid_counts(texts):
    from py3langid.langid import visit_counts

    from qckit_builtins import langmodel

    ident = langmodel.identifier(None)
    tables = langmodel._tables()
    encoded = [langmodel.utf8(text) for text in texts]
    raw_bounds, raw_ids, raw_counts = textscan.langid_features(
        encoded, tables.nextmove, tables.rows, tables.output, tables.n_features
    )
    bounds, ids, counts = (
        np.frombuffer(raw, dtype=t)
        for raw, t in zip((raw_bounds, raw_ids, raw_counts), (np.int64, np.int32, np.int32), strict=True)
    )
    rows = [row << 8 for row in ident.tk_row]
    for k, data in enumerate(encoded):
        expected = visit_counts(ident.tk_nextmove, rows, ident.tk_output, data) or {}
        got = slice(bounds[k], bounds[k + 1])
        assert list(zip(ids[got].tolist(), counts[got].tolist(), strict=True)) == list(expected.items())


def test_langid_features_refuse_tables_out_of_range():
    from qckit_builtins import langmodel

    tables = langmodel._tables()
    bad_output = tables.output.copy()
    bad_output[bad_output >= 0] = tables.n_features  # a feature id past the model's
    with pytest.raises(ValueError, match="out of range"):
        textscan.langid_features([b"bonjour"], tables.nextmove, tables.rows, bad_output, tables.n_features)
    with pytest.raises(ValueError, match="out of range"):
        textscan.langid_features(
            [b"bonjour"], tables.nextmove[:1000], tables.rows, tables.output, tables.n_features
        )
    with pytest.raises(ValueError, match="mismatched"):
        textscan.langid_features([b"x"], tables.nextmove, tables.rows[:10], tables.output, tables.n_features)
    with pytest.raises(TypeError, match="texts\\[0\\] is not bytes"):
        textscan.langid_features(["x"], tables.nextmove, tables.rows, tables.output, tables.n_features)
