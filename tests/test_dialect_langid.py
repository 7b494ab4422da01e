"""dialect_langid: the language decision for a Quebec corpus (short, colloquial, code-switched French stays)."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from qckit import defaults
from qckit.components import Document
from qckit.prepare import prepare_texts, run_prepare
from qckit.recipe import build_recipe, load_recipe
from qckit.report import prepare_report
from qckit_builtins import accelerated, langmodel, lexicon
from qckit_builtins.filters.dialect import builtin_markers, fold_words
from qckit_builtins.filters.dialect_langid import (
    CANDIDATES,
    DialectLangId,
    english_words,
    french_distinctive_words,
    word_counts,
)
from qckit_builtins.filters.quality import french_stop_words

REPO = Path(__file__).resolve().parents[1]

# The user's report (issue #16): dropped by langid (all languages, min_confidence 0.5).
REPORTED = ["Y fait frette.", "Chu brûlé raide.", "Mon char est scrap.", "haha t'es ben niaiseux"]
FOREIGN = {
    "en": "The kids are playing in the park with their friends this afternoon.",
    "es": "Los niños juegan en el parque con sus amigos esta tarde.",
    "it": "I bambini giocano nel parco con i loro amici questo pomeriggio.",
    "de": "Die Kinder spielen heute Nachmittag mit ihren Freunden im Park.",
}


@pytest.fixture(scope="module")
def flt() -> DialectLangId:
    return DialectLangId()


def decide(flt: DialectLangId, text: str) -> tuple[str | None, dict]:
    doc = Document(text)
    return flt.drop_reason(doc), doc.meta


@pytest.mark.parametrize("text", REPORTED)
def test_keeps_the_reported_short_quebec_sentences(flt, text):
    reason, meta = decide(flt, text)
    assert reason is None, meta
    assert meta["lang"] == "fr"


@pytest.mark.parametrize(("lang", "text"), FOREIGN.items())
def test_drops_other_languages_as_their_language(flt, lang, text):
    reason, meta = decide(flt, text)
    assert reason == f"lang:{lang}"
    assert meta["lang"] == lang
    assert meta["lang_score"] > 0.5


def test_code_switched_french_is_kept_with_its_english_share(flt):
    reason, meta = decide(flt, "Je feel pas ben à soir")
    assert reason is None
    assert meta["english_share"] == pytest.approx(1 / 6, abs=1e-4)  # je feel pas ben a soir
    assert decide(flt, "Mon boss m'a callé à six heures du matin, voyons donc.")[0] is None


def test_english_dominating_a_mixed_sentence_drops_it(flt):
    reason, meta = decide(flt, "Je pense que the meeting was about the money we need for the truck")
    assert meta["english_share"] > 0.5
    assert reason == "lang:en"
    # the threshold decides, whatever the model says: 1/6 of the words are English
    assert DialectLangId(max_english_share=0.2).drop_reason(Document("Je feel pas ben à soir")) is None
    assert DialectLangId(max_english_share=0.1).drop_reason(Document("Je feel pas ben à soir")) == "lang:en"


def test_quebec_markers_rescue_a_short_document_the_model_doubts(flt):
    text = "Je capote ben raide."  # "capoté ben raide" is a marker; py3langid leans to English
    french = flt.probabilities(text)["fr"]
    assert flt.rescue_confidence <= french < flt.required_confidence(len(text.split()))
    reason, meta = decide(flt, text)
    assert reason is None and meta["lang_rescue"] == "markers"
    # without the marker evidence (rescue off) it is dropped; its words alone would keep it (lexicon)
    assert decide(DialectLangId(rescue_confidence=1.0), text)[1]["lang_rescue"] == "lexicon"
    strict = DialectLangId(rescue_confidence=1.0, lexicon=False)
    assert strict.drop_reason(Document(text)) is not None


def test_french_function_words_rescue_a_code_switched_document(flt):
    text = "Check ben ça."  # one English verb; "ça" says the sentence is built in French
    assert flt.probabilities(text)["fr"] < flt.rescue_confidence
    reason, meta = decide(flt, text)
    assert reason is None and meta["lang_rescue"] == "code_switching"
    # English words alone, with no French function word left, are no evidence
    assert decide(flt, "The minister met with representatives of Indigenous communities.")[0] == "lang:en"


def test_confidence_needed_grows_with_the_length():
    flt = DialectLangId(short_confidence=0.3, min_confidence=0.5, short_words=5, long_words=15)
    assert [flt.required_confidence(n) for n in (1, 5, 10, 15, 100)] == pytest.approx(
        [0.3, 0.3, 0.4, 0.5, 0.5]
    )


def test_low_confidence_french_and_languages_outside_the_candidates(flt):
    strict = DialectLangId(
        min_confidence=1.0, short_confidence=1.0, rescue_confidence=1.0, distinctive_words=0, lexicon=False
    )
    reason, meta = decide(strict, "Nous avons mangé au restaurant avec des amis.")
    assert reason == "low_confidence" and meta["lang"] == "fr"
    # Polish is not a candidate: the full model names it
    assert decide(flt, "Rada miasta zatwierdziła budżet na przyszły rok.")[0] == "lang:pl"


def test_standard_french_is_kept_without_english(flt):
    reason, meta = decide(flt, "Le conseil municipal a adopté le budget de l'année prochaine.")
    assert reason is None and meta["english_share"] == 0.0 and "lang_rescue" not in meta


def test_english_list_holds_single_words_that_are_not_french_evidence():
    words = english_words()
    assert len(words) > 250
    french = {token for word in french_stop_words() for token in fold_words(word)}
    markers = builtin_markers()
    assert not words & french
    assert not words & set(markers.words)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"candidates": ["fr", "es"]}, "must include fr and en"),
        ({"candidates": ["fr", "en", "xyz1"]}, "not an ISO 639 code"),
        ({"min_confidence": 1.5}, "min_confidence must be between 0 and 1"),
        ({"max_english_share": -0.1}, "max_english_share must be between 0 and 1"),
        ({"short_words": 10, "long_words": 5}, "short_words <= long_words"),
        ({"sample_chars": -1}, "sample_chars must be at least 0"),
        ({"lexicon_confidence": 1.5}, "lexicon_confidence must be between 0 and 1"),
    ],
)
def test_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DialectLangId(**kwargs)


def test_unknown_candidate_is_reported_on_first_use():
    flt = DialectLangId(candidates=["fr", "en", "xx"])
    with pytest.raises(ValueError, match="py3langid does not know xx"):
        flt.drop_reason(Document(REPORTED[0]))


def test_pickle_leaves_the_model_behind_and_behaves_the_same(flt):
    texts = [*REPORTED, *FOREIGN.values(), "Je feel pas ben à soir", "Check ben ça."]
    decide(flt, texts[0])  # loads the model
    data = pickle.dumps(flt)
    assert len(data) < 1000
    clone = pickle.loads(data)
    for text in texts:
        a, b = Document(text), Document(text)
        assert clone.drop_reason(a) == flt.drop_reason(b)
        assert a.meta == b.meta and a.metrics == b.metrics


CORPUS = [
    "Y fait frette à matin, mets ta tuque pis tes mitaines avant de sortir.",
    "Chu brûlé raide.",
    "Je feel pas ben à soir, je reste chez nous.",
    FOREIGN["en"],
    FOREIGN["es"],
    FOREIGN["de"],
    "Hello there, this one is English too and it goes away.",
]


def test_funnel_counts_the_drops_per_identified_language():
    result = prepare_texts(CORPUS, {"prepare": {"splitter": {"use": "random", "val_split": 0.0}}})
    kept = [d.text for d in result.train + result.val]
    assert kept == CORPUS[:3]
    stats = result.stats
    assert stats["filters"]["dialect_langid"]["reasons"] == {"lang:de": 1, "lang:en": 2, "lang:es": 1}
    share = stats["summaries"]["dialect_langid"]["english_word_share"]
    assert 0 < share < 0.1  # "feel" among the kept documents' words
    console = Console(width=160, record=True)
    console.print(prepare_report(stats))
    assert "lang:de 1, lang:en 2, lang:es 1" in console.export_text()


def test_decisions_and_their_counts_are_the_same_whatever_the_number_of_workers(tmp_path):
    lines = [f"{CORPUS[i % len(CORPUS)]} ({i})" for i in range(700)]
    src = tmp_path / "mixed.txt"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    seen = {}
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        table = {"inputs": [str(src)], "output": str(out), "workers": workers, "batch_bytes": 4096}
        stats = run_prepare(build_recipe({"prepare": {**table, "merge": True}}).prepare).stats
        seen[workers] = (
            (out / "train.txt").read_bytes(),
            (out / "val.txt").read_bytes(),
            stats["filters"]["dialect_langid"],
        )
    assert seen[1] == seen[2]
    assert seen[1][2]["reasons"] == {"lang:de": 100, "lang:en": 200, "lang:es": 100}


def test_the_defaults_and_the_main_recipe_use_it():
    assert {"use": "dialect_langid"} in defaults.PREPARE_DEFAULTS["filters"]
    recipe = load_recipe(REPO / "recipes" / "quebec_cpt.toml")
    assert recipe.prepare is not None
    names = [spec.name for spec in recipe.prepare.filters]
    assert "dialect_langid" in names and "langid" not in names


def test_all_languages_flag_leaves_the_decision_out():
    from qckit.cli.main import build_parser
    from qckit.cli.prepare import prepare_flags_to_recipe

    def uses(argv: list[str]) -> list[str]:
        ns = build_parser().parse_args(["prepare", "--input", "x.txt", *argv])
        return [f["use"] for f in prepare_flags_to_recipe(ns)["prepare"]["filters"]]

    assert "dialect_langid" in uses([])
    assert "dialect_langid" not in uses(["--all_languages"])
    assert uses(["--all_languages"])[0] == "length"  # --min_length still reaches the length filter


def test_clearly_french_documents_are_kept_without_the_model(flt):
    text = "Nous avons soupé chez ma tante avec elle, pis toute."  # nous, avons, chez, avec, elle
    reason, meta = decide(flt, text)
    assert reason is None and meta["lang"] == "fr" and "lang_score" not in meta  # the model was not asked
    reason, meta = decide(DialectLangId(distinctive_words=0), text)  # the fast path off
    assert reason is None and meta["lang_score"] > 0.5
    # fewer distinctive words than English ones, or too few: the model decides
    assert "lang_score" in decide(flt, "Nous avons eu un meeting avec the boss and the team today")[1]
    assert "lang_score" in decide(flt, "Nous avons mangé des pommes.")[1]


def test_the_distinctive_words_are_single_words_and_never_english():
    words = french_distinctive_words()
    assert len(words) > 50
    assert not words & english_words()
    # the function words other candidates share are left out (Dutch "je", Catalan/Italian "qui", "les" …)
    assert not words & {"je", "pas", "qui", "les", "des", "la", "le", "de", "il", "que", "en", "et", "l", "d"}


MIXED = [
    *REPORTED,
    *FOREIGN.values(),
    "Je feel pas ben à soir",
    "Check ben ça.",
    "Je capote ben raide.",
    "Nous avons soupé chez ma tante avec elle, pis toute.",
    "Rada miasta zatwierdziła budżet na przyszły rok.",
    "Je pense que the meeting was about the money we need for the truck",
    "",
    "12345 67890",
    "Y fait frette à matin " * 200,  # past sample_chars
]


def _decisions(flt: DialectLangId, texts: list[str], batch: bool) -> list[tuple]:
    docs = [Document(text) for text in texts]
    reasons = flt.drop_reason_batch(docs) if batch else [flt.drop_reason(doc) for doc in docs]
    return [(reason, doc.meta, doc.metrics) for reason, doc in zip(reasons, docs, strict=True)]


@pytest.mark.parametrize(
    "settings",
    [{}, {"distinctive_words": 0}, {"min_confidence": 0.99, "sample_chars": 0}, {"lexicon": False}],
)
def test_the_batch_method_is_drop_reason_for_each(settings):
    flt = DialectLangId(**settings)
    assert _decisions(flt, MIXED, batch=True) == _decisions(flt, MIXED, batch=False)


def test_the_same_decisions_without_the_accelerators(flt, monkeypatch):
    texts = [*MIXED, *CORPUS]
    with_c = _decisions(flt, texts, batch=True)
    monkeypatch.setattr(accelerated, "textscan", None)
    monkeypatch.setattr(accelerated, "markerscan", None)
    assert _decisions(flt, texts, batch=True) == with_c


@pytest.mark.parametrize("cells", [1 << 20, 300])  # 300: a few texts per run among 9, one among all
def test_the_batch_scores_are_py3langids(cells, monkeypatch):
    monkeypatch.setattr(langmodel, "_CHUNK_CELLS", cells)
    texts = [*REPORTED, *FOREIGN.values(), "Rada miasta zatwierdziła budżet.", "", "ÇA VA PAS PANTOUTE"]
    feats = langmodel.features(texts)
    candidates = ("fr", "en", "es", "de")
    for scorer, ident in (
        (langmodel.scorer(candidates), langmodel.identifier(candidates)),
        (langmodel.scorer(None), langmodel.identifier(None)),
    ):
        probs = scorer.probabilities(feats)
        for k, text in enumerate(texts):
            expected = dict(ident.rank(text))
            assert dict(zip(scorer.codes, probs[k].tolist(), strict=True)) == pytest.approx(
                expected, abs=1e-5
            )
        named = scorer.classify(feats)
        assert [lang for lang, _ in named] == [ident.classify(text)[0] for text in texts]


def test_the_scores_do_not_depend_on_how_the_batch_is_cut(monkeypatch):
    feats = langmodel.features([*MIXED, *CORPUS])
    scorers = [langmodel.scorer(tuple(CANDIDATES)), langmodel.scorer(None)]
    whole = [scorer.probabilities(feats) for scorer in scorers]
    monkeypatch.setattr(langmodel, "_CHUNK_CELLS", 50)
    for scorer, expected in zip(scorers, whole, strict=True):
        assert np.array_equal(scorer.probabilities(feats), expected)
    one_by_one = np.concatenate([scorers[0].probabilities(feats.take([k])) for k in range(len(feats))])
    assert np.array_equal(one_by_one, whole[0])


def test_word_counts_are_the_same_without_the_accelerator(monkeypatch):
    texts = [*MIXED, *CORPUS, "L'ŒUVRE d'J'AI qu’il", "ﬁn de semaine nous avons 😀", "nous\ud800avec dans"]
    with_c = word_counts(texts)
    monkeypatch.setattr(accelerated, "markerscan", None)
    assert word_counts(texts) == with_c
    assert with_c[2][texts.index("Nous avons soupé chez ma tante avec elle, pis toute.")] == 5


# Very short everyday French that py3langid's n-grams gave to another candidate (40 such sentences
# written after the defaults were chosen: 7 dropped). Their words decide them.
VERY_SHORT = [
    "On verra ben.",
    "On verra ben demain.",
    "T'es ben fin.",
    "Chu en retard.",
    "On verra bien.",  # standard French too
    "Bon, ben, salut.",
    "Merci ben gros.",
]
SHORT_FOREIGN = {
    "Está bien, gracias.": "es",
    "Nos vemos mañana.": "es",
    "Ci vediamo domani.": "it",
    "Va bene, grazie.": "it",
    "Tudo bem, obrigado.": "pt",
    "Estou muito cansado.": "pt",
    "Estic molt cansat.": "ca",
    "Sunt foarte obosit.": "ro",
    "Bis morgen, Schatz.": "de",
    "Ich bin müde.": "de",
    "Ik ben moe.": "nl",  # Dutch "ben" (am), which the spellings read as "bien"
    "Tot morgen, schat.": "nl",
    "See you tomorrow.": "en",
    "Vi ses imorgon.": "sv",
}


@pytest.mark.parametrize("text", VERY_SHORT)
def test_very_short_french_is_kept_on_its_words(flt, text):
    reason, meta = decide(flt, text)
    assert reason is None and meta["lang"] == "fr" and meta["lang_rescue"] == "lexicon", meta
    # py3langid alone gives it to another candidate: without the word evidence it is dropped
    assert DialectLangId(lexicon=False).drop_reason(Document(text)) is not None


@pytest.mark.parametrize(("text", "lang"), SHORT_FOREIGN.items())
def test_very_short_sentences_of_other_languages_are_dropped(flt, text, lang):
    reason, meta = decide(flt, text)
    assert reason is not None and "lang_rescue" not in meta, meta
    assert meta["lang"] != "fr" or lang not in CANDIDATES  # a candidate is named, not low_confidence


def test_the_words_must_all_be_french_for_the_vote_to_count(flt):
    # Swedish is no candidate: its two short words that are French ones win the vote for French, and
    # with py3langid's probabilities French passes the threshold
    vote = lexicon.lexicon(flt.candidates).vote("Vi ses imorgon.")
    joint = {code: p * vote.probabilities[code] for code, p in flt.probabilities("Vi ses imorgon.").items()}
    assert joint["fr"] / sum(joint.values()) > flt.lexicon_confidence
    assert vote.not_french == ("imorgon",)
    assert flt.drop_reason(Document("Vi ses imorgon.")) is not None
    # a Quebec marker missing from wordfreq's French list counts as a French word
    vote = lexicon.lexicon(flt.candidates).vote("Y fait frette en masse.")
    assert "frette" not in vote.not_french  # its spelling: froid
    vote = lexicon.lexicon(flt.candidates).vote("C'est smatte, ça.")
    assert vote.not_french == ("smatte",) and "smatte" in builtin_markers().words


def test_quebec_spellings_are_looked_up_as_standard_words(flt, monkeypatch):
    assert lexicon.standard_words("Chu ben tanné, toé.") == ["je", "suis", "bien", "tanne", "toi"]
    assert all(
        len(fold_words(quebec)) == 1 and standard for quebec, standard in lexicon.quebec_spellings().items()
    )
    lex = lexicon.lexicon(flt.candidates)
    assert lex.vote("ben").probabilities == lex.vote("bien").probabilities
    assert max(lex.vote("ben").probabilities.items(), key=lambda item: item[1])[0] == "fr"
    monkeypatch.setattr(lexicon, "quebec_spellings", dict)  # "ben" read as itself: Dutch first
    assert max(lex.vote("ben").probabilities.items(), key=lambda item: item[1])[0] == "nl"


def test_the_vote_of_no_known_word_is_uniform(flt):
    lex = lexicon.lexicon(flt.candidates)
    for text, n_words in (("", 0), ("12345 67890", 2)):
        vote = lex.vote(text)
        assert vote.n_words == n_words
        assert list(vote.probabilities.values()) == pytest.approx(
            [1 / len(flt.candidates)] * len(flt.candidates)
        )
    assert lex.vote("12345 67890").not_french == ("12345", "67890")
    assert lex.vote("x" * 40 + " verra").not_french == ("x" * 40,)  # past MAX_BYTES: unknown


def test_the_word_evidence_only_keeps_what_the_other_steps_dropped():
    texts = [*MIXED, *CORPUS, *VERY_SHORT, *SHORT_FOREIGN]
    on, off = DialectLangId(), DialectLangId(lexicon=False)
    with_lexicon, without = _decisions(on, texts, batch=True), _decisions(off, texts, batch=True)
    rescued = 0
    for (reason, meta, metrics), other in zip(with_lexicon, without, strict=True):
        if meta.get("lang_rescue") == "lexicon":
            rescued += 1
            assert reason is None and other[0] is not None
        else:
            assert (reason, meta, metrics) == other
    assert rescued == len(VERY_SHORT)


def test_a_candidate_without_word_frequencies_is_reported_on_first_use():
    flt = DialectLangId(candidates=["fr", "en", "oc"])  # py3langid knows Occitan, wordfreq does not
    with pytest.raises(ValueError, match="wordfreq has no word list for oc"):
        flt.drop_reason_batch([Document("Los enfants jògan dins lo parc.")])
    assert (
        DialectLangId(candidates=["fr", "en", "oc"], lexicon=False).drop_reason(Document(REPORTED[0])) is None
    )


def test_a_process_that_reads_the_word_table_does_not_import_wordfreq():
    lexicon.lexicon(tuple(CANDIDATES))  # the table in this session's cache (QCKIT_CACHE, inherited)
    code = (
        "import sys\n"
        "from qckit.components import Document\n"
        "from qckit_builtins.filters.dialect_langid import DialectLangId\n"
        "doc = Document('On verra ben.')\n"
        "assert DialectLangId().drop_reason(doc) is None and doc.meta['lang_rescue'] == 'lexicon'\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('wordfreq', 'langcodes')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_batch_of_votes_is_each_vote(flt):
    texts = [*VERY_SHORT, *SHORT_FOREIGN, "", "12345 67890", "x" * 40 + " verra", *CORPUS]
    lex = lexicon.lexicon(flt.candidates)
    assert lex.votes(texts) == [lex.vote(text) for text in texts]
    assert lex.votes(texts[::-1]) == lex.votes(texts)[::-1]
