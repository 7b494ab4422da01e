"""The Quebec French marker tagger and its density threshold."""

from __future__ import annotations

import pickle

import pytest

from qckit.components import Document
from qckit_builtins.filters.dialect import MarkerList, QuebecMarkers, builtin_markers


def tag(text: str, **kwargs) -> tuple[str | None, Document]:
    doc = Document(text)
    return QuebecMarkers(**kwargs).drop_reason(doc), doc


def test_builtin_list_is_large_enough():
    assert len(builtin_markers()) >= 80


def test_counts_markers_words_and_lists_distinct_entries():
    reason, doc = tag(
        "Pis, y fait frette à matin, tsé. Mon chum a parqué son char au dépanneur, pis c'est tout."
    )
    assert reason is None
    assert doc.metrics["qc_markers"] == 8  # pis ×2, y fait frette, à matin, tsé, chum, char, dépanneur
    assert doc.metrics["qc_words"] == 18
    assert doc.metrics["qc_docs_with_markers"] == 1
    assert doc.meta["qc_markers"] == ["char", "chum", "dépanneur", "pis", "tsé", "y fait frette", "à matin"]


def test_case_accents_and_apostrophes_do_not_matter():
    for text in [
        "C’est plate en TABARNAK, pantoute!",
        "c'est plate en tabarnak, PANTOUTE!",
        "C'EST PLATE EN TABARNAK PANTOUTE",
    ]:
        _, doc = tag(text)
        assert doc.meta["qc_markers"] == ["c'est plate", "pantoute", "tabarnak"]
    _, doc = tag("C'est ecoeurant, pis ÉCŒURANT aussi, tse")
    assert doc.meta["qc_markers"] == ["pis", "tsé", "écoeurant"]
    assert doc.metrics["qc_markers"] == 4


def test_whole_words_stems_and_shields():
    _, doc = tag("Je vais au magasin acheter une charrue et des chariots.")
    assert doc.metrics["qc_markers"] == 0  # "magasin", "charrue" are not "magasiner", "char"
    _, doc = tag("On s'est pognés avec des bibittes pis des maringouins.")
    assert doc.meta["qc_markers"] == ["bibitte", "maringouin", "pis", "pogne"]
    _, doc = tag("Tant pis, de mal en pis. Le char d'assaut avance.")
    assert doc.metrics["qc_markers"] == 0
    assert doc.meta["qc_markers"] == []


def test_density_threshold_drops_standard_french_only_when_asked():
    standard = "Il fait froid ce matin, mon ami a garé sa voiture devant la boutique du coin."
    quebec = "Y fait frette à matin, mon chum a parqué son char devant le dépanneur du coin."
    assert tag(standard)[0] is None  # default: tag only
    assert tag(standard, min_density=50)[0] == "below_dialect_density"
    assert tag(quebec, min_density=50)[0] is None  # 5 markers in 15 words ≈ 333 per 1000
    assert tag("", min_density=1)[0] == "below_dialect_density"


def test_summary_gives_corpus_density():
    flt = QuebecMarkers()
    sums: dict[str, float] = {}
    for text in ["Pis, tsé, c'est correct.", "Bonjour à tous et à toutes.", "Mon chum est là."]:
        doc = Document(text)
        flt.drop_reason(doc)
        for key, value in doc.metrics.items():
            sums[key] = sums.get(key, 0.0) + value
    summary = flt.summary(sums)
    assert summary["qc_density_per_1k_words"] == pytest.approx(1000 * 3 / 14)  # 3 markers in 4 + 6 + 4 words
    assert summary["qc_docs_with_markers"] == 2
    assert flt.summary({}) == {"qc_density_per_1k_words": 0.0, "qc_docs_with_markers": 0.0}


def test_custom_marker_file(tmp_path):
    path = tmp_path / "acadien.txt"
    path.write_text("# Acadian French\nasteure\nicitte\nchiac*\n-pas icitte\n", encoding="utf-8")
    _, doc = tag("Asteure on parle chiac icitte, mais pas icitte.", markers_file=str(path))
    assert doc.meta["qc_markers"] == ["asteure", "chiac", "icitte"]
    assert doc.metrics["qc_markers"] == 3


def test_bad_settings_and_files(tmp_path):
    with pytest.raises(ValueError, match="min_density must be at least 0"):
        QuebecMarkers(min_density=-1)
    with pytest.raises(ValueError, match="cannot read"):
        QuebecMarkers(markers_file=str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match=r"bad\.txt:2: cannot use marker entry"):
        MarkerList("ok\ntwo words*\n", "bad.txt")


def test_survives_pickle():
    flt = QuebecMarkers(min_density=10)
    clone = pickle.loads(pickle.dumps(flt))
    for text in ["Pis, tsé, c'est correct.", "Bonjour à tous et à toutes."]:
        a, b = Document(text), Document(text)
        assert clone.drop_reason(a) == flt.drop_reason(b)
        assert (a.meta, a.metrics) == (b.meta, b.metrics)


def _assert_batch_like_one_by_one(flt: QuebecMarkers, batch: list[str]) -> None:
    one, many = [Document(t) for t in batch], [Document(t) for t in batch]
    assert flt.drop_reason_batch(many) == [flt.drop_reason(d) for d in one]
    for a, b in zip(one, many, strict=True):
        assert (a.meta, a.metrics) == (b.meta, b.metrics), a.text
        assert list(a.metrics) == list(b.metrics)  # same keys in the same order


@pytest.mark.parametrize("min_density", [0.0, 50.0])
def test_batch_gives_what_one_by_one_gives(min_density, varied_batches):
    flt = QuebecMarkers(min_density=min_density)
    for batch in varied_batches:
        _assert_batch_like_one_by_one(flt, batch)


def test_batch_with_a_custom_list_of_tricky_entries(tmp_path, varied_batches):
    # a one-word shield that also starts a phrase, a word and a stem longer than 16 letters, a long
    # phrase, digits, an entry whose letters fold (œ, accents)
    path = tmp_path / "tricky.txt"
    path.write_text(
        "pis\n-pis aller\n-chose\nchose pas mal bizarre\nchose\nanticonstitutionnellement\n"
        "débarbouillettesxyz*\ntabarn*\nta*\na b c d e f\n123\nécœurant\nfin de semaine\n-fin\n",
        encoding="utf-8",
    )
    flt = QuebecMarkers(markers_file=str(path))
    texts = [
        "Pis aller, chose pas mal bizarre, chose, Chose PAS mal, a b c d e f g, a b c d e",
        "ANTICONSTITUTIONNELLEMENT anticonstitutionnellements debarbouillettesxyzw tabarnak tabarouette ta",
        "123 1234 écoeurant ÉCŒURANT fin de semaine fin de la semaine",
    ]
    _assert_batch_like_one_by_one(flt, texts)
    _, doc = tag(texts[0], markers_file=str(path))
    assert doc.meta["qc_markers"] == ["a b c d e f", "chose pas mal bizarre"]
    for batch in varied_batches[-30:]:
        _assert_batch_like_one_by_one(flt, batch)
