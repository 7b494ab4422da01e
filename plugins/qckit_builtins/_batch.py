"""Helpers for the batch methods of the built-in components (internal: no hooks, not a plugin module).

A batch method (``normalize_batch``, ``drop_reason_batch``, ``fingerprint_batch``) must give exactly what
the per-document method gives, document by document. These helpers get their speed by doing the work
once per batch in C instead of once per document in Python:

* :func:`flagged` runs one search over all the texts of the batch joined together and finds the few
  texts that a normalizer may change; the others stay as they are without a Python call each.
* :func:`code_units` turns the texts into one numpy array of UTF-16 code units, so that a per-character
  property (letter? space? how does it fold?) is one table look-up over the whole batch, and a
  per-text count one ``numpy.add.reduceat``.
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Callable, Sequence
from itertools import accumulate

import numpy as np

#: first and last UTF-16 surrogate code unit: a character beyond U+FFFF takes two of them
SURROGATES = (0xD800, 0xDFFF)


def flagged(texts: Sequence[str], pattern: re.Pattern[str]) -> list[int]:
    """Indices (ascending) of the texts in which ``pattern`` finds a match, searching all texts at once.

    The texts are joined without a separator, so a match may run from one text into the next: the
    text where it starts is then reported too. Callers use this as a *pre-check* (the per-document method
    runs on every reported text and decides), so the pattern must have a match in every text that the
    method could change, and must not use look-arounds or anchors (a text's neighbours would change them).
    """
    if not texts:
        return []
    joined = "".join(texts)
    search = pattern.search
    m = search(joined)
    if m is None:
        return []
    ends = list(accumulate(map(len, texts)))
    found = []
    while m is not None:
        k = bisect.bisect_right(ends, m.start())
        found.append(k)
        m = search(joined, ends[k])
    return found


def apply_flagged(
    texts: Sequence[str], pattern: re.Pattern[str], normalize: Callable[[str], str]
) -> list[str]:
    """``[normalize(t) for t in texts]`` for a normalizer that returns ``t`` unchanged wherever ``pattern``
    finds nothing: ``normalize`` only runs on the texts that :func:`flagged` reports."""
    out = list(texts)
    for k in flagged(texts, pattern):
        out[k] = normalize(texts[k])
    return out


def code_units(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """The UTF-16 code units of ``"\\0".join(texts) + "\\0"`` (uint16) and the index where each text starts.

    Each text's segment ``units[starts[k]:starts[k + 1]]`` ends with its ``"\\0"``, so no segment is empty and
    ``numpy.add.reduceat(values, starts)`` sums a per-unit value over each text (give ``"\\0"`` the value 0).
    A character beyond U+FFFF is two surrogate code units; lone surrogates pass through. Returns ``None``
    when a text itself contains ``"\\0"`` (or there are no texts): the caller then works text by text.
    """
    n = len(texts)
    if not n:
        return None
    joined = "\x00".join(texts)
    joined += "\x00"
    units = np.frombuffer(joined.encode("utf-16-le", "surrogatepass"), dtype=np.uint16)
    ends = np.flatnonzero(units == 0)
    if len(ends) != n:
        return None
    starts = np.empty(n, dtype=np.intp)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    return units, starts


def per_text_sum(values: np.ndarray, starts: np.ndarray) -> list[int]:
    """Sum of a per-unit 0/1 array over each text's segment (see :func:`code_units`)."""
    return np.add.reduceat(values.view(np.uint8), starts, dtype=np.int64).tolist()


def texts_with(mask_positions: np.ndarray, starts: np.ndarray) -> list[int]:
    """The distinct text indices (ascending) holding the given unit positions."""
    if not len(mask_positions):
        return []
    return np.unique(np.searchsorted(starts, mask_positions, side="right") - 1).tolist()


def texts_with_surrogates(units: np.ndarray, starts: np.ndarray) -> list[int]:
    """Indices of the texts that hold a character beyond U+FFFF (or a lone surrogate)."""
    if not len(units) or int(units.max()) < SURROGATES[0]:
        return []
    return texts_with(np.flatnonzero((units >= SURROGATES[0]) & (units <= SURROGATES[1])), starts)


def char_class(codepoints: Sequence[int]) -> str:
    """Body of a regex character class holding the given sorted code points, as escaped ranges."""
    parts: list[tuple[int, int]] = []
    for cp in codepoints:
        if parts and cp == parts[-1][1] + 1:
            parts[-1] = (parts[-1][0], cp)
        else:
            parts.append((cp, cp))
    return "".join(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}" for a, b in parts)


@functools.cache
def bmp_chars() -> tuple[str, ...]:
    """Every BMP character, U+0000 to U+FFFF (surrogates included, as lone code points)."""
    return tuple(map(chr, range(0x10000)))


def bmp_flags(predicate: Callable[[str], bool]) -> np.ndarray:
    """A bool table over the BMP: ``predicate(chr(i))`` for every code point ``i``."""
    return np.fromiter(map(predicate, bmp_chars()), dtype=bool, count=0x10000)
