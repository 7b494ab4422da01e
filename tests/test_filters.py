"""The seed's four filters: length, word count, vocabulary diversity, alphabetic ratio."""

from __future__ import annotations

import pickle
import random

import pytest

from qckit.components import Document
from qckit_builtins import filters
from qckit_builtins.filters import (
    AlphaRatioFilter,
    LengthFilter,
    MinWordsFilter,
    UniqueWordsFilter,
)
from qckit_builtins.filters.heuristics import count_non_alpha_space


def reason(component, text: str) -> str | None:
    return component.drop_reason(Document(text))


def seed_alpha_ratio(text: str) -> float:
    """The seed's formula, character by character."""
    return sum(c.isalpha() or c.isspace() for c in text) / len(text)


def test_all_builtin_filters_are_registered_by_their_hooks():
    registered: list[type] = []
    filters.register_filters(registered.append)
    names = {cls.name: cls.stateful for cls in registered}
    assert names == {
        "length": False,
        "min_words": False,
        "unique_words": False,
        "alpha_ratio": False,
        "french_quality": False,
        "langid": False,
        "dialect_langid": False,
        "exact_dedup": True,
        "minhash_dedup": True,
        "quebec_markers": False,
        "decontaminate": False,
    }


def test_length_bounds_are_inclusive_like_the_seed():
    flt = LengthFilter()
    assert reason(flt, "a" * 9) == "too_short"
    assert reason(flt, "a" * 10) is None
    assert reason(flt, "a" * 10000) is None
    assert reason(flt, "a" * 10001) == "too_long"
    custom = LengthFilter(min_length=20, max_length=30)
    assert reason(custom, "é" * 19) == "too_short"
    assert reason(custom, "é" * 31) == "too_long"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_length": 0}, "min_length must be at least 1"),
        ({"min_length": 50, "max_length": 50}, "must be greater than min_length"),
        ({"min_length": 50, "max_length": 10}, "must be greater than min_length"),
    ],
)
def test_length_rejects_bad_bounds(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LengthFilter(**kwargs)


def test_min_words_counts_whitespace_separated_words():
    flt = MinWordsFilter()
    assert reason(flt, "Bonjour tout") == "too_few_words"
    assert reason(flt, "  Bonjour\ttout \n ") == "too_few_words"
    assert reason(flt, "Bonjour tout le") is None
    # str.split() splits on no-break spaces too, as the seed did
    assert reason(flt, "Allô\u00a0toi\u00a0là") is None
    assert reason(MinWordsFilter(min_words=5), "un deux trois quatre") == "too_few_words"
    with pytest.raises(ValueError, match="min_words must be at least 1"):
        MinWordsFilter(min_words=0)


def test_min_words_matches_the_seed_on_random_text():
    rng = random.Random(7)
    pieces = ["mot", " ", "  ", "\t", "\n", "\u00a0", "é", ".", ""]
    for min_words in (1, 2, 3, 5):
        flt = MinWordsFilter(min_words=min_words)
        for _ in range(500):
            text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
            expected = "too_few_words" if len(text.split()) < min_words else None
            assert reason(flt, text) == expected, repr(text)


def test_unique_words_ratio_boundary_and_case():
    flt = UniqueWordsFilter()
    # 3 distinct words out of 10: exactly 0.3 stays, as in the seed ("< 30 %" drops).
    assert reason(flt, "un deux trois un deux trois un deux trois un") is None
    assert reason(flt, "oui non oui non oui non oui non oui non") == "repetitive"
    # Case-insensitive: "Bon bon BON" is one word three times.
    assert reason(flt, "Bon bon BON bon Bon bon BON bon BON bon") == "repetitive"
    assert reason(UniqueWordsFilter(min_ratio=0.0), "la la la la") is None


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_ratio_filters_reject_out_of_range(value):
    with pytest.raises(ValueError, match="min_ratio must be between 0 and 1"):
        UniqueWordsFilter(min_ratio=value)
    with pytest.raises(ValueError, match="min_ratio must be between 0 and 1"):
        AlphaRatioFilter(min_ratio=value)


@pytest.mark.parametrize(
    "text",
    [
        "Bonjour, comment ça va? C'est une belle journée à Montréal.",
        "Prix : 12,99 $ (taxes incl.) — 2024-05-01",
        "«\u00a0Allô\u00a0»\u202f! Ça coûte ½ ou ² ou ٣ ou Ⅻ, x_y",
        "naïve Œuvre ÉTÉ ß ŉ ǅ ª º µ",
        "emoji 😀 and 𝐀𝐁 letters 𠀀 and \U0001f600",
        "\ud800 lone surrogate",
        "1234567890!@#$%^&*()",
        "   \t\n   ",
    ],
)
def test_alpha_ratio_counts_exactly_like_the_seed(text):
    bad = count_non_alpha_space(text)
    assert (len(text) - bad) / len(text) == seed_alpha_ratio(text)


def test_alpha_ratio_matches_the_seed_on_random_text():
    rng = random.Random(3)
    alphabet = "aéÉœ ß\u00a0\u202f\t1٣½²_.,«»’-😀𝐀𠀀\u0301Ⅻ"
    flt = AlphaRatioFilter()
    for _ in range(1000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30)))
        expected = "low_alpha_ratio" if seed_alpha_ratio(text) < 0.7 else None
        assert reason(flt, text) == expected, repr(text)


def test_alpha_ratio_boundary():
    flt = AlphaRatioFilter()
    assert reason(flt, "abcdefg123") is None  # exactly 0.7 stays
    assert reason(flt, "abcdef1234") == "low_alpha_ratio"
    assert reason(flt, "Ça coûte 12,99\u00a0$ à Québec") is None
    assert reason(flt, "12,99 $ 45,00 $ 33,10 $") == "low_alpha_ratio"


def test_seed_filters_survive_pickle():
    components = [
        LengthFilter(min_length=5, max_length=50),
        MinWordsFilter(min_words=4),
        UniqueWordsFilter(min_ratio=0.5),
        AlphaRatioFilter(min_ratio=0.9),
    ]
    samples = [
        "court",
        "un deux trois",
        "oui oui oui oui",
        "abc 123 456 789",
        "Une phrase tout à fait normale.",
    ]
    for component in components:
        clone = pickle.loads(pickle.dumps(component))
        assert vars(clone) == vars(component)
        assert [reason(clone, s) for s in samples] == [reason(component, s) for s in samples]


@pytest.mark.parametrize(
    "flt",
    [
        LengthFilter(),
        LengthFilter(min_length=40, max_length=120),
        MinWordsFilter(),
        MinWordsFilter(min_words=8),
        UniqueWordsFilter(),
        UniqueWordsFilter(min_ratio=0.8),
        UniqueWordsFilter(min_ratio=1.0),
        AlphaRatioFilter(),
        AlphaRatioFilter(min_ratio=0.9),
    ],
    ids=lambda f: f"{f.name}-{vars(f)}",
)
def test_batch_gives_what_one_by_one_gives(flt, varied_batches):
    for batch in varied_batches:
        assert flt.drop_reason_batch([Document(t) for t in batch]) == [
            flt.drop_reason(Document(t)) for t in batch
        ]


def test_unique_words_batch_near_the_threshold():
    # 10 words, 3 distinct (ratio 0.3, kept) or 2 distinct (0.2, dropped), with case and astral letters
    # ("𐐀" lower-cases to "𐐨") and final sigma mixed in.
    texts = [
        "a A a b B b c C c a",
        "a A a b B b a A a b",
        "𐐀 𐐨 𐐀 x X x ΟΔΟΣ οδος ΟΔΟΣ 𐐨",
        "𐐀 𐐨 𐐀 x X x 𐐀 x 𐐨 X",
        "",
        "\u00a0\t ",
    ]
    flt = UniqueWordsFilter()
    reasons = flt.drop_reason_batch([Document(t) for t in texts])
    assert reasons == [flt.drop_reason(Document(t)) for t in texts]
    assert reasons == [None, "repetitive", None, "repetitive", None, None]


def test_alpha_ratio_batch_with_astral_letters_and_symbols():
    texts = ["𝐀𝐁𝐂𝐃 ok", "😀😀😀 ok", "ab12", "\x00 ab", "ok"]
    flt = AlphaRatioFilter()
    reasons = flt.drop_reason_batch([Document(t) for t in texts])
    assert reasons == [flt.drop_reason(Document(t)) for t in texts]
    assert reasons == [None, "low_alpha_ratio", "low_alpha_ratio", None, None]
