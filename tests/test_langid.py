"""Language identification with py3langid's bundled model."""

from __future__ import annotations

import pickle

import pytest

from qckit.components import Document
from qckit_builtins.filters.langid import LangIdFilter

FRENCH = "Bonjour, comment ça va? C'est une belle journée à Montréal, on va aller se promener au parc."
QUEBEC = "Pis, y fait frette à matin, tsé. Mon chum a parqué son char devant le dépanneur."
ENGLISH = "Hello, how are you doing today? It is a lovely day in Montreal, let's go for a walk."


@pytest.fixture(scope="module")
def flt() -> LangIdFilter:
    return LangIdFilter()


def test_keeps_french_and_quebec_french(flt):
    for text in (FRENCH, QUEBEC):
        doc = Document(text)
        assert flt.drop_reason(doc) is None
        assert doc.meta["lang"] == "fr"
        assert doc.meta["lang_score"] > 0.9


def test_drops_english_and_tags_it(flt):
    doc = Document(ENGLISH)
    assert flt.drop_reason(doc) == "wrong_language"
    assert doc.meta["lang"] == "en"


def test_low_confidence_and_candidates():
    doc = Document("Le chat")  # too short to be sure among 97 languages
    assert LangIdFilter(min_confidence=0.5).drop_reason(doc) == "low_confidence"
    assert doc.meta["lang"] == "fr"
    assert LangIdFilter(min_confidence=0.0).drop_reason(Document("Le chat")) is None
    # Restricting the candidates to French and English makes the same text clear enough.
    restricted = Document("Le chat")
    assert LangIdFilter(candidates=["fr", "en"]).drop_reason(restricted) is None
    assert restricted.meta["lang_score"] > 0.5


def test_several_languages_can_be_kept():
    assert LangIdFilter(languages=["fr", "en"]).drop_reason(Document(ENGLISH)) is None


def test_sample_chars_limits_the_classified_prefix():
    text = FRENCH + " " + ENGLISH * 20
    assert LangIdFilter(sample_chars=len(FRENCH)).drop_reason(Document(text)) is None
    assert LangIdFilter(sample_chars=0).drop_reason(Document(text)) == "wrong_language"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"languages": []}, "must name at least one language"),
        ({"languages": ["french"]}, "not an ISO 639 code"),
        ({"min_confidence": 1.5}, "min_confidence must be between 0 and 1"),
        ({"languages": ["fr"], "candidates": ["en", "de"]}, "must also be in candidates"),
        ({"sample_chars": -1}, "sample_chars must be at least 0"),
    ],
)
def test_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LangIdFilter(**kwargs)


def test_unknown_code_is_reported_on_first_use():
    flt = LangIdFilter(languages=["xx"])
    with pytest.raises(ValueError, match="py3langid does not know xx"):
        flt.drop_reason(Document(FRENCH))


def test_pickle_leaves_the_model_behind_and_behaves_the_same(flt):
    flt.drop_reason(Document(FRENCH))  # loads the model
    data = pickle.dumps(flt)
    assert len(data) < 1000  # the ~4 MB model is not shipped to workers
    clone = pickle.loads(data)
    for text in (FRENCH, ENGLISH, "Le chat"):
        a, b = Document(text), Document(text)
        assert clone.drop_reason(a) == flt.drop_reason(b)
        assert a.meta == b.meta
