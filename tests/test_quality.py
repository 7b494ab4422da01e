"""The French quality preset (FineWeb-2 fra_Latn thresholds, adapted to one-line documents)."""

from __future__ import annotations

import pickle

import pytest

from qckit.components import Document
from qckit_builtins.filters.quality import FrenchQualityFilter, french_stop_words

GOOD = (
    "Bonjour, comment ça va? C'est une belle journée à Montréal. J'aime la poutine et les queues "
    "de castor, pis toute la gang était là hier soir au dépanneur du coin."
)


def reason(text: str, **kwargs) -> str | None:
    return FrenchQualityFilter(**kwargs).drop_reason(Document(text))


def test_builtin_stop_words_start_with_fineweb2_list():
    words = french_stop_words()
    assert " ".join(words[:18]) == "de la le et à en l' des du les est d' un une il dans par au"
    for english in ("a", "on", "as", "me", "son", "plus", "car"):
        assert english not in words


def test_good_french_passes():
    assert reason(GOOD) is None
    assert reason("Bonjour, comment ça va?") is None  # short line: one stop word is enough


def test_english_is_dropped_for_lack_of_french_stop_words():
    assert reason("The cat is on the table and a dog is sleeping in the garden today.") == "few_stop_words"


def test_stop_words_count_with_both_apostrophes():
    flt = FrenchQualityFilter()
    straight = "c'est l'homme qu'il j'ai"
    curly = "c’est l’homme qu’il j’ai"
    # c' est l' qu' il j' (homme and ai are not stop words)
    assert flt.count_stop_words(straight) == 6
    assert flt.count_stop_words(curly) == 6
    assert flt.count_stop_words("C’EST L’HIVER") == 3
    # Ten words with only elided stop words in curly form still reach the minimum of two.
    assert reason("C’est magnifique, l’automne québécois colore vraiment chaque érable rouge") is None
    assert reason("Magnifique automne québécois colore vraiment chaque érable rouge orange jaune") == (
        "few_stop_words"
    )


def test_custom_stop_words_and_threshold():
    assert reason("The cat sat on the mat today in the sun", stop_words=["the", "on"]) is None
    assert reason(GOOD, min_stop_words=100) == "few_stop_words"
    assert reason("Mots sans aucun petit outil grammatical visible ici vraiment", min_stop_words=0) is None


def test_mean_word_length_bounds():
    assert reason("Anticonstitutionnellement extraordinairement incompréhensiblement, il est.") == (
        "mean_word_length"
    )
    assert reason("a b c d e f g h i j k l et le la de") == "mean_word_length"


def test_symbol_ratio_for_hashes_and_ellipses():
    assert reason("Le #vote de la #ville est #important pour la #région et le #pays") == "symbol_ratio"
    assert reason("Je sais pas… c'est vrai… ben là…") == "symbol_ratio"
    # One ellipsis in a short line is fine: the word count is taken as at least short_doc_words (10).
    assert reason("Je sais pas, c'est vrai…") is None


def test_words_without_letters():
    assert reason("Prix de 12,99 $ 45,00 $ 33,10 $ 18,50 $ et 9,99 $") == "no_alpha_words"
    assert reason("!!! ??? ...") == "no_alpha_words"


def test_line_checks_apply_to_multi_line_documents_only():
    # A one-line document without final punctuation is fine …
    assert reason("Le chat de la voisine dort sur le balcon") is None
    # … but most lines of a multi-line document must end like sentences (FineWeb-2: > 10 %).
    lines = "\n".join(["Le menu de la page", "Les liens du site", "La page de contact", "Le plan du site"])
    assert reason(lines) == "line_punct"
    # French closing guillemets and ellipses count as terminal punctuation.
    quoted = (
        "Le voisin m'a dit hier soir «\u00a0oui, bien sûr\u00a0»\n"
        "Ma sœur lui a répondu tout de suite «\u00a0non, merci\u00a0»\n"
        "Puis il est parti sans rien dire à personne…\n"
        "C'est la fin de cette petite histoire de quartier."
    )
    assert reason(quoted) is None


def test_duplicate_lines_and_ellipsis_lines():
    repeated = "\n".join(["Une phrase complète de la page."] * 3 + ["Autre chose de bien à lire."])
    assert reason(repeated) == "dup_lines"
    trailing = "\n".join(
        [
            "Et puis il y a tout le reste de la semaine à faire…",
            "Il est parti au chalet avec son frère et sa blonde…",
            "La fin de la journée est arrivée bien trop vite.",
            "Le souper était prêt à six heures du soir.",
            "Tout le monde est rentré à la maison.",
        ]
    )
    assert reason(trailing) == "ellipsis_lines"


def test_repetition_checks_only_for_long_documents():
    sentence = "le chat est dans la maison avec le chien"
    long_repetitive = " ".join([sentence] * 8)  # 72 words
    assert reason(long_repetitive) == "top_ngram"
    assert reason(long_repetitive, top_ngrams={}) == "dup_ngrams"
    assert reason(long_repetitive, top_ngrams={}, dup_ngrams={}) is None
    short = "Je suis là, je suis content, je suis ici."
    assert reason(short) is None  # under 50 words: FineWeb-2 never saw such documents


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_stop_words": -1}, "min_stop_words must be at least 0"),
        ({"min_avg_word_length": 5, "max_avg_word_length": 3}, "min_avg_word_length"),
        ({"min_alpha_words_ratio": 1.5}, "min_alpha_words_ratio must be between 0 and 1"),
        ({"max_symbol_word_ratio": -0.1}, "max_symbol_word_ratio must be at least 0"),
        ({"top_ngrams": {"deux": 0.1}}, "top_ngrams keys must be n-gram sizes"),
        ({"dup_ngrams": {"0": 0.1}}, "must be at least 1"),
    ],
)
def test_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FrenchQualityFilter(**kwargs)


def test_survives_pickle():
    flt = FrenchQualityFilter(stop_words=["le", "la"], top_ngrams={"2": 0.2})
    clone = pickle.loads(pickle.dumps(flt))
    assert vars(clone) == vars(flt)
    for text in [GOOD, "The cat is on the mat", "le la le la"]:
        assert clone.drop_reason(Document(text)) == flt.drop_reason(Document(text))
