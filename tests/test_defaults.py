"""The default component lists (qckit/defaults.py) as a user meets them: the seed's filters with its bugs fixed."""

from __future__ import annotations

from qckit.prepare import prepare_texts


def _kept(texts: list[str]) -> list[str]:
    result = prepare_texts(texts, {"prepare": {"splitter": {"use": "random", "val_split": 0.0}}})
    return [d.text for d in result.train + result.val]


def test_default_normalization_keeps_french_typography():
    # the seed's NFKC turned these non-breaking spaces into plain spaces and could fold œ
    texts = [
        "«\u00a0Allô, c’est moi pis mon chum\u00a0!\u00a0» a dit la voisine au dépanneur.",
        "Le cœur de l’œuvre bat encore ce soir à Montréal\u202f: venez nombreux.",
    ]
    assert _kept(texts) == texts


def test_default_pipeline_drops_exact_duplicates_and_keeps_the_first_copy():
    first = "Y fait frette à matin, mets ta tuque pis tes mitaines avant de sortir."
    texts = [first, "Une autre phrase assez longue pour rester dans le corpus final.", first.upper()]
    assert _kept(texts) == texts[:2]
