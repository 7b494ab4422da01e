"""Helpers for the batch methods of the built-in components (internal: no hooks, not a plugin module).

A batch method (``normalize_batch``, ``drop_reason_batch``, ``fingerprint_batch``) must give exactly what
the per-document method gives, document by document. These helpers get their speed by doing the work
once per batch in C instead of once per document in Python:

* :func:`code_units` turns the texts into one numpy array of UTF-16 code units, so that a per-character
  property (letter? space? how does it fold?) is one table look-up over the whole batch, and a
  per-text count one ``numpy.add.reduceat``. The array of the last batch is kept, with the per-unit
  flags of :func:`flagged_by_table`, because the next component usually gets the same texts (the same
  objects) or a few changed ones (:func:`apply` updates it for those).
* :func:`flagged` runs one search over all the texts joined together and finds the few texts that a
  normalizer may change; :func:`apply` runs the normalizer on those only.

With the C accelerator (:data:`qckit_builtins.accelerated.textscan`), :func:`flagged_by_table` and
:func:`containing` read each text's own storage instead (no code units), and the per-text flags are kept
from one normalizer to the next (:func:`text_flags`).
"""

from __future__ import annotations

import bisect
import functools
import operator
import re
from collections.abc import Callable, Sequence
from itertools import accumulate

import numpy as np

from qckit.table_cache import cached_table
from qckit_builtins import accelerated

#: first and last UTF-16 surrogate code unit: a character beyond U+FFFF takes two of them
SURROGATES = (0xD800, 0xDFFF)


class _Units:
    """The code units of a batch of texts (see :func:`code_units`), and per-unit flags from a table."""

    __slots__ = ("flags", "starts", "table", "texts", "units")

    def __init__(self, texts: tuple[str, ...], units: np.ndarray, starts: np.ndarray) -> None:
        self.texts = texts
        self.units = units
        self.starts = starts
        self.table: np.ndarray | None = None
        self.flags: np.ndarray | None = None


_last: _Units | None = None  # the last batch seen in this process


def _same(texts: Sequence[str], cached: tuple[str, ...]) -> bool:
    return len(texts) == len(cached) and all(map(operator.is_, texts, cached))


def _encode(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-16-le", "surrogatepass"), dtype=np.uint16)


def _units_of(texts: Sequence[str]) -> _Units | None:
    global _last
    if _last is not None and _same(texts, _last.texts):
        return _last
    n = len(texts)
    if not n:
        return None
    joined = "\x00".join(texts)
    joined += "\x00"
    units = _encode(joined)
    ends = np.flatnonzero(units == 0)
    if len(ends) != n:
        return None
    starts = np.empty(n, dtype=np.intp)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    _last = _Units(tuple(texts), units, starts)
    return _last


def code_units(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """The UTF-16 code units of ``"\\0".join(texts) + "\\0"`` (uint16, read-only) and the index where each
    text starts.

    Each text's segment ``units[starts[k]:starts[k + 1]]`` ends with its ``"\\0"``, so no segment is empty and
    ``numpy.add.reduceat(values, starts)`` sums a per-unit value over each text (give ``"\\0"`` the value 0).
    A character beyond U+FFFF is two surrogate code units; lone surrogates pass through. Returns ``None``
    when a text itself contains ``"\\0"`` (or there are no texts): the caller then works text by text.
    """
    batch = _units_of(texts)
    return None if batch is None else (batch.units, batch.starts)


def flagged_by_table(texts: Sequence[str], table: np.ndarray, mask: int) -> list[int] | None:
    """Indices (ascending) of the texts holding a code unit ``u`` with ``table[u] & mask``; None when a
    text contains ``"\\0"``. ``table`` is a uint8 array of 65536 flags, the same object at every call (its
    look-up is kept with the batch, for the next caller with another ``mask``). With the C accelerator:
    each text's flags, from one pass over the batch kept for the next caller (:func:`text_flags`),
    which also reports the texts holding ``"\\0"``."""
    flags = text_flags(texts, table)
    if flags is not None:
        return np.flatnonzero(flags & mask).tolist()
    batch = _units_of(texts)
    if batch is None:
        return None
    if batch.table is not table:
        batch.table, batch.flags = table, np.take(table, batch.units)
    assert batch.flags is not None
    return texts_with(np.flatnonzero(batch.flags & mask), batch.starts)


class _TextFlags:
    """Per text, the OR of a flag table over its characters (see :func:`text_flags`)."""

    __slots__ = ("flags", "table", "texts")

    def __init__(self, texts: tuple[str, ...], table: np.ndarray, flags: np.ndarray) -> None:
        self.texts = texts
        self.table = table
        self.flags = flags


_last_flags: _TextFlags | None = None  # the flags of the last batch seen in this process


def text_flags(texts: Sequence[str], table: np.ndarray) -> np.ndarray | None:
    """With the C accelerator, for each text the OR of ``table`` (65536 uint8 flags, the same object at
    every call) over its characters, 0xFF for a text holding ``"\\0"`` (uint8, read-only); None without
    it. Computed in one pass and kept: the normalizers that follow ask about the same texts with other
    masks, and :func:`apply` updates the few texts a normalizer changed."""
    global _last_flags
    scan = accelerated.textscan
    if scan is None:
        return None
    cached = _last_flags
    if cached is not None and cached.table is table and _same(texts, cached.texts):
        return cached.flags
    flags = np.frombuffer(scan.text_flags(list(texts), table), dtype=np.uint8)
    _last_flags = _TextFlags(tuple(texts), table, flags)
    return flags


def _flags_replaced(texts: Sequence[str], out: list[str], changed: list[int]) -> None:
    """Keep the flags of ``out``: ``texts`` with the texts at ``changed`` replaced."""
    global _last_flags
    cached = _last_flags
    scan = accelerated.textscan
    if cached is None or scan is None or not _same(texts, cached.texts):
        return
    flags = cached.flags
    if changed:
        flags = flags.copy()
        flags[changed] = np.frombuffer(
            scan.text_flags([out[k] for k in changed], cached.table), dtype=np.uint8
        )
        flags.flags.writeable = False
    _last_flags = _TextFlags(tuple(out), cached.table, flags)


def edge_units(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """(first, last) code unit of each text (0 for an empty text), or None as for :func:`code_units`."""
    batch = _units_of(texts)
    if batch is None:
        return None
    units, starts = batch.units, batch.starts
    ends = np.empty_like(starts)
    ends[:-1] = starts[1:] - 1
    ends[-1] = len(units) - 1
    last = units[np.maximum(ends - 1, starts)]
    first = units[starts]
    last[ends == starts] = 0
    return first, last


def _replaced(texts: Sequence[str], out: list[str], changed: list[int]) -> None:
    """Keep the code units of ``out``: ``texts`` with the texts at ``changed`` (ascending) replaced."""
    global _last
    batch = _last
    if batch is None or not _same(texts, batch.texts):
        return
    if not changed:
        batch.texts = tuple(out)
        return
    new = "\x00".join([out[k] for k in changed])
    if new.count("\x00") != len(changed) - 1:
        _last = None
        return
    new_units = _encode(new + "\x00")
    new_ends = np.flatnonzero(new_units == 0) + 1  # end of each new text, its "\0" included
    units, starts, flags = batch.units, batch.starts, batch.flags
    index = np.array(changed)
    old_starts = starts.take(index)
    old_ends = np.append(starts, len(units)).take(index + 1)
    new_sizes = np.diff(new_ends, prepend=0)
    size_change = np.zeros(len(starts), dtype=np.intp)
    size_change[index] = new_sizes - (old_ends - old_starts)
    new_starts = starts + np.cumsum(size_change) - size_change
    cuts = zip(
        old_starts.tolist(),
        old_ends.tolist(),
        (new_ends - new_sizes).tolist(),
        new_ends.tolist(),
        strict=True,
    )
    pieces, new_pieces = [], []
    done = 0
    for old_start, old_end, new_start, new_end in cuts:
        pieces.append(slice(done, old_start))
        new_pieces.append(slice(new_start, new_end))
        done = old_end
    tail = slice(done, len(units))

    def splice(old: np.ndarray, replacement: np.ndarray) -> np.ndarray:
        parts = [
            part
            for cut, new_cut in zip(pieces, new_pieces, strict=True)
            for part in (old[cut], replacement[new_cut])
        ]
        parts.append(old[tail])
        return np.concatenate(parts)

    updated = _Units(tuple(out), splice(units, new_units), new_starts)
    if flags is not None and batch.table is not None:
        updated.table, updated.flags = batch.table, splice(flags, np.take(batch.table, new_units))
    _last = updated


def apply(texts: Sequence[str], indices: Sequence[int], normalize: Callable[[str], str]) -> list[str]:
    """``[normalize(t) for t in texts]`` for a normalizer that returns ``t`` itself wherever ``indices``
    (ascending) does not point: ``normalize`` only runs on those texts."""
    out = list(texts)
    changed = []
    for k in indices:
        new = out[k] = normalize(texts[k])
        if new is not texts[k]:
            changed.append(k)
    _replaced(texts, out, changed)
    _flags_replaced(texts, out, changed)
    return out


def containing(texts: Sequence[str], literals: Sequence[str]) -> list[int] | None:
    """Indices (ascending) of the texts that contain one of ``literals`` (each without "\\0"); None when a
    text contains "\\0". Exact, with numpy over the code units: the first character's positions, then
    the following ones checked at those positions only (with the C accelerator: one pass over each text
    for all the literals)."""
    scan = accelerated.textscan
    if scan is not None:
        return scan.containing(list(texts), tuple(literals))
    batch = _units_of(texts)
    if batch is None:
        return None
    units, starts = batch.units, batch.starts
    found: set[int] = set()
    for literal in literals:
        codes = _encode(literal).tolist()
        positions = np.flatnonzero(units[: len(units) - len(codes) + 1] == codes[0])
        for offset, code in enumerate(codes[1:], 1):
            positions = positions[units[positions + offset] == code]
        found.update(texts_with(positions, starts))
    return sorted(found)


def flagged(texts: Sequence[str], pattern: re.Pattern[str]) -> list[int]:
    """Indices (ascending) of the texts in which ``pattern`` finds a match, searching all texts at once.

    The texts are joined without a separator, so a match may run from one text into the next: the
    text where it starts is then reported too. Callers use this as a *pre-check* (the per-document method
    runs on every reported text and decides), so the pattern must have a match in every text that the
    method could change, and must not use look-arounds or anchors (a text's neighbours would change them).
    Fast for a literal pattern (``re`` then looks for it like ``str.find``).
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


def per_text_sum(values: np.ndarray, starts: np.ndarray) -> list[int]:
    """Sum of a per-unit 0/1 array over each text's segment (see :func:`code_units`)."""
    return np.add.reduceat(values.view(np.uint8), starts, dtype=np.int64).tolist()


def texts_with(positions: np.ndarray, starts: np.ndarray) -> list[int]:
    """The distinct text indices (ascending) holding the given unit positions."""
    if not len(positions):
        return []
    return np.unique(np.searchsorted(starts, positions, side="right") - 1).tolist()


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


@functools.cache
def _bmp_text() -> str:
    return "".join(bmp_chars())


def bmp_matching(pattern: re.Pattern[str]) -> list[int]:
    """The BMP code points that a one-character ``pattern`` matches (one search of them all)."""
    return [m.start() for m in pattern.finditer(_bmp_text())]


def bmp_mapped(transform: Callable[[str], str]) -> list[str]:
    """``[transform(chr(i)) for i in range(1, 0x10000)]`` (note: from U+0001) in one call, for a
    ``transform`` that works character by character (``str.casefold``, a normalization …) and never
    makes or removes U+0000."""
    mapped = transform("\x00".join(bmp_chars()[1:])).split("\x00")
    if len(mapped) != 0xFFFF:
        raise AssertionError("bmp_mapped: the transform is not character by character")
    return mapped


def single_codes(parts: Sequence[str], other: int) -> np.ndarray:
    """The code point of each one-character string of ``parts`` (uint32), ``other`` for the others."""
    filler = chr(other)
    joined = "".join([part if len(part) == 1 else filler for part in parts])
    return np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def cached(name: str, build: Callable[[], np.ndarray], *sources: str) -> np.ndarray:
    """``build()``, kept in qckit's table cache (:mod:`qckit.table_cache`) keyed on ``sources`` (the
    builder's module files) and this module, whose helpers every table builder uses."""
    return cached_table(name, build, [*sources, __file__])
