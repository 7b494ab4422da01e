"""The C marker matcher (``qckit_builtins._markerscan``) against its reference, ``MarkerList.find``."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qckit.components import Document
from qckit_builtins import accelerated
from qckit_builtins.filters.dialect import (
    _FOLD_OTHER,
    MarkerList,
    QuebecMarkers,
    _fold_tables,
    builtin_markers,
    fold_words,
)

pytestmark = pytest.mark.skipif(accelerated.markerscan is None, reason="qckit_builtins._markerscan not built")

# a one-word shield that also starts a phrase, shields inside phrases, stems of several lengths (one a
# prefix of another, one a vocabulary word), a word longer than 16 letters, digits, letters that fold
_CUSTOM = (
    "pis\n-pis aller\n-chose\nchose pas mal bizarre\nchose\nanticonstitutionnellement\n"
    "débarbouillettesxyz*\ntabarn*\nta*\ntab*\na b c d e f\n123\nécœurant\nfin de semaine\n-fin\n"
    "tant\n-tant pis\nc'est plate\n-c'est plate pareil\nstraße\nmaudit*\nmaudit\n"
)
_WORDS = [
    "pis", "Pis", "PIS", "tsé", "TSÉ", "tse\u0301", "e\u0301cœurant", "pi\u0308s",
    "icitte", "pantoute", "char", "chum", "tant pis",
    "Tant  Pis", "c'est plate", "C’EST PLATE", "c’est plate pareil", "pis aller", "chose", "chose pas mal",
    "chose pas mal bizarre", "a b c d e f", "a b c", "tabarnak", "tabarouette", "ta", "tab", "taber",
    "écœurant", "ÉCŒURANT", "ecoeurant", "straße", "STRASSE", "maudit", "mauditement", "fin de semaine",
    "fin", "123", "1234", "anticonstitutionnellement", "débarbouillettesxyzw", "poutines", "magasiner",
    "dépanneur", "à matin", "y fait frette", "bébelle", "bebelles", "kétaine",
]  # fmt: skip
_CHARS = (
    "aAzZ09éÉèàçÇôÔœŒæÆßẞñ\u0301\u0327\u0308'’-_.,!?«» \u00a0\u2009\u202f\u3000\t\n\r\x0b\x0c\x1c\x85"
    "\u2028\x00ﬁﬃǆ½²ⅷİı\u0345Ω\ud800\udfff😀𝐀\U00010400"
)
_pieces = st.one_of(st.sampled_from(_WORDS), st.text(alphabet=_CHARS, max_size=6), st.text(max_size=4))
_texts = st.lists(
    st.lists(_pieces, max_size=12).flatmap(lambda parts: st.sampled_from([" ", "", "-", "'", "\u00a0"]).map(
        lambda sep: sep.join(parts)
    )),
    max_size=12,
)  # fmt: skip
_settings = settings(
    max_examples=150,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def custom(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("markers") / "custom.txt"
    path.write_text(_CUSTOM, encoding="utf-8")
    return str(path)


def _needs_python(text: str) -> bool:
    fold = _fold_tables()[0]
    return any(ord(c) > 0xFFFF or fold[ord(c)] == _FOLD_OTHER for c in text)


def _assert_like_find(markers: MarkerList, texts: list[str]) -> None:
    assert accelerated.markerscan is not None
    matcher = markers.scan_matcher(accelerated.markerscan)
    counts, words, found, slow = matcher.find_all(texts)
    assert slow == [k for k, text in enumerate(texts) if _needs_python(text)]
    # count_all: find's count, the part of it flagged (all, none) and the folded words (dialect_langid's)
    n_entries = len(_entries(markers))
    only_counts, all_flagged, tokens, count_slow = matcher.count_all(texts, b"\x01" * n_entries)
    assert matcher.count_all(texts, bytes(n_entries))[1] == [0] * len(texts)
    assert count_slow == slow
    for k, text in enumerate(texts):
        if k in slow:
            assert found[k] is None
            assert (only_counts[k], all_flagged[k], tokens[k]) == (0, 0, 0)
        else:
            assert (counts[k], words[k], found[k]) == markers.find(text), repr(text)
            assert (only_counts[k], all_flagged[k], tokens[k]) == (
                counts[k],
                counts[k],
                len(fold_words(text)),
            )


def _entries(markers: MarkerList) -> set[str]:
    phrases = {label for options in markers.phrases.values() for _, label in options if label is not None}
    return set(markers.words.values()) | set(markers.stems.values()) | phrases


def test_count_all_counts_the_flagged_entries_apart():
    words = ["pis", "tsé", "icitte", "char"]  # entries in sorted order: char, icitte, pis, tsé
    markers = MarkerList("\n".join(words), "<words>")
    assert accelerated.markerscan is not None
    matcher = markers.scan_matcher(accelerated.markerscan)
    counts, flagged, tokens, slow = matcher.count_all(["pis tsé pis, mon char", "rien"], bytes([0, 0, 1, 0]))
    assert (counts, flagged, tokens, slow) == ([4, 0], [2, 0], [5, 1], [])
    with pytest.raises(ValueError, match="one byte per entry"):
        matcher.count_all(["pis"], bytes(3))


@_settings
@given(texts=_texts)
def test_like_find_with_the_builtin_list(texts):
    _assert_like_find(builtin_markers(), texts)


@_settings
@given(texts=_texts)
def test_like_find_with_stems_phrases_and_shields(custom, texts):
    _assert_like_find(QuebecMarkers(markers_file=custom).markers, texts)


def test_like_find_on_varied_texts(custom, varied_texts):
    for markers in (builtin_markers(), QuebecMarkers(markers_file=custom).markers):
        _assert_like_find(markers, list(varied_texts))


@pytest.mark.parametrize("stems", [["abcdefghijkl*"], ["abcdefghij*", "abcdefghijklmno*"], ["abcdefghi*"]])
def test_a_list_whose_stems_are_all_longer_than_eight_letters(tmp_path, stems):
    path = tmp_path / "long_stems.txt"
    path.write_text("\n".join([*stems, "pis"]) + "\n", encoding="utf-8")
    texts = ["xx abcdefghijklmnop yy", "abcdefghij abcdefghijk", "abcdefghi pis abcdefghijklmno", "abcdefgh"]
    _assert_like_find(MarkerList(path.read_text(encoding="utf-8"), str(path)), texts)


def test_large_list_and_long_tokens(tmp_path):
    # more words, stems and phrases than any starting table size; tokens far longer than any entry
    words = [f"mot{i}x" for i in range(3000)]
    lines = (
        words
        + [f"rac{i}ine*" for i in range(300)]
        + [f"{w} {v}" for w, v in zip(words, words[1:], strict=False)]
    )
    lines += [f"-{w} {w}" for w in words[::7]]
    markers = MarkerList("\n".join(lines))
    texts = [
        " ".join(words[100:140]) + " rac12inesse " + "z" * 5000 + " mot1x" + "q" * 3000,
        "mot5x mot5x mot6x mot7x rac299ine rac2ine2",
        "a" * 100_000,
    ]
    _assert_like_find(markers, texts)


def _tagged(flt: QuebecMarkers, texts: list[str], how: str) -> tuple[list, list]:
    docs = [Document(t) for t in texts]
    reasons = list(map(flt.drop_reason, docs)) if how == "one by one" else flt.drop_reason_batch(docs)
    return reasons, [(d.metrics, list(d.metrics), d.meta) for d in docs]


@pytest.mark.parametrize("min_density", [0.0, 40.0])
@_settings
@given(texts=_texts)
def test_batch_with_and_without_the_accelerator(custom, monkeypatch, min_density, texts):
    for flt in (QuebecMarkers(min_density=min_density), QuebecMarkers(min_density, markers_file=custom)):
        accelerated_run = _tagged(flt, texts, "batch")
        with monkeypatch.context() as patch:
            patch.setattr(accelerated, "markerscan", None)
            numpy_run = _tagged(flt, texts, "batch")
        assert accelerated_run == numpy_run == _tagged(flt, texts, "one by one")


def test_bad_matcher_input_is_refused():
    scan = accelerated.markerscan
    assert scan is not None
    fold, first, second = (table.tobytes() for table in _fold_tables())
    with pytest.raises(ValueError, match="ASCII"):
        scan.matcher(["é"], [-1], [], [], (), fold, first, second)
    with pytest.raises(ValueError, match="out of range"):
        scan.matcher(["a"], [3], [], [], ("x",), fold, first, second)
    with pytest.raises(ValueError, match="out of range"):
        scan.matcher(["a"], [-1], [], [((1,), -1)], (), fold, first, second)
    with pytest.raises(ValueError, match="BMP"):
        scan.matcher([], [], [], [], (), fold[:10], first, second)
    matcher = scan.matcher(["a"], [0], [], [], ("a",), fold, first, second)
    with pytest.raises(TypeError):
        matcher.find_all(["a", 3])


def test_tag_all_sets_metrics_and_meta_like_drop_reason(custom, monkeypatch):
    # counts and word counts past the shared small floats, metrics already there (their order kept),
    # a document the C side leaves to drop_reason, densities on both sides of the threshold
    texts = [
        "pis " * 1500,
        "mot " * 2000 + "pis",
        "😀 pis icitte",
        "",
        "tant pis, c'est plate pareil",
        "chose pas mal bizarre chose",
    ]
    for flt in (QuebecMarkers(min_density=5.0), QuebecMarkers(markers_file=custom)):
        runs = []
        for how in ("C", "numpy", "one by one"):
            docs = [Document(t, metrics={"other": 2.0, "qc_words": 1.0}, meta={"x": 1}) for t in texts]
            with monkeypatch.context() as patch:
                if how == "numpy":
                    patch.setattr(accelerated, "markerscan", None)
                reasons = (
                    list(map(flt.drop_reason, docs)) if how == "one by one" else flt.drop_reason_batch(docs)
                )
            runs.append((reasons, [(d.metrics, list(d.metrics), d.meta, list(d.meta)) for d in docs]))
        assert runs[0] == runs[1] == runs[2]
    assert runs[0][1][0][0]["qc_markers"] == 1500.0


def test_tag_all_leaves_slow_documents_and_refuses_bad_input():
    scan = accelerated.markerscan
    assert scan is not None
    matcher = builtin_markers().scan_matcher(scan)
    keys = ("a", "b", "c", "d")
    docs = [Document("pis 😀"), Document("pis pis"), Document("rien")]
    below, slow = matcher.tag_all(docs, keys, 1000.0)
    assert (below, slow) == ([2], [0])
    assert docs[0].metrics == {} and docs[0].meta == {}
    assert docs[1].metrics == {"a": 2.0, "b": 2.0, "c": 1.0} and docs[1].meta == {"d": ["pis"]}
    assert list(docs[2].metrics.values()) == [0.0, 1.0, 0.0] and docs[2].meta == {"d": []}
    with pytest.raises(ValueError, match="4 str"):
        matcher.tag_all(docs, keys[:3], 0.0)
    with pytest.raises(AttributeError):
        matcher.tag_all([object()], keys, 0.0)
    with pytest.raises(TypeError, match="not a str"):
        matcher.tag_all([Document(3)], keys, 0.0)  # type: ignore[arg-type]
    bad = Document("pis")
    bad.metrics = None  # type: ignore[assignment]
    with pytest.raises(TypeError, match="not a dict"):
        matcher.tag_all([bad], keys, 0.0)
