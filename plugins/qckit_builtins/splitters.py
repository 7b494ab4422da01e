"""Built-in splitters that assign kept documents to train or validation.

``random`` reproduces the original script's shuffle-and-cut counts (``n_train = int(n * (1 - val_split))``,
the rest is validation) with a seeded choice of *which* documents go to validation; the output keeps
corpus order. It holds one byte per document, never the texts.

With near-duplicate clusters (``minhash_dedup`` with ``duplicates = "tag"``), ``random`` chooses
clusters instead of documents (:meth:`RandomSplitter.start_clusters`), and the pipeline gives every
member its cluster's side, whatever the splitter.

``hash`` decides per document from a salted hash of its text, so a document keeps its side when the
corpus grows or is reordered, and copies differing only by case or spacing land on the same side.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from qckit import hookimpl
from qckit.components import Document


def _check_val_split(val_split: float) -> float:
    if isinstance(val_split, bool) or not isinstance(val_split, (int, float)):
        raise ValueError("val_split must be a number between 0.0 and 0.5")
    if not 0.0 <= val_split <= 0.5:
        raise ValueError("val_split must be between 0.0 and 0.5")
    return float(val_split)


def validation_count(n_docs: int, val_split: float) -> int:
    """How many of ``n_docs`` documents go to validation: ``n_docs - int(n_docs * (1 - val_split))``,
    the original script's arithmetic (a corpus of one document goes entirely to validation)."""
    return n_docs - int(n_docs * (1 - val_split))


class RandomSplitter:
    """Sends ``validation_count(n, val_split)`` documents of each output set, chosen uniformly at random
    with a generator seeded by ``(seed, set_index)``, to validation; deterministic across runs and
    worker counts. Unlike the original script, ``seed`` is honoured when each file is its own set."""

    name: ClassVar[str] = "random"

    def __init__(self, val_split: float = 0.1, seed: int = 42) -> None:
        self.val_split = _check_val_split(val_split)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError("seed must be an integer")
        self.seed = seed
        self._mask: np.ndarray | None = None

    def _rng(self, set_index: int) -> np.random.Generator:
        """A generator of its own for every (seed, set) pair. NumPy pads a seed list with zeros to four
        words, and an int of 2**32 or more takes several: (2**32, 0) as a plain list would equal (0, 1),
        so seeds that large get their set as a spawn key instead (always after four words)."""
        seed = self.seed
        if 0 <= seed < 2**32:
            return np.random.default_rng([seed, set_index])
        if -(2**32) < seed < 0:
            return np.random.default_rng([-seed, set_index, 1])
        return np.random.default_rng(np.random.SeedSequence(abs(seed), spawn_key=(set_index, int(seed < 0))))

    def start(self, n_docs: int, set_index: int) -> None:
        if n_docs < 0 or set_index < 0:
            raise ValueError("n_docs and set_index must be >= 0")
        n_val = validation_count(n_docs, self.val_split)
        mask = np.zeros(n_docs, dtype=bool)
        if n_val:
            mask[self._rng(set_index).choice(n_docs, n_val, replace=False)] = True
        self._mask = mask

    def start_clusters(self, n_docs: int, set_index: int, leaders: Sequence[int]) -> None:
        """Like :meth:`start`, a cluster of near-duplicates counting as one unit of its size: units are
        taken in a seeded random order while they fit, so validation gets ``validation_count(n_docs,
        val_split)`` documents (fewer only when no remaining unit fits), every member of a cluster on
        its leader's side. Documents whose leader is in an earlier set (-1) are left to that leader."""
        if n_docs < 0 or set_index < 0 or len(leaders) != n_docs:
            raise ValueError("n_docs and set_index must be >= 0, with one leader per document")
        lead = np.asarray(leaders, dtype=np.int64)
        units = np.flatnonzero(lead == np.arange(n_docs))
        sizes = np.bincount(lead[lead >= 0], minlength=n_docs)[units]
        order = self._rng(set_index).permutation(len(units))
        room = validation_count(n_docs, self.val_split)
        chosen = np.zeros(len(units), dtype=bool)
        # the prefix that fits at once, then single units that still fit (clusters are few and small)
        fits = int(np.searchsorted(np.cumsum(sizes[order]), room, side="right"))
        chosen[order[:fits]] = True
        room -= int(sizes[order[:fits]].sum())
        for u in order[fits:].tolist():
            if room == 0:
                break
            if sizes[u] <= room:
                chosen[u] = True
                room -= int(sizes[u])
        unit_val = np.zeros(n_docs, dtype=bool)
        unit_val[units[chosen]] = True
        self._mask = np.where(lead >= 0, unit_val[np.maximum(lead, 0)], False)

    def is_val(self, index: int, doc: Document) -> bool:
        if self._mask is None:
            raise RuntimeError("RandomSplitter.start() must be called before is_val()")
        return bool(self._mask[index])

    def is_val_batch(self, start: int, n: int) -> list[bool]:
        """``[is_val(i, d) for i in range(start, start + n)]``: the side depends on the index only."""
        if self._mask is None:
            raise RuntimeError("RandomSplitter.start() must be called before is_val_batch()")
        if start < 0 or start + n > len(self._mask):
            raise IndexError(f"documents {start}..{start + n - 1} of a set of {len(self._mask)}")
        return self._mask[start : start + n].tolist()


# salt -> blake2b primed with it; hash objects cannot be pickled, so they live here, not on the splitters
_SALTED: dict[str, hashlib.blake2b] = {}


def hash_fraction(text: str, salt: str) -> float:
    """Map ``text`` (case-folded, whitespace collapsed) and ``salt`` to a number in [0, 1):
    the first 8 bytes of ``blake2b(salt + "\\0" + text)`` read as a big-endian integer, over 2**64."""
    base = _SALTED.get(salt)
    if base is None:
        base = _SALTED[salt] = hashlib.blake2b(f"{salt}\x00".encode(), digest_size=8)
    h = base.copy()
    h.update(" ".join(text.casefold().split()).encode())
    return int.from_bytes(h.digest(), "big") / 2.0**64


class HashSplitter:
    """Sends a document to validation when ``hash_fraction(text, salt) < val_split``. The side of a document
    depends only on its text and the salt (not on the corpus size, order or set), so validation stays
    stable as the corpus grows; the validation share is ``val_split`` on average, not exactly."""

    name: ClassVar[str] = "hash"

    def __init__(self, val_split: float = 0.1, salt: str = "qckit") -> None:
        self.val_split = _check_val_split(val_split)
        if not isinstance(salt, str):
            raise ValueError("salt must be a string")
        self.salt = salt

    def start(self, n_docs: int, set_index: int) -> None:
        pass

    def is_val(self, index: int, doc: Document) -> bool:
        return hash_fraction(doc.text, self.salt) < self.val_split


@hookimpl
def register_splitters(register) -> None:
    register(RandomSplitter)
    register(HashSplitter)
