"""Built-in text normalizers: Unicode form, mojibake repair, control characters, whitespace, ligatures.

Every normalizer returns the *same object* when it has nothing to do, and checks that cheaply first
(the prepare pipeline runs them on millions of documents and counts the documents each one changed).
French typography is preserved by default: the non-breaking spaces U+00A0 and U+202F, the curly
apostrophe ’, the guillemets « » and the ligatures œ/æ come out as they went in.
"""

from __future__ import annotations

import functools
import operator
import re
import unicodedata
from collections.abc import Sequence
from typing import ClassVar, Literal

import ftfy
import numpy as np

from qckit_builtins import accelerated
from qckit_builtins._batch import (
    apply,
    bmp_chars,
    bmp_mapped,
    bmp_matching,
    cached,
    char_class,
    code_units,
    edge_units,
    flagged,
    flagged_by_table,
    texts_with,
)

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
        """``[self.normalize(t) for t in texts]``, running only on the texts that hold a character that can
        make a text not normalized (:func:`_unstable_codepoints`); a text without any is normalized."""
        if self.form == "NFC":
            indices = flagged_by_table(texts, _flag_table(), _FLAG_NFC)
            if indices is not None:
                return apply(texts, indices, self.normalize)
        elif unicodedata.is_normalized(self.form, "".join(texts)):  # so is each of them
            return list(texts)
        return apply(texts, flagged(texts, _unstable_pattern(self.form)), self.normalize)


@functools.cache
def _composition_seconds() -> frozenset[str]:
    """Characters that can be the second half of a canonical composition (they may merge with the
    character before them): second characters of two-character canonical decompositions, Hangul jamo."""
    seconds = {chr(cp) for cp in range(0x1161, 0x1176)} | {chr(cp) for cp in range(0x11A8, 0x11C3)}
    for decomposition in filter(None, map(unicodedata.decomposition, bmp_chars())):
        if not decomposition.startswith("<") and decomposition.count(" ") == 1:
            seconds.add(chr(int(decomposition.split()[1], 16)))
    return frozenset(seconds)


@functools.cache
def _unstable_codepoints(form: str) -> tuple[int, ...]:
    """The BMP characters that may make a text not ``form``-normalized: one that changes alone, a combining
    mark, one that may compose with the character before it (or whose decomposition starts with one), and
    the surrogates (every character beyond U+FFFF counts as unstable). A text without any is normalized.
    """
    chars = bmp_chars()[1:]  # U+0000 is stable (and never composes: bmp_mapped relies on it)
    seconds = _composition_seconds() if form in ("NFC", "NFKC") else frozenset()
    decompose = "NFKD" if form.startswith("NFK") else "NFD"
    heads = [d[:1] for d in bmp_mapped(functools.partial(unicodedata.normalize, decompose))]
    unstable = np.fromiter(
        map(operator.ne, bmp_mapped(functools.partial(unicodedata.normalize, form)), chars),
        dtype=bool,
        count=0xFFFF,
    )
    unstable |= np.fromiter(map(unicodedata.combining, chars), dtype=np.int32, count=0xFFFF) != 0
    if seconds:
        unstable |= np.fromiter(map(seconds.__contains__, chars), dtype=bool, count=0xFFFF)
        unstable |= np.fromiter(map(seconds.__contains__, heads), dtype=bool, count=0xFFFF)
    unstable[0xD800 - 1 : 0xE000 - 1] = True
    return tuple((np.flatnonzero(unstable) + 1).tolist())


@functools.cache
def _unstable_pattern(form: str) -> re.Pattern[str]:
    """A character of :func:`_unstable_codepoints`, or one beyond U+FFFF."""
    return re.compile("[" + char_class(_unstable_codepoints(form)) + "\\U00010000-\\U0010ffff]")


# Characters that start the usual mojibake sequences: UTF-8 read as Latin-1 or Windows-1252
# ("Ã©" for é, "Ã " for à, "â€™" for ’, "Å“" for œ, "Â " for a no-break space), C1 controls
# (Windows-1252 bytes read as Latin-1: "\x92" for ’) and U+FFFD (a decoder gave up).
_CP1252_HIGH = "€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ"
_MOJIBAKE_2BYTE = re.compile(
    "[ÃÂÅ][\x80-\xbf" + _CP1252_HIGH + "]"  # 2-byte UTF-8 sequences (é è à ç ê œ …)
    "|Ã "  # à whose no-break-space byte became a plain space
)
_C1_OR_FFFD = re.compile("[\x80-\x9f\ufffd]")
# Every text that looks_like_mojibake flags holds one of these characters.
_MOJIBAKE_SIGNS = "ÃÂÅ€‚„\ufffd" + "".join(map(chr, range(0x80, 0xA0)))

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


# The ftfy fixers that _FTFY_CONFIG turns on after the encoding repair, in ftfy's order.
_FTFY_FIXERS = tuple(
    ftfy.FIXERS[name]
    for name in (
        "fix_c1_controls",
        "fix_latin_ligatures",
        "fix_character_width",
        "uncurl_quotes",
        "fix_line_breaks",
        "fix_surrogates",
        "remove_terminal_escapes",
        "remove_control_chars",
    )
    if getattr(_FTFY_CONFIG, name)
)
# fix_text's own loop, below, is only used with the ftfy it was written against.
_FTFY_LOOP = ftfy.__version__.split(".")[0] == "6" and not _FTFY_CONFIG.unescape_html


def _fix_text(text: str) -> str:
    """``ftfy.fix_text(text, _FTFY_CONFIG)``, about twice as fast on mojibake.

    ftfy repairs each line in rounds (encoding, then the other fixers) until a round changes nothing; the
    last round re-checks the repaired line for mojibake (its slowest step) only to find it unchanged.
    When the other fixers changed nothing, that round is known in advance: ``fix_encoding`` stops on a
    text it leaves alone, so it leaves its own result alone. Everything else is ftfy's own code.
    """
    if not _FTFY_LOOP:
        return ftfy.fix_text(text, _FTFY_CONFIG)
    out = []
    pos = 0
    while pos < len(text):  # ftfy.fix_text's segments: lines, at most max_decode_length long
        end = text.find("\n", pos) + 1 or len(text)
        end = min(end, pos + _FTFY_CONFIG.max_decode_length)
        segment = text[pos:end]
        while True:  # ftfy.fix_and_explain
            before = segment
            repaired = ftfy.fix_encoding(segment)
            segment = repaired
            for fixer in _FTFY_FIXERS:
                segment = fixer(segment)
            if segment in (before, repaired):
                break
        out.append(segment)
        pos = end
    return "".join(out)


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
        fixed = _fix_text(text)
        return text if fixed == text else fixed

    def normalize_batch(self, texts: Sequence[str]) -> list[str]:
        """``[self.normalize(t) for t in texts]``, running only on the texts holding a sign of mojibake."""
        if not self.check_only_flagged:
            return list(map(self.normalize, texts))
        indices = flagged_by_table(texts, _flag_table(), _FLAG_MOJIBAKE)
        if indices is None:
            return list(map(self.normalize, texts))
        return apply(texts, indices, self.normalize)


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
        """``[self.normalize(t) for t in texts]``, running only on the texts holding a control character."""
        indices = flagged_by_table(texts, _flag_table(), _FLAG_CONTROL)
        if indices is None:
            return list(map(self.normalize, texts))
        return apply(texts, indices, self.normalize)


_NBSP = "\u00a0\u2007\u202f"  # no-break space, figure space, narrow no-break space
# Whitespace that collapses, other than the plain space.
_ODD_SPACE = re.compile(r"[^\S " + _NBSP + "]")
_ODD_SPACE_ALL = re.compile(r"[^\S ]")
_SPACE_RUN = re.compile(r"[^\S" + _NBSP + "]+")
_SPACE_RUN_ALL = re.compile(r"\s+")


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
        """``[self.normalize(t) for t in texts]``, running only on the texts with two spaces in a row, other
        whitespace than the plain space (and the kept no-break spaces), or whitespace at an end."""
        table = _flag_table()
        odd_mask = _FLAG_ODD_SPACE if self.keep_nbsp else _FLAG_ODD_SPACE_ALL
        scan = accelerated.textscan
        if scan is not None:
            return apply(
                texts, scan.whitespace_candidates(list(texts), table, odd_mask, _FLAG_SPACE), self.normalize
            )
        odd = flagged_by_table(texts, table, odd_mask)
        joined = code_units(texts)
        edges = edge_units(texts)
        if odd is None or joined is None or edges is None:
            return list(map(self.normalize, texts))
        units, starts = joined
        first, last = edges
        found = set(odd)
        found.update(texts_with(np.flatnonzero((units[:-1] == 0x20) & (units[1:] == 0x20)), starts))
        found.update(np.flatnonzero((np.take(table, first) | np.take(table, last)) & _FLAG_SPACE).tolist())
        return apply(texts, sorted(found), self.normalize)


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
        """``[self.normalize(t) for t in texts]``, running only on the texts holding a ligature."""
        indices = flagged_by_table(texts, _flag_table(), _FLAG_LIGATURE)
        if indices is None:
            return list(map(self.normalize, texts))
        return apply(texts, indices, self.normalize)


# Per-character flags for the batch methods: which characters may make each normalizer change a text.
_FLAG_NFC = 1
_FLAG_MOJIBAKE = 2
_FLAG_CONTROL = 4
_FLAG_ODD_SPACE = 8  # whitespace that collapses, other than the plain space (no-break spaces kept)
_FLAG_ODD_SPACE_ALL = 16  # whitespace other than the plain space
_FLAG_LIGATURE = 32
_FLAG_SPACE = 64  # any whitespace
_ANY_SPACE = re.compile(r"\s")  # str.isspace(), as re and str.split() see it


@functools.cache
def _flag_table() -> np.ndarray:
    """uint8 flags (_FLAG_*) for every BMP code unit; U+0000, which separates the texts, has none."""
    return cached("normalizer-flags", _build_flag_table, __file__)


def _build_flag_table() -> np.ndarray:
    table = np.zeros(0x10000, dtype=np.uint8)
    table[list(_unstable_codepoints("NFC"))] |= _FLAG_NFC
    table[[ord(c) for c in _MOJIBAKE_SIGNS]] |= _FLAG_MOJIBAKE
    table[bmp_matching(_CONTROL)] |= _FLAG_CONTROL
    table[bmp_matching(_ODD_SPACE)] |= _FLAG_ODD_SPACE
    table[bmp_matching(_ODD_SPACE_ALL)] |= _FLAG_ODD_SPACE_ALL
    table[[ord(c) for c in "œŒæÆ"]] |= _FLAG_LIGATURE
    table[bmp_matching(_ANY_SPACE)] |= _FLAG_SPACE
    table[0] = 0
    return table
