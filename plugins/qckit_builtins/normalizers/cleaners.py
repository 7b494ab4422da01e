"""Built-in cleaners: URL and e-mail removal, collapse of repeated punctuation.

Cleaners are normalizers (``normalize(text) -> str``, the same object when unchanged) registered
through ``register_normalizers``. Each one looks for a cheap sign first (``"://"``, ``"@"``,
``".."``) and only then runs its regular expression.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import ClassVar

from qckit_builtins._batch import apply, containing

# A URL: a scheme (http, https, ftp) or "www.", then anything up to whitespace, quotes or angle
# brackets. Parentheses are taken only in balanced pairs ("…/Québec_(ville)"), and the last character
# may not be sentence punctuation, so "voir https://exemple.ca/page, puis…" keeps its comma and
# "(https://exemple.ca)." keeps ")." — the seed's pattern, with its accidental "[$-_]" range, took them.
_URL_CHAR = r"[^\s()<>\"«»“”‘’\[\]{}|\\^`]"
_URL_END = r"[^\s()<>\"«»“”‘’\[\]{}|\\^`.,;:!?'…*]"
_URL_BODY = rf"(?:\({_URL_CHAR}*\)|{_URL_CHAR})*(?:\({_URL_CHAR}*\)|{_URL_END})"
_URL = rf"(?:(?:https?|ftp)://|(?<![\w.@/-])www\.){_URL_BODY}"
_URL_RE = re.compile(_URL, re.IGNORECASE)
# With an empty replacement, the spaces before the URL go too ("voir https://x.ca." → "voir.").
_URL_RE_SPACED = re.compile(r"[ \t\u00a0\u202f]*" + _URL, re.IGNORECASE)


# The cheap signs each cleaner looks for first: a text without any is returned as it is.
_URL_SIGNS = ("://", "www.", "WWW.")
_EMAIL_SIGNS = ("@",)
_REPEAT_SIGNS = ("..", "!!", "??")


def _apply_where(texts: Sequence[str], signs: Sequence[str], normalize: Callable[[str], str]) -> list[str]:
    """``[normalize(t) for t in texts]``, running only on the texts that hold one of ``signs``."""
    indices = containing(texts, signs)
    return list(map(normalize, texts)) if indices is None else apply(texts, indices, normalize)


def _replace(
    pattern: re.Pattern[str], text: str, replacement: str, bound: Callable[[str, int], int] | None = None
) -> str:
    """``pattern.sub(replacement, text)``, stripped when ``replacement`` is empty; ``text`` itself if
    nothing matched.

    ``bound(text, pos)`` says where the search for the next match may start: a position at or before the
    start of the first match at or after ``pos``, or -1 when there is none. ``re`` tries a pattern at
    every position, which is slow for these patterns (they start with optional spaces); the bound comes
    from a literal that every match holds ("@", "://") found with ``str.find``.
    """
    if bound is None:
        cleaned = pattern.sub(replacement, text)
    else:
        pieces: list[str] = []
        pos = 0
        expand = "\\" in replacement  # sub() reads escapes in the replacement, as Match.expand does
        while (start := bound(text, pos)) >= 0 and (m := pattern.search(text, start)) is not None:
            pieces += (text[pos : m.start()], m.expand(replacement) if expand else replacement)
            pos = m.end()
        if not pieces:
            return text
        pieces.append(text[pos:])
        cleaned = "".join(pieces)
    if cleaned == text:
        return text
    return cleaned.strip() if not replacement else cleaned


_PREFIX_SPACES = frozenset(" \t\u00a0\u202f")  # what the _SPACED patterns take before a match
_WWW = re.compile(r"[wW][wW][wW]\.")  # "www." as re.IGNORECASE sees it


def _url_bound(text: str, pos: int) -> int:
    """For _replace: every URL match holds "://" at most 5 characters after its scheme starts, or starts
    with "www.", after the spaces that the pattern takes first."""
    starts = []
    scheme = text.find("://", pos)
    if scheme >= 0:
        starts.append(max(scheme - 5, pos))  # "https" is the longest scheme
    www = _WWW.search(text, pos)
    if www is not None:
        starts.append(www.start())
    if not starts:
        return -1
    start = min(starts)
    while start > pos and text[start - 1] in _PREFIX_SPACES:
        start -= 1
    return start


class StripUrls:
    """Removes URLs (recipe: ``use = "strip_urls"``): ``http://``, ``https://``, ``ftp://`` and ``www.``.

    The sentence punctuation after a URL stays: "Voir https://exemple.ca/page, pis reviens." →
    "Voir, pis reviens.". With the default empty ``replacement`` the spaces before each URL are removed
    with it and the result is stripped; a non-empty ``replacement`` (``"<url>"``) takes the URL's place.
    """

    name: ClassVar[str] = "strip_urls"

    def __init__(self, replacement: str = "") -> None:
        self.replacement = str(replacement)

    def normalize(self, text: str) -> str:
        if "://" not in text and "www." not in text and "WWW." not in text:
            return text
        pattern = _URL_RE if self.replacement else _URL_RE_SPACED
        return _replace(pattern, text, self.replacement, _url_bound)

    def normalize_batch(self, texts: Sequence[str]) -> list[str]:
        """``[self.normalize(t) for t in texts]``, running only on the texts holding a cheap sign of a URL."""
        return _apply_where(texts, _URL_SIGNS, self.normalize)


# local-part@domain.tld. The local part has no quotes or apostrophes, so the French elision before an
# address stays ("d'info@cegep.qc.ca" → "d'"); the domain ends with a letters-only top-level domain,
# so a final period stays too.
_EMAIL_LOCAL = r"[\w!#$%&*+/=?^`{|}~-]+(?:\.[\w!#$%&*+/=?^`{|}~-]+)*"
_EMAIL_DOMAIN = r"(?:[^\W_](?:[\w-]*[^\W_])?\.)+[a-zA-Z]{2,63}(?![\w-])"
_EMAIL = rf"(?:mailto:)?(?<![\w.!#$%&*+/=?^`{{|}}~-]){_EMAIL_LOCAL}@{_EMAIL_DOMAIN}"
_EMAIL_RE = re.compile(_EMAIL, re.IGNORECASE)
_EMAIL_RE_SPACED = re.compile(r"[ \t\u00a0\u202f]*" + _EMAIL, re.IGNORECASE)
# Read backwards from the "@": the characters a match may hold before it (spaces, "mailto:", local part).
_BEFORE_AT = re.compile(r"[ \t\u00a0\u202f\w.:!#$%&*+/=?^`{|}~-]*", re.IGNORECASE)


def _email_bound(text: str, pos: int) -> int:
    """For _replace: every e-mail match holds exactly one "@", and only _BEFORE_AT characters before it."""
    at = text.find("@", pos)
    if at < 0:
        return -1
    run = _BEFORE_AT.match(text[at - 1 :: -1] if at else "")
    assert run is not None
    return max(at - run.end(), pos)


class StripEmails:
    """Removes e-mail addresses such as ``marie.tremblay@exemple.qc.ca`` (recipe: ``use = "strip_emails"``).

    ``replacement`` (default empty) takes the place of each address; when it is empty the spaces before
    the address go too and the result is stripped. A ``mailto:`` prefix is removed with the address.
    """

    name: ClassVar[str] = "strip_emails"

    def __init__(self, replacement: str = "") -> None:
        self.replacement = str(replacement)

    def normalize(self, text: str) -> str:
        if "@" not in text:
            return text
        pattern = _EMAIL_RE if self.replacement else _EMAIL_RE_SPACED
        return _replace(pattern, text, self.replacement, _email_bound)

    def normalize_batch(self, texts: Sequence[str]) -> list[str]:
        """``[self.normalize(t) for t in texts]``, running only on the texts holding "@"."""
        return _apply_where(texts, _EMAIL_SIGNS, self.normalize)


_REPEATED = re.compile(r"([.!?])\1+")
_REPEATED_BANG = re.compile(r"([!?])\1+")
_DOTS = re.compile(r"\.{2,}")


def _dots(match: re.Match[str]) -> str:
    return "..." if len(match.group()) >= 3 else "."


class CollapsePunctuation:
    """Collapses repeated ``.``, ``!`` and ``?`` (recipe: ``use = "collapse_punctuation"``), as the seed did:
    "Wow!!!" → "Wow!", "Quoi???" → "Quoi?", "Bon...." → "Bon.". Mixed runs such as "?!" are kept.

    With ``keep_ellipsis = true`` three or more dots become an ellipsis "..." instead of one period
    ("Bon...." → "Bon...", "Bon.." → "Bon."); the default (false) is the seed's behaviour.
    """

    name: ClassVar[str] = "collapse_punctuation"

    def __init__(self, keep_ellipsis: bool = False) -> None:
        self.keep_ellipsis = bool(keep_ellipsis)

    def normalize(self, text: str) -> str:
        if ".." not in text and "!!" not in text and "??" not in text:
            return text
        if self.keep_ellipsis:
            cleaned = _DOTS.sub(_dots, _REPEATED_BANG.sub(r"\1", text))
        else:
            cleaned = _REPEATED.sub(r"\1", text)
        return text if cleaned == text else cleaned

    def normalize_batch(self, texts: Sequence[str]) -> list[str]:
        """``[self.normalize(t) for t in texts]``, running only on the texts holding a repeated mark."""
        return _apply_where(texts, _REPEAT_SIGNS, self.normalize)
