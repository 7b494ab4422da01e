"""Built-in cleaners: URLs, e-mail addresses, repeated punctuation."""

from __future__ import annotations

import pickle
import re

import pytest

from qckit_builtins.normalizers.cleaners import CollapsePunctuation, StripEmails, StripUrls

# The pattern of the seed script (the classic one found in many tutorials). Its "[$-_@.&+]" is a range
# from "$" to "_", which takes in digits, capitals and most punctuation by accident.
SEED_URL = re.compile(r"http[s]?://(?:[a-zA-Z]|[0-9]|[$-_@.&+]|[!*\(\),]|(?:%[0-9a-fA-F][0-9a-fA-F]))+")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Voir https://exemple.ca/page, pis reviens.", "Voir, pis reviens."),
        ("(voir https://exemple.ca).", "(voir)."),
        ("Allez sur www.exemple.qc.ca/été?x=1&y=2#haut. Merci!", "Allez sur. Merci!"),
        ("https://fr.wikipedia.org/wiki/Québec_(ville) est belle", "est belle"),
        ("texte https://a.com ftp://b.org/f.txt fin", "texte fin"),
        ("«\u00a0https://x.ca\u00a0»", "«\u00a0»"),
        ("HTTP://EXEMPLE.CA!", "!"),
    ],
)
def test_urls_removed_and_sentence_punctuation_kept(text, expected):
    assert StripUrls().normalize(text) == expected


def test_seed_pattern_ate_punctuation_where_ours_does_not():
    text = "Voir https://exemple.ca/page, pis (aussi https://exemple.ca/b). Fin"
    # The seed's pattern swallows the comma and the ")." after the URLs …
    assert SEED_URL.sub("", text) == "Voir  pis (aussi  Fin"
    # … ours leaves the sentence intact.
    assert StripUrls().normalize(text) == "Voir, pis (aussi). Fin"
    # The seed also stopped at the first accented letter and missed "www." addresses.
    assert SEED_URL.sub("", "https://exemple.ca/été ok") == "été ok"
    assert StripUrls().normalize("https://exemple.ca/été ok") == "ok"
    assert StripUrls().normalize("www.exemple.ca ok") == "ok"


def test_url_replacement_token():
    assert (
        StripUrls("<url>").normalize("Voir https://exemple.ca/page, pis reviens.")
        == "Voir <url>, pis reviens."
    )


def test_text_without_url_is_the_same_object():
    for text in ["Bonjour, ça va?", "pas d'url: http:// seul", "a.www.b", "ouvert 24h/7"]:
        assert StripUrls().normalize(text) is text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Écrivez à marie.tremblay@exemple.qc.ca.", "Écrivez à."),
        ("courriel d'info@cegep.qc.ca, merci", "courriel d', merci"),
        ("mailto:jean@x.com svp", "svp"),
        ("Émile_B+2@sous-domaine.exemple.com!", "!"),
    ],
)
def test_emails_removed(text, expected):
    assert StripEmails().normalize(text) == expected


def test_email_replacement_and_non_addresses():
    assert StripEmails("<courriel>").normalize("Écrivez à jean@x.ca.") == "Écrivez à <courriel>."
    for text in ["a @ b", "jean@localhost", "x@y.c", "@pseudo salut", "Bonjour"]:
        assert StripEmails().normalize(text) is text


def test_collapse_punctuation_seed_behaviour():
    collapse = CollapsePunctuation()
    assert collapse.normalize("Wow!!! Quoi??? Bon.... Oui.. Hein?!") == "Wow! Quoi? Bon. Oui. Hein?!"
    text = "Rien à faire. Vraiment!"
    assert collapse.normalize(text) is text


def test_collapse_punctuation_can_keep_ellipsis():
    collapse = CollapsePunctuation(keep_ellipsis=True)
    assert collapse.normalize("Bon.... Bof... Oui.. Wow!!!") == "Bon... Bof... Oui. Wow!"


def test_cleaners_survive_pickle():
    for component in (StripUrls("<url>"), StripEmails(), CollapsePunctuation(keep_ellipsis=True)):
        clone = pickle.loads(pickle.dumps(component))
        sample = "Voir https://x.ca, ou jean@x.ca!!! Bon...."
        assert clone.normalize(sample) == component.normalize(sample)


@pytest.mark.parametrize(
    "cleaner",
    [
        StripUrls(),
        StripUrls("<url>"),
        StripEmails(),
        StripEmails("<courriel>"),
        CollapsePunctuation(),
        CollapsePunctuation(keep_ellipsis=True),
    ],
    ids=lambda c: f"{c.name}-{vars(c)}",
)
def test_batch_gives_what_one_by_one_gives(cleaner, varied_batches):
    for batch in varied_batches:
        out = cleaner.normalize_batch(batch)
        assert out == [cleaner.normalize(t) for t in batch]
        assert all(new is old for new, old in zip(out, batch, strict=True) if new == old)


def test_bounded_search_removes_exactly_what_sub_removes(varied_texts):
    # The cleaners search for the next URL or address from a bound found with str.find instead of trying
    # every position; what they remove must stay exactly what re.sub removes.
    from qckit_builtins.normalizers import cleaners

    tricky = [
        "a  https://x.ca b\u00a0\u00a0HTTP://y.ca/(z) c",
        "xxhttps://a.b zz ſhttp://c.d, ftp://e.f/g.txt. fin",
        "voir www.a.ca, WwW.b.qc.ca et x.www.c.ca ou @www.d.ca",
        "https://a.ca/?u=http://b.ca www. nope :// nope",
        "courriel :  mailto:Marie.T@ex.qc.ca,  x@y.com. @ seul, a@b, d'info@cegep.qc.ca",
        "a@b@c.ca et  ΜΑΡΙΑ@παράδειγμα.gr  et jean_pierre+tag@sub.domaine.ca!",
    ]
    for text in [*varied_texts, *tricky]:
        for pattern, bound in [
            (cleaners._URL_RE_SPACED, cleaners._url_bound),
            (cleaners._URL_RE, cleaners._url_bound),
            (cleaners._EMAIL_RE_SPACED, cleaners._email_bound),
            (cleaners._EMAIL_RE, cleaners._email_bound),
        ]:
            for replacement in ("", "<x>", r"[\g<0>]"):
                expected = cleaners._replace(pattern, text, replacement)
                assert cleaners._replace(pattern, text, replacement, bound) == expected, (text, pattern)
