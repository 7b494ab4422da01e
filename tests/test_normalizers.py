"""Built-in normalizers: Unicode form, mojibake, control characters, whitespace, ligatures."""

from __future__ import annotations

import pickle
import unicodedata

import pytest

from qckit_builtins import normalizers
from qckit_builtins.normalizers import (
    ControlCharsNormalizer,
    FoldLigaturesNormalizer,
    MojibakeNormalizer,
    UnicodeNormalizer,
    WhitespaceNormalizer,
    cleaners,
    looks_like_mojibake,
)
from qckit_builtins.normalizers import text as text_normalizers

CLEAN_FRENCH = [
    "pâte",
    "Ça va?",
    "Où est le dépanneur?",
    "«\u00a0Allô\u00a0»",
    "cœur",
    "C’est l’été à Montréal\u202f!",
    "Château, ÂGE, naïve, Noël, Ève, Île, Ô Canada",
    "Ça coûte 5\u00a0€ — pas cher… “oui” ‘non’ – fin",
]


def test_builtin_normalizers_are_registered_by_their_hooks():
    registered: list[type] = []
    normalizers.register_normalizers(registered.append)
    names = {cls.name for cls in registered}
    assert names == {
        "unicode",
        "mojibake",
        "control_chars",
        "whitespace",
        "fold_ligatures",
        "strip_urls",
        "strip_emails",
        "collapse_punctuation",
    }


def test_unicode_nfc_composes_and_keeps_french_spaces():
    decomposed = "e\u0301te\u0301 a\u0300\u00a0Montre\u0301al\u202f!"
    assert UnicodeNormalizer().normalize(decomposed) == "été à\u00a0Montréal\u202f!"


def test_unicode_returns_the_same_object_when_already_normalized():
    text = "Déjà «\u00a0normal\u00a0»"
    assert UnicodeNormalizer().normalize(text) is text


def test_unicode_nfkc_turns_nonbreaking_spaces_into_plain_spaces():
    # This is why NFC is the default: NFKC loses French typography.
    text = "«\u00a0Allô\u00a0» dit-il\u202f!"
    assert UnicodeNormalizer("NFKC").normalize(text) == "« Allô » dit-il !"
    assert UnicodeNormalizer("NFD").normalize("é") == unicodedata.normalize("NFD", "é")


def test_unicode_rejects_unknown_form():
    with pytest.raises(ValueError, match="form must be one of"):
        UnicodeNormalizer("NFX")


@pytest.mark.parametrize(
    ("broken", "fixed"),
    [
        ("CafÃ© Ã  MontrÃ©al", "Café à Montréal"),
        ("câ€™est", "c’est"),  # the curly apostrophe is repaired and kept, not straightened
        ("l\x92homme", "l’homme"),  # a Windows-1252 byte read as Latin-1
        ("Ã‰tÃ© Ã  QuÃ©bec, Ã§a va? Å“uvre", "Été à Québec, ça va? œuvre"),
    ],
)
def test_mojibake_is_repaired(broken, fixed):
    assert MojibakeNormalizer().normalize(broken) == fixed


@pytest.mark.parametrize("original", CLEAN_FRENCH)
def test_mojibake_round_trip_through_wrong_decodings(original):
    for encoding in ("latin-1", "cp1252"):
        try:
            broken = original.encode("utf-8").decode(encoding)
        except UnicodeDecodeError:
            continue  # cp1252 has holes
        assert looks_like_mojibake(broken)
        assert MojibakeNormalizer().normalize(broken) == original


@pytest.mark.parametrize("text", CLEAN_FRENCH)
def test_clean_french_is_not_flagged_and_comes_back_identical(text):
    assert not looks_like_mojibake(text)
    assert MojibakeNormalizer().normalize(text) is text
    # Even when ftfy runs on everything, clean French is left alone.
    assert MojibakeNormalizer(check_only_flagged=False).normalize(text) == text


def test_control_chars_removed_but_tab_newline_and_nbsp_kept():
    text = "a\x00b\tc\nd\u200be\ufefff\u00adg\x7fh\u00a0i\u202fj"
    assert ControlCharsNormalizer().normalize(text) == "ab\tc\ndefgh\u00a0i\u202fj"


def test_control_chars_never_glue_words_together():
    assert (
        ControlCharsNormalizer().normalize("un\r\ndeux\rtrois\x0cquatre\x85cinq")
        == "un\ndeux\ntrois quatre cinq"
    )


def test_control_chars_same_object_when_clean():
    text = "Rien à enlever\u00a0!"
    assert ControlCharsNormalizer().normalize(text) is text


def test_whitespace_collapses_runs_and_strips():
    assert WhitespaceNormalizer().normalize("  Bonjour \t le\n\n monde  ") == "Bonjour le monde"


def test_whitespace_keeps_french_nonbreaking_spaces_by_default():
    text = "Il a dit\u00a0: «\u00a0Allô\u00a0»\u202f!"
    assert WhitespaceNormalizer().normalize(text) is text
    assert WhitespaceNormalizer().normalize("Quoi  \u00a0?") == "Quoi \u00a0?"


def test_whitespace_can_treat_nbsp_as_space():
    assert (
        WhitespaceNormalizer(keep_nbsp=False).normalize("dit\u00a0: «\u00a0 Allô\u00a0»") == "dit : « Allô »"
    )


def test_whitespace_strips_nbsp_at_the_ends_and_returns_same_object_when_clean():
    assert WhitespaceNormalizer().normalize("\u00a0Bonjour\u00a0") == "Bonjour"
    text = "déjà propre"
    assert WhitespaceNormalizer().normalize(text) is text


def test_fold_ligatures_is_explicit_and_handles_capitals():
    fold = FoldLigaturesNormalizer()
    assert fold.normalize("cœur, Œuvre, ŒUVRE, Lætitia, Æ") == "coeur, Oeuvre, OEUVRE, Laetitia, Ae"
    text = "sans ligature"
    assert fold.normalize(text) is text


def test_normalizers_survive_pickle():
    for component in (
        UnicodeNormalizer("NFKC"),
        MojibakeNormalizer(),
        ControlCharsNormalizer(),
        WhitespaceNormalizer(keep_nbsp=False),
        FoldLigaturesNormalizer(),
    ):
        clone = pickle.loads(pickle.dumps(component))
        sample = "  CafÃ©\u00a0\x00 cœur\u00a0!  "
        assert clone.normalize(sample) == component.normalize(sample)
        assert vars(clone) == vars(component)


# -- batch methods: exactly what the per-document method gives -----------------------------------------

BATCH_NORMALIZERS = [
    UnicodeNormalizer(),
    UnicodeNormalizer("NFKC"),
    UnicodeNormalizer("NFD"),
    UnicodeNormalizer("NFKD"),
    MojibakeNormalizer(),
    ControlCharsNormalizer(),
    WhitespaceNormalizer(),
    WhitespaceNormalizer(keep_nbsp=False),
    FoldLigaturesNormalizer(),
]


@pytest.mark.parametrize("normalizer", BATCH_NORMALIZERS, ids=lambda n: f"{n.name}-{vars(n)}")
def test_batch_gives_what_one_by_one_gives(normalizer, varied_batches):
    for batch in varied_batches:
        before = list(batch)
        out = normalizer.normalize_batch(batch)
        assert out == [normalizer.normalize(t) for t in batch]
        assert batch == before  # the input list is left alone
        # a text the normalizer leaves alone comes back as the same object, as one by one
        assert all(new is old for new, old in zip(out, batch, strict=True) if new == old)


def test_mojibake_batch_checking_everything(varied_texts):
    normalizer = MojibakeNormalizer(check_only_flagged=False)
    texts = list(varied_texts[::5])
    assert normalizer.normalize_batch(texts) == [normalizer.normalize(t) for t in texts]


def test_default_chain_in_batches_gives_what_one_by_one_gives(varied_batches):
    # The batch methods share what they learn about a batch from one normalizer to the next.
    chain = [
        UnicodeNormalizer(),
        MojibakeNormalizer(),
        ControlCharsNormalizer(),
        cleaners.StripUrls(),
        cleaners.StripEmails(),
        cleaners.CollapsePunctuation(),
        WhitespaceNormalizer(),
        FoldLigaturesNormalizer(),
    ]
    for batch in varied_batches[-40:]:
        batched, single = batch, batch
        for normalizer in chain:
            batched = normalizer.normalize_batch(batched)
            single = [normalizer.normalize(t) for t in single]
            assert batched == single


def test_batch_sees_a_list_changed_in_place_between_calls():
    whitespace, control = WhitespaceNormalizer(), ControlCharsNormalizer()
    texts = ["déjà propre", "b\x07"]
    assert control.normalize_batch(texts) == ["déjà propre", "b"]
    texts[0] = "deux  espaces\x07"  # same list object, new text
    assert whitespace.normalize_batch(texts) == ["deux espaces\x07", "b\x07"]
    assert control.normalize_batch(texts) == ["deux  espaces", "b"]


def test_our_ftfy_loop_gives_what_ftfy_fix_text_gives(varied_texts):
    import ftfy

    broken = [t.encode("utf-8").decode("cp1252", "replace") for t in varied_texts[:400]]
    twice = [t.encode("utf-8").decode("latin-1") for t in broken[:100]]
    lines = ["\n".join(varied_texts[i : i + 3]) for i in range(0, 300, 3)]
    for text in [*varied_texts, *broken, *twice, *lines]:
        assert text_normalizers._fix_text(text) == ftfy.fix_text(text, text_normalizers._FTFY_CONFIG)
