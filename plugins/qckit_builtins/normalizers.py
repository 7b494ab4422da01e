"""Built-in text normalizers: Unicode form, mojibake repair, control characters, whitespace, ligatures.

Every normalizer returns the *same object* when it has nothing to do, and checks that cheaply first
(the prepare pipeline runs them on millions of documents and counts the documents each one changed).
French typography is preserved by default: the non-breaking spaces U+00A0 and U+202F, the curly
apostrophe ’, the guillemets « » and the ligatures œ/æ come out as they went in.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence
from typing import ClassVar, Literal

import ftfy

from qckit import hookimpl
from qckit_builtins._batch import apply_flagged, bmp_chars, char_class, flagged

_FORMS = ("NFC", "NFKC", "NFD", "NFKD")


class UnicodeNormalizer:
    """Puts text in a Unicode normalization form (recipe: ``use = "unicode"``).

    ``form`` is one of NFC (default), NFKC, NFD, NFKD. NFC only composes characters (``e`` + U+0301 →
    ``é``) and leaves everything else alone. The compatibility forms NFKC/NFKD also turn the French
    non-breaking spaces U+00A0 and U+202F into plain spaces, ``…`` into ``...``, ``ﬁ`` into ``fi``
    and superscripts into digits, which loses French typography: that is why NFC is the default.
    """

    name: ClassVar[str] = "unicode"

    def __init__(self, form: Literal["NFC", "NFKC", "NFD", "NFKD"] = "NFC") -> None:
        if form not in _FORMS:
            raise ValueError(f"form must be one of {', '.join(_FORMS)}, not {form!r}")
        self.form = form

    def normalize(self, text: str) -> str:
        if unicodedata.is_normalized(self.form, text):
            return text
        return unicodedata.normalize(self.form, text)

    def normalize_batch(self, texts: Sequence[str]) -> list[str]:
        """``[self.normalize(t) for t in texts]``: one check of all texts at once (a substring of a
        normalized text is normalized), then only the texts holding a character that can be affected."""
        if unicodedata.is_normalized(self.form, "".join(texts)):
            return list(texts)
        return apply_flagged(texts, _unstable_pattern(self.form), self.normalize)


@functools.cache
def _composition_seconds() -> frozenset[str]:
    """Characters that can be the second half of a canonical composition (they may merge with the
    character before them): second characters of two-character canonical decompositions, Hangul jamo."""
    seconds = {chr(cp) for cp in range(0x1161, 0x1176)} | {chr(cp) for cp in range(0x11A8, 0x11C3)}
    for char in bmp_chars():
        decomposition = unicodedata.decomposition(char).split()
        if len(decomposition) == 2 and not decomposition[0].startswith("<"):
            seconds.add(chr(int(decomposition[1], 16)))
    return frozenset(seconds)


@functools.cache
def _unstable_pattern(form: str) -> re.Pattern[str]:
    """A character that may make a text not ``form``-normalized: one that changes alone, a combining mark,
    one that may compose with the character before it (or whose decomposition starts with one), and every
    character beyond U+FFFF. A text without any of them is normalized."""
    decompose = "NFKD" if form.startswith("NFK") else "NFD"
    seconds = _composition_seconds() if form in ("NFC", "NFKC") else frozenset()
    unstable = []
    for cp, char in enumerate(bmp_chars()):
        if 0xD800 <= cp <= 0xDFFF:
            unstable.append(cp)
            continue
        if unicodedata.combining(char) or not unicodedata.is_normalized(form, char) or char in seconds:
            unstable.append(cp)
            continue
        if seconds and unicodedata.normalize(decompose, char)[:1] in seconds:
            unstable.append(cp)
    return re.compile("[" + char_class(unstable) + "\\U00010000-\\U0010ffff]")


# Characters that start the usual mojibake sequences: UTF-8 read as Latin-1 or Windows-1252
# ("Ã©" for é, "Ã " for à, "â€™" for ’, "Å“" for œ, "Â " for a no-break space), C1 controls
# (Windows-1252 bytes read as Latin-1: "\x92" for ’) and U+FFFD (a decoder gave up).
_CP1252_HIGH = "€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ"
_MOJIBAKE_2BYTE = re.compile(
    "[ÃÂÅ][\x80-\xbf" + _CP1252_HIGH + "]"  # 2-byte UTF-8 sequences (é è à ç ê œ …)
    "|Ã "  # à whose no-break-space byte became a plain space
)
_C1_OR_FFFD = re.compile("[\x80-\x9f\ufffd]")
# Matches exactly where looks_like_mojibake says yes (C1 controls are never printable).
_MOJIBAKE_ANY = re.compile("â[€‚„]|" + _MOJIBAKE_2BYTE.pattern + "|[\x80-\x9f\ufffd]")

# ftfy options: repair the encoding, touch nothing else. Curly quotes, ligatures, full-width forms,
# HTML entities and line breaks stay as they are, and the Unicode form is the "unicode" normalizer's job.
_FTFY_CONFIG = ftfy.TextFixerConfig(
    unescape_html=False,
    remove_terminal_escapes=False,
    fix_encoding=True,
    restore_byte_a0=True,
    replace_lossy_sequences=True,
    decode_inconsistent_utf8=True,
    fix_c1_controls=True,
    fix_latin_ligatures=False,
    fix_character_width=False,
    uncurl_quotes=False,
    fix_line_breaks=False,
    fix_surrogates=True,
    remove_control_chars=False,
    normalization=None,
    explain=False,
)


def looks_like_mojibake(text: str) -> bool:
    """Cheap test: could ``text`` contain mojibake? False for clean French ("pâte", "Ça", "cœur", "C’est")."""
    if "â€" in text or "â‚" in text or "â„" in text:  # 3-byte sequences: ’ “ ” « – — … € ™
        return True
    if ("Ã" in text or "Â" in text or "Å" in text) and _MOJIBAKE_2BYTE.search(text):
        return True
    if text.isprintable():  # no C1 control (fast C loop); U+FFFD is printable
        return "\ufffd" in text
    return _C1_OR_FFFD.search(text) is not None


class MojibakeNormalizer:
    """Repairs mojibake with ftfy (recipe: ``use = "mojibake"``): "CafÃ© Ã  MontrÃ©al" → "Café à Montréal".

    ftfy costs about a second per megabyte even on clean text, so by default it only runs on documents
    that a precompiled pattern of typical mojibake sequences flags ("Ã©", "â€™", "Â ", C1 controls,
    U+FFFD); clean French is never flagged. ``check_only_flagged = false`` runs ftfy on every document.
    Only the encoding is repaired: the curly apostrophe ’, « », œ/æ and no-break spaces are kept.
    """

    name: ClassVar[str] = "mojibake"

    def __init__(self, check_only_flagged: bool = True) -> None:
        self.check_only_flagged = bool(check_only_flagged)

    def normalize(self, text: str) -> str:
        if self.check_only_flagged and not looks_like_mojibake(text):
            return text
        fixed = ftfy.fix_text(text, _FTFY_CONFIG)
        return text if fixed == text else fixed

    def normalize_batch(self, texts: Sequence[str]) -> list[str]:
        """``[self.normalize(t) for t in texts]``, with one search of all texts for the flag pattern."""
        if not self.check_only_flagged:
            return list(map(self.normalize, texts))
        return apply_flagged(texts, _MOJIBAKE_ANY, self.normalize)


# C0 and C1 controls except tab and newline, DEL, and invisible format characters: soft hyphen,
# zero-width space, word joiner, byte-order mark. Zero-width (non-)joiners stay: emoji and some
# scripts need them.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\u200b\u2060\ufeff]")
# Controls that Python treats as whitespace separate words: they become a space, not nothing.
_CONTROL_SPACE = {ord(c): " " for c in "\x0b\x0c\x1c\x1d\x1e\x1f\x85"}


def _control_replacement(match: re.Match[str]) -> str:
    char = match.group()
    if char == "\r":
        return "\n"
    return _CONTROL_SPACE.get(ord(char), "")


class ControlCharsNormalizer:
    """Removes control characters (recipe: ``use = "control_chars"``).

    Deletes C0/C1 controls (except tab and newline), DEL, the soft hyphen U+00AD and the zero-width
    characters U+200B, U+2060, U+FEFF. A carriage return becomes a newline (``\\r\\n`` → ``\\n``) and
    the controls that act as separators (vertical tab, form feed, U+001C–U+001F, U+0085) become a space,
    so words never get glued together. No-break spaces U+00A0/U+202F are kept.
    """

    name: ClassVar[str] = "control_chars"

    def normalize(self, text: str) -> str:
        if text.isprintable() or _CONTROL.search(text) is None:  # isprintable: a fast C loop
            return text
        return _CONTROL.sub(_control_replacement, text.replace("\r\n", "\n"))

    def normalize_batch(self, texts: Sequence[str]) -> list[str]:
        """``[self.normalize(t) for t in texts]``, with one search of all texts for a control character."""
        return apply_flagged(texts, _CONTROL, self.normalize)


_NBSP = "\u00a0\u2007\u202f"  # no-break space, figure space, narrow no-break space
# Whitespace that collapses, other than the plain space.
_ODD_SPACE = re.compile(r"[^\S " + _NBSP + "]")
_ODD_SPACE_ALL = re.compile(r"[^\S ]")
_SPACE_RUN = re.compile(r"[^\S" + _NBSP + "]+")
_SPACE_RUN_ALL = re.compile(r"\s+")
# Where a text needs more than strip(): two spaces in a row, or whitespace other than the plain space
# (and other than the no-break spaces when they are kept).
_NEEDS_COLLAPSE = re.compile("  |" + _ODD_SPACE.pattern)
_NEEDS_COLLAPSE_ALL = re.compile("  |" + _ODD_SPACE_ALL.pattern)


class WhitespaceNormalizer:
    """Collapses every run of whitespace (spaces, tabs, newlines …) into one space and strips the ends
    (recipe: ``use = "whitespace"``).

    With ``keep_nbsp = true`` (default) the no-break spaces U+00A0, U+2007 and U+202F that French
    typography puts before ``: ; ! ?`` and inside « » are kept as they are; with ``false`` they are
    treated like any other space. Leading and trailing whitespace, no-break or not, is always removed.
    """

    name: ClassVar[str] = "whitespace"

    def __init__(self, keep_nbsp: bool = True) -> None:
        self.keep_nbsp = bool(keep_nbsp)

    def normalize(self, text: str) -> str:
        if self.keep_nbsp:
            odd = _ODD_SPACE
        else:
            odd = _ODD_SPACE_ALL
            if "\u00a0" in text or "\u202f" in text or "\u2007" in text:
                return " ".join(text.split())
        if "  " not in text and (text.isprintable() or odd.search(text) is None):
            return text.strip()  # the same object when there is nothing to strip
        return self._collapse(text)

    def _collapse(self, text: str) -> str:
        # " ".join(text.split()) is run.sub(" ", text).strip() when every whitespace collapses (3x faster).
        if self.keep_nbsp and ("\u00a0" in text or "\u202f" in text or "\u2007" in text):
            return _SPACE_RUN.sub(" ", text).strip()
        return " ".join(text.split())

    def normalize_batch(self, texts: Sequence[str]) -> list[str]:
        """``[self.normalize(t) for t in texts]``: one search of all texts for what needs collapsing; the
        other texts are only stripped."""
        out = list(map(str.strip, texts))
        collapse = self._collapse
        for k in flagged(texts, _NEEDS_COLLAPSE if self.keep_nbsp else _NEEDS_COLLAPSE_ALL):
            out[k] = collapse(texts[k])
        return out


_LIGATURES = re.compile("[œŒæÆ]")
_LIGATURE_PARTS = {"œ": ("o", "e"), "Œ": ("O", "e"), "æ": ("a", "e"), "Æ": ("A", "e")}


def _unfold_ligature(match: re.Match[str]) -> str:
    first, second = _LIGATURE_PARTS[match.group()]
    following = match.string[match.end() : match.end() + 1]
    if first.isupper() and following.isupper():
        second = second.upper()  # "ŒUVRE" → "OEUVRE", "Œuvre" → "Oeuvre"
    return first + second


class FoldLigaturesNormalizer:
    """Writes the ligatures œ, Œ, æ, Æ as two letters (recipe: ``use = "fold_ligatures"``, opt-in).

    "cœur" → "coeur", "Œuvre" → "Oeuvre", "ŒUVRE" → "OEUVRE", "Lætitia" → "Laetitia". The seed script
    always did this; qckit keeps œ/æ unless a recipe asks for this normalizer.
    """

    name: ClassVar[str] = "fold_ligatures"

    def normalize(self, text: str) -> str:
        if _LIGATURES.search(text) is None:
            return text
        return _LIGATURES.sub(_unfold_ligature, text)

    def normalize_batch(self, texts: Sequence[str]) -> list[str]:
        """``[self.normalize(t) for t in texts]``, with one search of all texts for a ligature."""
        return apply_flagged(texts, _LIGATURES, self.normalize)


NORMALIZERS = (
    UnicodeNormalizer,
    MojibakeNormalizer,
    ControlCharsNormalizer,
    WhitespaceNormalizer,
    FoldLigaturesNormalizer,
)


@hookimpl
def register_normalizers(register):
    for component in NORMALIZERS:
        register(component)
