"""Deduplication: exact (normalized text hash) and near-duplicate (MinHash LSH).

Both are stateful filters: ``fingerprint(doc)`` is pure and runs in worker processes;
``drop_reasons(fingerprints)`` runs in the main process, in corpus order, and keeps the first copy.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import operator
import re
import unicodedata
import zlib
from collections.abc import Callable, Sequence
from itertools import chain, compress
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from qckit.components import Document
from qckit_builtins import accelerated
from qckit_builtins._batch import bmp_mapped, cached, code_units, single_codes, texts_with

_text = operator.attrgetter("text")
_digest = operator.methodcaller("digest")
_blake2b_64 = functools.partial(hashlib.blake2b, digest_size=8)

# ASCII bytes that are not letters or digits become spaces; so do the UTF-8 sequences of Latin-1
# punctuation and symbols (U+0080–U+00BF: « » ¡ ¿ ° …, lead byte \xc2) and of the General Punctuation
# block (U+2000–U+203F: ’ ‘ “ ” – — … and the special spaces, lead bytes \xe2\x80). Working on the
# UTF-8 bytes (bytes.translate, a bytes regex only when such a lead byte is present) is about twice as
# fast as a Unicode regex over the text.
_ASCII_PUNCT = bytes(b for b in range(128) if not chr(b).isalnum())
_ASCII_TO_SPACE = bytes.maketrans(_ASCII_PUNCT, b" " * len(_ASCII_PUNCT))
_UNICODE_PUNCT = re.compile(rb"\xc2[\x80-\xbf]|\xe2\x80[\x80-\xbf]")


def dedup_key_bytes(text: str) -> bytes:
    """UTF-8 of :func:`dedup_key`."""
    if "\u00a0" in text or "\u202f" in text:  # the usual non-NFKC characters of French text: skip NFKC
        text = text.replace("\u00a0", " ").replace("\u202f", " ")
    if not unicodedata.is_normalized("NFKC", text):
        text = unicodedata.normalize("NFKC", text)
    data = text.casefold().encode("utf-8", "surrogatepass").translate(_ASCII_TO_SPACE)
    # (NFKC has already replaced the letters and digits of U+0080–U+00BF: ª º µ ² ½ …)
    if b"\xc2" in data or b"\xe2\x80" in data:
        data = _UNICODE_PUNCT.sub(b" ", data)
    return b" ".join(data.split())


_RISKY = 0xFFFF  # in _key_table: a character the table cannot handle


@functools.cache
def _key_table() -> np.ndarray:
    """uint16 per BMP code unit: what :func:`dedup_keys` maps it to (see :func:`_build_key_table`)."""
    from qckit_builtins.normalizers import text

    return cached("dedup-keys", _build_key_table, __file__, text.__file__)


def _build_key_table() -> np.ndarray:
    """uint16 over the BMP: each character's contribution to :func:`dedup_key_bytes`, decoded (0x20 for a
    word break), or _RISKY where that depends on its neighbours or is not one character: a character that
    NFKC may change or merge with another, one that case-folds to several characters, a surrogate."""
    from qckit_builtins.normalizers.text import _unstable_codepoints

    codes = single_codes(bmp_mapped(str.casefold), _RISKY)  # U+0001 … U+FFFF; _RISKY: several characters
    word_break = np.zeros(0x10000, dtype=bool)  # what dedup_key_bytes turns into a space
    word_break[:0x80] = [not chr(cp).isalnum() for cp in range(0x80)]
    word_break[0x80:0xC0] = True
    word_break[0x2000:0x2040] = True
    table = np.zeros(0x10000, dtype=np.uint16)
    table[1:] = np.where(word_break[codes], 0x20, codes)
    table[list(_unstable_codepoints("NFKC"))] = _RISKY  # surrogates included
    table[[0xA0, 0x202F]] = 0x20  # replaced by a space before NFKC
    table[0xFFFF] = _RISKY
    table[0] = 0  # separates the texts
    return table


def dedup_keys(texts: Sequence[str]) -> list[bytes]:
    """``[dedup_key_bytes(t) for t in texts]``, one numpy table look-up for all texts at once (the texts
    holding a character it cannot handle, rare, go one by one); with the C accelerator, one pass per text."""
    return _table_keys(texts, _key_table(), dedup_key_bytes)


def _table_keys(
    texts: Sequence[str],
    table: np.ndarray,
    one: Callable[[str], bytes],
    expand: Sequence[tuple[str, str]] = (),
) -> list[bytes]:
    """``[one(t) for t in texts]`` where ``table`` maps each BMP character to what ``one`` makes of it (see
    :func:`_build_key_table`): word breaks collapsed to one space, none at either end, as UTF-8.
    ``expand``: characters that ``one`` spells out as several, with their spelling (œ → oe), such that
    replacing them leaves ``one(t)`` unchanged; the accelerator scans a text holding them again, replaced,
    rather than leave it to ``one``."""
    scan = accelerated.textscan
    if scan is not None:
        keys = scan.dedup_keys(list(texts), table, _RISKY)
        slow = [k for k, key in enumerate(keys) if key is None]
        spelled = [k for k in slow if any(old in texts[k] for old, _ in expand)]
        if spelled:
            again = scan.dedup_keys([_replaced(texts[k], expand) for k in spelled], table, _RISKY)
            for k, key in zip(spelled, again, strict=True):
                keys[k] = key
            slow = [k for k in slow if keys[k] is None]
        for k in slow:
            keys[k] = one(texts[k])
        return keys
    joined = code_units(texts)
    if joined is None:
        return list(map(one, texts))
    units, starts = joined
    key = np.take(table, units)
    slow = texts_with(np.flatnonzero(key == _RISKY), starts) if _RISKY in key else []
    # Collapse the word breaks: drop a space followed by a space or a text end, then one preceded by a
    # text end or at the very start.
    space = key == 0x20
    drop = np.zeros(len(key), dtype=bool)
    drop[:-1] = space[:-1] & (space[1:] | (key[1:] == 0))
    key = key[~drop]
    space = key == 0x20
    drop = np.empty(len(key), dtype=bool)
    drop[0] = space[0]
    drop[1:] = space[1:] & (key[:-1] == 0)
    keys = key[~drop].tobytes().decode("utf-16-le").encode("utf-8").split(b"\x00")
    del keys[-1]  # after the last text's end
    for k in slow:
        keys[k] = one(texts[k])
    return keys


def _replaced(text: str, pairs: Sequence[tuple[str, str]]) -> str:
    for old, new in pairs:  # str.replace of the few present is faster than str.translate
        if old in text:
            text = text.replace(old, new)
    return text


def dedup_key(text: str) -> str:
    """The text that exact dedup compares: NFKC, case-folded, punctuation removed, whitespace collapsed.

    "Bonjour  le monde!" and "bonjour le monde" give the same key, so do "C'est" and "C’est"
    (punctuation becomes a word break). Punctuation means ASCII punctuation and symbols, Latin-1
    punctuation (« » ¿ ¡ °) and the General Punctuation block (’ “ ” – — …); letters, digits, emoji and
    other symbols stay.
    """
    return dedup_key_bytes(text).decode("utf-8", "surrogatepass")


class HashIndex:
    """A set of 64-bit hashes that costs ~8 bytes per hash.

    New hashes go into a Python set (fast, ~70 bytes each); once it holds ``merge_threshold`` of them
    they are merged into a sorted ``numpy.uint64`` array, which batches of hashes are looked up in
    with ``numpy.searchsorted``.
    """

    __slots__ = ("merge_threshold", "recent", "sorted")

    def __init__(self, merge_threshold: int) -> None:
        self.merge_threshold = merge_threshold
        self.recent: set[int] = set()
        self.sorted = np.empty(0, dtype=np.uint64)

    def __len__(self) -> int:
        return len(self.sorted) + len(self.recent)

    def in_sorted(self, hashes: np.ndarray) -> np.ndarray:
        """For each hash (uint64 array, any shape), whether the sorted part holds it."""
        if not len(self.sorted):
            return np.zeros(hashes.shape, dtype=bool)
        # Looking the hashes up in sorted order walks the big array in one direction, so consecutive
        # binary searches share cached pages: about three times faster once the array outgrows the cache.
        flat = hashes.ravel()
        order = np.argsort(flat)
        queries = flat[order]
        idx = np.searchsorted(self.sorted, queries)
        np.minimum(idx, len(self.sorted) - 1, out=idx)
        found = np.empty(len(flat), dtype=bool)
        found[order] = self.sorted[idx] == queries
        return found.reshape(hashes.shape)

    def merge_if_full(self) -> None:
        if len(self.recent) < self.merge_threshold:
            return
        new = np.fromiter(self.recent, dtype=np.uint64, count=len(self.recent))
        new.sort()
        n = len(self.sorted)
        merged = self.sorted if self.sorted.flags.owndata else self.sorted.copy()
        # Grown in place (a large block is remapped, not copied): the index never exists twice at once,
        # which keeps the peak near 8 bytes per hash. Nothing else refers to this array.
        merged.resize(n + len(new), refcheck=False)
        merged[n:] = new
        merged.sort(kind="stable")  # two sorted runs: timsort merges them in linear time
        self.sorted = merged
        self.recent = set()


class ExactDedup:
    """Drops exact duplicates, keeping the first copy in corpus order (recipe: ``use = "exact_dedup"``).

    Each document is reduced to a 64-bit BLAKE2b hash of its text; with ``normalize_key = true``
    (default) the text is first NFKC-normalized, case-folded, stripped of punctuation and its whitespace
    collapsed (:func:`dedup_key`), so copies differing only in those respects collapse. With 64-bit
    hashes, two different documents collide with probability ~n²/2⁶⁵ (about 1 in 1.5 million for five
    million documents). Reason: ``duplicate``.

    Memory stays near 8 bytes per unique document: the most recent hashes live in a Python set of at
    most ``merge_threshold`` entries (~70 bytes each, so ~18 MB by default), which is then merged into
    a sorted ``numpy.uint64`` array (:class:`HashIndex`). Pickling carries the hashes seen so far.
    """

    name: ClassVar[str] = "exact_dedup"
    stateful: ClassVar[bool] = True

    def __init__(self, normalize_key: bool = True, merge_threshold: int = 262_144) -> None:
        if merge_threshold < 1:
            raise ValueError(f"merge_threshold must be at least 1, not {merge_threshold}")
        self.normalize_key = bool(normalize_key)
        self.merge_threshold = int(merge_threshold)
        self.reset()

    def reset(self) -> None:
        """Forget every document seen."""
        self._index = HashIndex(self.merge_threshold)

    @property
    def n_unique(self) -> int:
        """Number of distinct documents seen."""
        return len(self._index)

    def fingerprint(self, doc: Document) -> int:
        text = doc.text
        key = dedup_key_bytes(text) if self.normalize_key else text.encode("utf-8", "surrogatepass")
        return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")

    def fingerprint_batch(self, docs: Sequence[Document]) -> list[int]:
        """``[self.fingerprint(d) for d in docs]``: keys for all documents at once, hashes without a
        Python-level loop."""
        texts = list(map(_text, docs))
        if self.normalize_key:
            keys = dedup_keys(texts)
        else:
            keys = "\x00".join(texts).encode("utf-8", "surrogatepass").split(b"\x00")
            if len(keys) != len(texts):
                keys = [t.encode("utf-8", "surrogatepass") for t in texts]
        scan = accelerated.textscan
        digests = (
            scan.blake2b_64(keys) if scan is not None else b"".join(map(_digest, map(_blake2b_64, keys)))
        )
        return np.frombuffer(digests, dtype="<u8").tolist()

    def drop_reasons(self, fingerprints: Sequence[Any]) -> list[str | None]:
        n = len(fingerprints)
        if n == 0:
            return []
        index = self._index
        hashes = np.fromiter(fingerprints, dtype=np.uint64, count=n)
        recent = index.recent
        seen = np.fromiter(map(recent.__contains__, fingerprints), dtype=bool, count=n)
        if len(index.sorted):
            seen |= index.in_sorted(hashes)
        # New: not seen in an earlier batch, and the first copy within this one.
        new = np.zeros(n, dtype=bool)
        new[np.unique(hashes, return_index=True)[1]] = True
        new &= ~seen
        recent.update(compress(fingerprints, new.tolist()))
        reasons: list[str | None] = [None] * n
        for k in np.flatnonzero(~new).tolist():
            reasons[k] = "duplicate"
        index.merge_if_full()
        return reasons


_WORD = re.compile(r"\w+")

# -- what near-duplicate detection compares in one-line documents ---------------------------------

# Apostrophe look-alikes that are letters (U+02BC ʼ, U+02BB ʻ …) in Unicode, and the ligatures NFKD
# keeps: a word break or their spelled-out letters, so "c’est", "cʼest" and "c'est" (and "cœur",
# "coeur") give the same words. (str.replace of the few present is faster than str.translate.)
_NEAR_REPLACE = [*((c, " ") for c in "\u02bc\u02bb\u02bd\u02b9\u2032"), ("œ", "oe"), ("æ", "ae")]
_COMBINING = re.compile("[\u0300-\u036f]")  # the diacritics NFKD splits off Latin letters
_NEAR_WORD = re.compile(r"[^\W_]+")


def _near_form(text: str) -> str:
    text = text.casefold()
    if not text.isascii():
        text = _COMBINING.sub("", unicodedata.normalize("NFKD", _replaced(text, _NEAR_REPLACE)))
    return text


def near_words(text: str) -> list[str]:
    """The words that ``shingling = "short"`` compares: case-folded, accents removed (NFKD, then the
    combining diacritics dropped), any apostrophe style, punctuation, symbols and emoji as word breaks.

    >>> near_words("C’est l’Été 🎉!") == near_words("cʼest l'ete") == ["c", "est", "l", "ete"]
    True
    """
    return _NEAR_WORD.findall(_near_form(text))


def near_key_bytes(text: str) -> bytes:
    """UTF-8 of ``" ".join(near_words(text))``."""
    return " ".join(near_words(text)).encode("utf-8", "surrogatepass")


@functools.cache
def _near_table() -> np.ndarray:
    """uint16 per BMP code unit: what :func:`near_key_bytes` maps it to (0x20: a word break), or _RISKY
    where that is not one character (ß → ss, œ → oe, a lone combining mark, a surrogate)."""
    return cached("near-keys", _build_near_table, __file__)


def _build_near_table() -> np.ndarray:
    table = np.full(0x10000, _RISKY, dtype=np.uint16)
    for cp, form in enumerate(bmp_mapped(_near_form), start=1):
        if len(form) == 1 and ord(form) < _RISKY:
            table[cp] = ord(form) if _NEAR_WORD.fullmatch(form) else 0x20
        elif form and not _NEAR_WORD.search(form):
            table[cp] = 0x20  # only word breaks
    table[0xD800:0xE000] = _RISKY
    table[0xFFFF] = _RISKY
    table[0] = 0  # separates the texts
    return table


#: the letters :func:`_near_form` spells out (œ → oe), in either case: the same near key before it casefolds
_NEAR_EXPAND = [(c, new) for old, new in _NEAR_REPLACE if len(new) > 1 for c in (old, old.upper())]


def near_keys(texts: Sequence[str]) -> list[bytes]:
    """``[near_key_bytes(t) for t in texts]``, through the table of :func:`_near_table` (as
    :func:`dedup_keys`)."""
    return _table_keys(texts, _near_table(), near_key_bytes, _NEAR_EXPAND)


def _fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer on a uint64 array (in place): every input bit affects every output bit."""
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


# odd multipliers that combine word hashes into n-gram hashes (one per position; unigrams, bigrams and
# longer n-grams use different ones, so a word never equals a bigram)
_GRAM_MULTIPLIERS = np.random.default_rng(20261207).integers(
    0, 2**63, size=(3, 16), dtype=np.uint64
) * np.uint64(2) + np.uint64(1)


def short_features(keys: Sequence[bytes], short_words: int, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """The 32-bit feature hashes of each document (its :func:`near_keys`: words in UTF-8 between spaces),
    concatenated document after document, and each document's count: word 1- and 2-grams for a document
    of fewer than ``short_words`` words (unigrams, then bigrams), word ``ngram``-grams from there. A word
    is hashed with CRC-32, n-grams are combined with odd multipliers and mixed (:func:`_fmix64`). The C
    accelerator (``_speedups/minhash.c``) gives the same values without a Python object per word."""
    scan = accelerated.minhash
    if scan is not None:
        raw_features, raw_counts = scan.features(list(keys), short_words, ngram, _GRAM_MULTIPLIERS)
        return np.frombuffer(raw_features, dtype=np.uint32), np.frombuffer(raw_counts, dtype=np.int64)
    word_lists = [key.split() for key in keys]
    counts = np.fromiter(map(len, word_lists), dtype=np.int64, count=len(word_lists))
    n = int(counts.sum())
    if n == 0:
        return np.empty(0, dtype=np.uint32), np.zeros(len(word_lists), dtype=np.int64)
    w = np.fromiter(map(zlib.crc32, chain.from_iterable(word_lists)), dtype=np.uint64, count=n)
    doc = np.repeat(np.arange(len(counts)), counts)
    starts = np.cumsum(counts) - counts
    left = counts[doc] - (np.arange(n) - starts[doc])  # words from this one to the end of its document
    short = counts[doc] < short_words
    parts, owners = [], []
    # unigrams and bigrams of short documents
    parts.append(w[short] * _GRAM_MULTIPLIERS[0, 0])
    owners.append(doc[short])
    pair = short & (left >= 2)
    nxt = np.minimum(np.arange(n) + 1, n - 1)
    parts.append(w[pair] * _GRAM_MULTIPLIERS[1, 0] + w[nxt[pair]] * _GRAM_MULTIPLIERS[1, 1])
    owners.append(doc[pair])
    # n-grams of longer documents (short_words >= ngram, so each has at least one)
    long_ = ~short
    if long_.any():
        k = ngram
        first = np.flatnonzero(long_ & (left >= k))
        gram = np.zeros(len(first), dtype=np.uint64)
        for j in range(k):
            gram += w[first + j] * _GRAM_MULTIPLIERS[2, j]
        parts.append(gram)
        owners.append(doc[first])
    values = np.concatenate(parts)
    owner = np.concatenate(owners)
    order = np.argsort(owner, kind="stable")
    features = (_fmix64(values[order]) >> np.uint64(32)).astype(np.uint32)
    return features, np.bincount(owner, minlength=len(counts)).astype(np.int64)


def batch_signatures(features: np.ndarray, counts: np.ndarray, permutations: np.ndarray) -> np.ndarray:
    """MinHash signatures (uint32, ``[documents, num_perm]``) of documents given as concatenated feature
    hashes and counts: for each permutation ``h → a·h + b mod 2³²`` (datasketch's ``affine32``
    parameters), the smallest value over the document's features. Rows of documents without features
    are ``2³² − 1``. Works in chunks of about 16,384 features, so memory stays at a few MB; the C
    accelerator (``_speedups/minhash.c``) gives the same values several times faster."""
    a, b = permutations
    scan = accelerated.minhash
    if scan is not None:
        raw = scan.signatures(
            np.ascontiguousarray(features, dtype=np.uint32),
            np.ascontiguousarray(counts, dtype=np.int64),
            np.ascontiguousarray(a, dtype=np.uint32),
            np.ascontiguousarray(b, dtype=np.uint32),
        )
        return np.frombuffer(raw, dtype=np.uint32).reshape(len(counts), len(a))
    sig = np.full((len(counts), len(a)), np.iinfo(np.uint32).max, dtype=np.uint32)
    doc = np.repeat(np.arange(len(counts)), counts)
    step = max(1, 1 << 21 >> max(0, len(a).bit_length() - 1))  # ~2M values per chunk
    for lo in range(0, len(features), step):
        hi = min(lo + step, len(features))
        values = features[lo:hi, None] * a + b  # wraps mod 2**32
        owners = doc[lo:hi]
        cuts = np.flatnonzero(np.diff(owners, prepend=-1))  # where each document's run starts
        mins = np.minimum.reduceat(values, cuts, axis=0)
        rows = owners[cuts]
        sig[rows] = np.minimum(sig[rows], mins)
    return sig


@functools.cache
def _scheme() -> dict[str, str]:
    """datasketch >= 2.0 asks which permutation scheme hash values come from; older versions have one."""
    import inspect

    from datasketch import MinHash

    return {"scheme": "affine32"} if "scheme" in inspect.signature(MinHash.__init__).parameters else {}


def _datasketch_sources() -> list[str]:
    """The files that decide datasketch's permutations and LSH parameters (the table cache's key), found
    without importing datasketch (which imports scipy: 0.4 s of the driver's time per prepare run)."""
    spec = importlib.util.find_spec("datasketch")
    if spec is None or spec.origin is None:
        raise ImportError("minhash_dedup needs datasketch (pip install datasketch)")
    package = Path(spec.origin).parent
    return [str(package / "minhash.py"), str(package / "lsh.py"), __file__]


@functools.cache
def _permutations(num_perm: int, seed: int) -> np.ndarray:
    """datasketch's affine permutation parameters ``(a, b)`` as uint32 (``[2, num_perm]``), kept in the
    table cache."""

    def build() -> np.ndarray:
        from datasketch import MinHash

        return np.asarray(MinHash(num_perm=num_perm, seed=seed, **_scheme()).permutations).astype(np.uint32)

    return cached(f"minhash-permutations-{num_perm}-{seed}", build, *_datasketch_sources())


@functools.cache
def _bands_and_rows(threshold: float, num_perm: int) -> tuple[int, int]:
    """datasketch's choice of LSH bands and rows per band for this threshold (fewest errors, equal
    weights), kept in the table cache."""

    def build() -> np.ndarray:
        from datasketch import MinHashLSH

        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        return np.array([lsh.b, lsh.r], dtype=np.int64)

    bands, rows = cached(f"lsh-bands-{threshold!r}-{num_perm}", build, *_datasketch_sources()).tolist()
    return int(bands), int(rows)


#: the default ``threshold`` and ``num_perm`` of each ``shingling`` (64 permutations catch one-word edits
#: of one-line documents as well as 128 do, in half the memory: ``bench/bench_neardup.py``)
_THRESHOLDS = {"words": 0.8, "short": 0.5}
_NUM_PERMS = {"words": 128, "short": 64}


class MinHashDedup:
    """Drops near-duplicates with MinHash LSH, keeping the first copy (recipe: ``use = "minhash_dedup"``).

    ``shingling = "words"`` (default): a document is the set of its word ``ngram``-grams (lower-cased
    words; a document shorter than ``ngram`` words is one shingle of all its words). Its MinHash signature
    (datasketch, ``num_perm`` permutations from ``seed``) is cut into LSH bands, with datasketch's choice
    of bands and rows for ``threshold`` (9 bands of 13 rows for 0.8 and 128 permutations): two documents
    that agree on a whole band are near-duplicates, which happens with high probability above the
    threshold Jaccard similarity and rarely below it. Example: a 40-word text and the same text with one
    word changed in the middle share 31 of 41 distinct 5-word shingles (Jaccard 0.76), so they are caught
    at ``threshold = 0.7`` but mostly not at 0.8; one word changed at the end leaves Jaccard 0.95. On
    one-line documents this misses most edits (a 20-word line has 16 shingles; one edit changes 5).

    ``shingling = "short"`` is made for one-line documents: the words of :func:`near_words` (case,
    accents, apostrophe style, punctuation and emoji ignored), then word 1- and 2-grams for a document of
    fewer than ``short_words`` words and ``ngram``-grams from there (:func:`short_features`; a one-word
    edit in a 10-word line leaves Jaccard ≈ 0.73), ``threshold`` 0.5 and ``num_perm`` 64 unless given
    (14 bands of 4 rows); signatures are computed for a whole batch at once (:func:`batch_signatures`,
    datasketch's permutations), and every LSH candidate is verified (as with ``verify = true``).

    ``verify = true``: a candidate pair is a near-duplicate only when the Jaccard similarity estimated
    from the full signatures (their lowest 8 bits, b-bit MinHash, so ``num_perm`` bytes per kept
    document) reaches ``threshold``; the band collisions of unrelated documents are then thrown out.

    ``duplicates = "tag"`` keeps near-duplicates instead of dropping them and tells the pipeline which
    earlier kept document each one resembles (:meth:`decide_clusters`): the splitter then puts every
    member of a cluster on the side of its first member, so validation never holds a variant of a
    training document. ``"drop"`` (default) drops them (reason ``near_duplicate``).

    The worker computes the signature and reduces each band to a 64-bit hash, so the fingerprint is
    one ``uint64`` per band (plus the b-bit signature when candidates are verified or clusters tagged);
    the main process keeps the band hashes of kept documents in a :class:`HashIndex` (~8 bytes per band:
    ~72 bytes per kept document at the defaults, against a few kilobytes in datasketch's
    ``MinHashLSH``), and decides in 1 to 10 µs per document (more as the index outgrows the CPU cache).
    Its decisions are those of a ``MinHashLSH`` with the same settings, up to 64-bit hash collisions.
    Verifying or tagging keeps, per kept document, its band hashes with its number in a hash table
    (:class:`_BandTable`: 17 to 34 bytes per band), its b-bit signature (``num_perm`` bytes) and its serial
    (in arrays that double as they grow): 310 to 620 bytes at the ``"short"`` defaults. It compares a document with the first kept document of
    each candidate band only. A document without words is never a near-duplicate.
    """

    name: ClassVar[str] = "minhash_dedup"
    stateful: ClassVar[bool] = True

    def __init__(
        self,
        ngram: int = 5,
        threshold: float | None = None,
        num_perm: int | None = None,
        seed: int = 1,
        merge_threshold: int = 262_144,
        shingling: Literal["words", "short"] = "words",
        short_words: int = 40,
        verify: bool = False,
        duplicates: Literal["drop", "tag"] = "drop",
    ) -> None:
        if shingling not in _THRESHOLDS:
            raise ValueError(f"shingling must be 'words' or 'short', not {shingling!r}")
        if duplicates not in ("drop", "tag"):
            raise ValueError(f"duplicates must be 'drop' or 'tag', not {duplicates!r}")
        threshold = _THRESHOLDS[shingling] if threshold is None else threshold
        num_perm = _NUM_PERMS[shingling] if num_perm is None else num_perm
        if ngram < 1:
            raise ValueError(f"ngram must be at least 1, not {ngram}")
        if shingling == "short" and ngram > _GRAM_MULTIPLIERS.shape[1]:
            raise ValueError(f"ngram must be at most {_GRAM_MULTIPLIERS.shape[1]} with shingling 'short'")
        if not 0.0 < float(threshold) < 1.0:
            raise ValueError(f"threshold must be between 0 and 1 (exclusive), not {threshold}")
        if num_perm < 2:
            raise ValueError(f"num_perm must be at least 2, not {num_perm}")
        if merge_threshold < 1:
            raise ValueError(f"merge_threshold must be at least 1, not {merge_threshold}")
        if shingling == "short" and not ngram <= short_words:
            raise ValueError(f"short_words must be at least ngram ({ngram}), not {short_words}")
        self.ngram = int(ngram)
        self.threshold = float(threshold)
        self.num_perm = int(num_perm)
        self.seed = int(seed)
        self.merge_threshold = int(merge_threshold)
        self.shingling = shingling
        self.short_words = int(short_words)
        self.verify = bool(verify) or shingling == "short"
        self.duplicates = duplicates
        self.bands, self.rows = _bands_and_rows(self.threshold, self.num_perm)
        # datasketch's permutations, taken here so that worker processes need not import datasketch
        self._permutations = _permutations(self.num_perm, self.seed) if shingling == "short" else None
        rng = np.random.default_rng(self.seed)
        # Random odd multipliers, one per (band, row): a band's hash is sum(value * multiplier) mod 2**64,
        # and different multipliers per band keep equal values in different bands apart. Two different
        # bands collide with probability at most 2**-32 (typically 2**-63: the multipliers are odd).
        shape = (self.bands, self.rows)
        self._multipliers = rng.integers(
            0, 2**64 - 1, size=shape, dtype=np.uint64, endpoint=True
        ) | np.uint64(1)
        self._sketch: Any = None  # a reusable datasketch.MinHash, made in each process on first use
        self.reset()

    @property
    def _clustered(self) -> bool:
        """Whether decisions go through :class:`ClusterIndex` (verified candidates, or tagged clusters)."""
        return self.verify or self.duplicates == "tag"

    def reset(self) -> None:
        """Forget every document seen."""
        self._index = HashIndex(self.merge_threshold)
        self._clusters = ClusterIndex(self.bands, self.num_perm, self.threshold)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_sketch"] = None
        return state

    def shingles(self, text: str) -> list[bytes]:
        words = _WORD.findall(text.lower())
        n = self.ngram
        if len(words) <= n:
            return [" ".join(words).encode()] if words else []
        return [" ".join(words[i : i + n]).encode() for i in range(len(words) - n + 1)]

    def signature(self, text: str) -> np.ndarray | None:
        """The MinHash signature of ``text`` (``num_perm`` hash values), or None without words.

        With ``shingling = "words"``, shingles are hashed with CRC-32 (datasketch mixes each input hash
        before permuting it), which is several times faster than datasketch's default SHA-1 and as good
        for this purpose. With ``"short"``, it is a row of :func:`batch_signatures`.
        """
        if self.shingling == "short":
            sig = self._signatures([text])
            return None if sig is None else sig[0]
        shingles = self.shingles(text)
        if not shingles:
            return None
        sketch = self._sketch
        if sketch is None:
            from datasketch import MinHash

            sketch = self._sketch = MinHash(
                num_perm=self.num_perm, seed=self.seed, hashfunc=zlib.crc32, **_scheme()
            )
        sketch.clear()
        sketch.update_batch(set(shingles))
        return sketch.hashvalues.copy()

    def _signatures(self, texts: Sequence[str]) -> np.ndarray | None:
        """The ``"short"`` signatures of ``texts`` (rows of documents without words: all ``2³² − 1``),
        or None when none has a word."""
        features, counts = short_features(near_keys(texts), self.short_words, self.ngram)
        if not len(features):
            return None
        return batch_signatures(features, counts, self._permutations)

    def _band_hashes(self, sig: np.ndarray) -> np.ndarray:
        """``[documents, bands]`` uint64: each band's row values combined (see ``_multipliers``)."""
        values = sig[:, : self.bands * self.rows].astype(np.uint64).reshape(len(sig), self.bands, self.rows)
        return (values * self._multipliers).sum(axis=2, dtype=np.uint64)

    def _packed(self, sig: np.ndarray) -> list[bytes]:
        """Per document, its band hashes (little-endian uint64) then its b-bit signature (the lowest 8 bits
        of each value): what :class:`ClusterIndex` reads."""
        rows = np.concatenate(
            [self._band_hashes(sig).astype("<u8").view(np.uint8), (sig & 0xFF).astype(np.uint8)], axis=1
        )
        width = rows.shape[1]
        blob = rows.tobytes()
        return [blob[i : i + width] for i in range(0, len(blob), width)]

    def fingerprint(self, doc: Document) -> Any:
        """One 64-bit hash per LSH band (``bands`` uint64), or None for a document without words. When
        candidates are verified or clusters tagged: bytes, the band hashes then the b-bit signature."""
        return self.fingerprint_batch([doc])[0]

    def fingerprint_batch(self, docs: Sequence[Document]) -> list[Any]:
        """``[self.fingerprint(d) for d in docs]``; for ``shingling = "short"``, one vectorized pass."""
        if self.shingling == "short":
            texts = list(map(_text, docs))
            sig = self._signatures(texts)
            if sig is None:
                return [None] * len(docs)
            packed = self._packed(sig)
            empty = np.all(sig == np.iinfo(np.uint32).max, axis=1).tolist()
            return [None if e else p for e, p in zip(empty, packed, strict=True)]
        out: list[Any] = []
        for doc in docs:
            sig = self.signature(doc.text)
            if sig is None:
                out.append(None)
            elif self._clustered:
                out.append(self._packed(sig[None, :])[0])
            else:
                out.append(self._band_hashes(sig[None, :])[0])
        return out

    def drop_reasons(self, fingerprints: Sequence[Any]) -> list[str | None]:
        if self._clustered:
            return self.decide_clusters(fingerprints, None)[0]
        reasons: list[str | None] = [None] * len(fingerprints)
        positions = [i for i, fp in enumerate(fingerprints) if fp is not None]
        if not positions:
            return reasons
        index = self._index
        keys = np.stack([fingerprints[i] for i in positions])
        seen_before = index.in_sorted(keys).any(axis=1).tolist()
        recent = index.recent
        for i, old, bands in zip(positions, seen_before, keys.tolist(), strict=True):
            if old or not recent.isdisjoint(bands):
                reasons[i] = "near_duplicate"
            else:
                recent.update(bands)
        index.merge_if_full()
        return reasons

    def decide_clusters(
        self, fingerprints: Sequence[Any], serials: Sequence[int] | None
    ) -> tuple[list[str | None], list[int | None]]:
        """Drop reasons and clusters (see :class:`~qckit.components.StatefulFilter`): a near-duplicate is
        dropped (``duplicates = "drop"``) or kept with the serial of the kept document it resembles
        (``"tag"``)."""
        if not self._clustered:
            return self.drop_reasons(fingerprints), [None] * len(fingerprints)
        of = self._clusters.decide(fingerprints, serials)
        if self.duplicates == "tag":
            return [None] * len(of), of
        return ["near_duplicate" if c is not None else None for c in of], [None] * len(of)


class _BandTable:
    """Band hash → the first kept document with that band: open addressing with linear probing over two
    arrays, ``keys`` (``uint64``, 0 marks an empty slot: :meth:`ClusterIndex.decide` stores a band hash of 0
    as 1) and ``docs`` (``uint32``). A key's first slot is ``fmix64(key) & (capacity − 1)``; the capacity is
    a power of two, doubled before the table would be more than 70 % full, so 12 bytes per slot come to
    17 to 34 bytes per band. ``_speedups/minhash.c`` reads and fills the same arrays."""

    MAX_LOAD = 0.7

    def __init__(self) -> None:
        self.keys = np.zeros(1024, dtype=np.uint64)
        self.docs = np.zeros(1024, dtype=np.uint32)
        self.used = 0

    def __len__(self) -> int:
        return self.used

    def _slots(self, keys: np.ndarray) -> np.ndarray:
        return (_fmix64(keys.astype(np.uint64)) & np.uint64(len(self.keys) - 1)).astype(np.int64)

    def reserve(self, more: int) -> None:
        """Room for ``more`` bands (the capacity doubles until they fit under the load limit)."""
        capacity = len(self.keys)
        while self.used + more > self.MAX_LOAD * capacity:
            capacity *= 2
        if capacity == len(self.keys):
            return
        filled = np.flatnonzero(self.keys)
        keys, docs = self.keys[filled], self.docs[filled]
        self.keys = np.zeros(capacity, dtype=np.uint64)
        self.docs = np.zeros(capacity, dtype=np.uint32)
        self.used = 0
        self._insert(keys, docs)

    def find(self, keys: np.ndarray) -> np.ndarray:
        """The document of each band hash (any shape, none 0), or -1."""
        flat = keys.ravel()
        found = np.full(len(flat), -1, dtype=np.int64)
        pending = np.arange(len(flat))
        slots = self._slots(flat)
        mask = len(self.keys) - 1
        while len(pending):
            held = self.keys[slots]
            hit = held == flat[pending]
            found[pending[hit]] = self.docs[slots[hit]]
            go_on = ~hit & (held != 0)
            pending, slots = pending[go_on], (slots[go_on] + 1) & mask
        return found.reshape(keys.shape)

    def add(self, keys: np.ndarray, docs: np.ndarray) -> None:
        """Add band hashes that are not in the table, each once (room reserved)."""
        self.reserve(len(keys))
        self._insert(keys, docs)

    def _insert(self, keys: np.ndarray, docs: np.ndarray) -> None:
        scan = accelerated.minhash
        if scan is not None:
            keys = np.ascontiguousarray(keys, dtype=np.uint64)
            self.used += scan.insert(
                self.keys, self.used, self.docs, keys, np.ascontiguousarray(docs, dtype=np.uint32)
            )
            return
        # every key goes to the first empty slot of its probe sequence; keys contending for one slot take it
        # in turn, so each key's probe path is filled up to its slot (all that lookups need)
        mask = len(self.keys) - 1
        slots = self._slots(keys)
        pending = np.arange(len(keys))
        while len(pending):
            held = self.keys[slots]
            absent = held != keys[pending]  # a key met again (given twice) is in the table: done, as in C
            pending, slots, held = pending[absent], slots[absent], held[absent]
            free = held == 0
            _, first = np.unique(np.where(free, slots, -1), return_index=True)
            won = first[free[first]]
            self.keys[slots[won]] = keys[pending[won]]
            self.docs[slots[won]] = docs[pending[won]]
            self.used += len(won)
            lost = np.ones(len(pending), dtype=bool)
            lost[won] = False
            pending = pending[lost]
            slots = np.where(free[lost], slots[lost], (slots[lost] + 1) & mask)


#: the most kept documents a :class:`ClusterIndex` numbers (its band table's ``uint32`` document numbers)
_MAX_KEPT = 2**32 - 1


class ClusterIndex:
    """The kept documents of a verifying or tagging :class:`MinHashDedup`: band hash → the first kept
    document with that band (:class:`_BandTable`), and each kept document's b-bit signature and serial.

    A document joins the earliest candidate (the first kept document of one of its bands) whose signature
    agrees on enough values: ``(matches / num_perm − 1/256) / (1 − 1/256) >= threshold`` (two
    different values have the same lowest 8 bits once in 256). Only kept documents enter the index, so
    clusters are stars around their first document and never chain. A batch is decided one document after
    the other in the ``_minhash`` accelerator; without it, in numpy: the documents of a batch that share no
    band with anything (nearly all) are kept and indexed together, the others decided one by one, in
    order. Both fill the same arrays, with the same decisions.
    """

    def __init__(self, bands: int, num_perm: int, threshold: float) -> None:
        self.bands = bands
        self.num_perm = num_perm
        self.threshold = threshold
        self.index = _BandTable()
        self.sketches = np.empty((0, num_perm), dtype=np.uint8)
        self.serials = np.empty(0, dtype=np.int64)
        self.n_docs = 0  # kept documents
        self.offered = 0  # documents seen, the serials when none are given
        # matches needed: the smallest count whose estimate reaches the threshold
        self.min_matches = int(np.ceil((threshold * (1 - 1 / 256) + 1 / 256) * num_perm - 1e-9))

    def __len__(self) -> int:
        return self.n_docs

    def decide(self, fingerprints: Sequence[Any], serials: Sequence[int] | None) -> list[int | None]:
        """Per document, the serial of the kept document it is a near-duplicate of, or None (then it is
        kept and indexed)."""
        n = len(fingerprints)
        if serials is None:
            serials = range(self.offered, self.offered + n)
        self.offered += n
        out: list[int | None] = [None] * n
        positions = [i for i, fp in enumerate(fingerprints) if fp is not None]
        if not positions:
            return out
        m, b, width = len(positions), self.bands, 8 * self.bands
        rows = np.frombuffer(b"".join([fingerprints[i] for i in positions]), dtype=np.uint8)
        rows = rows.reshape(m, width + self.num_perm)
        keys = rows[:, :width].copy().view("<u8").astype(np.uint64)
        keys[keys == 0] = 1  # 0 marks the band table's empty slots
        sketches = np.ascontiguousarray(rows[:, width:])
        batch_serials = np.array([serials[i] for i in positions], dtype=np.int64)
        self._reserve(m)
        self.index.reserve(m * b)
        scan = accelerated.minhash
        if scan is not None:
            matched = np.empty(m, dtype=np.int64)
            self.n_docs, added = scan.decide(
                self.index.keys, self.index.used, self.index.docs, self.sketches, self.serials, self.n_docs,
                keys, sketches, batch_serials, self.min_matches, matched,
            )  # fmt: skip
            self.index.used += added
            for r, serial in zip(
                np.flatnonzero(matched >= 0).tolist(), matched[matched >= 0].tolist(), strict=True
            ):
                out[positions[r]] = serial
            return out
        found = self.index.find(keys)  # the first kept document of each band before this batch, or -1
        _, first, inverse, counts = np.unique(
            keys.ravel(), return_index=True, return_inverse=True, return_counts=True
        )
        row = np.repeat(np.arange(m), b)
        inverse = inverse.ravel()
        shared_earlier = (row[first[inverse]] < row).reshape(m, b)
        in_batch = (counts[inverse] > 1).reshape(m, b)  # a band another document of the batch has
        slow = (found >= 0).any(axis=1) | shared_earlier.any(axis=1)
        ordered = slow | in_batch.any(axis=1)  # decided in order: slow, or a band a later one may share
        number = np.full(m, -1, dtype=np.int64)  # each kept document's number in the index
        alone = np.flatnonzero(~ordered)
        number[alone] = self._keep(sketches[alone], batch_serials[alone])
        # a document whose bands meet only earlier batches (none shared within this one) cannot meet another
        # document of this batch: its candidates are all known, so it is decided with the others at once
        independent = slow & ~in_batch.any(axis=1)
        rows_ = np.flatnonzero(independent)
        if len(rows_):
            matched = self._first_matches(found[rows_], sketches[rows_])
            for r, serial in zip(rows_.tolist(), matched.tolist(), strict=True):
                if serial >= 0:
                    out[positions[r]] = serial
            fresh = rows_[matched < 0]
            number[fresh] = self._keep(sketches[fresh], batch_serials[fresh])
        owner: dict[int, int] = {}  # band shared within the batch → its first kept document's number
        for r in np.flatnonzero(ordered & ~independent).tolist():
            shared = [int(k) for k in keys[r][in_batch[r]].tolist()]
            if slow[r]:
                candidates = {d for d in found[r].tolist() if d >= 0}
                candidates.update(owner[k] for k in shared if k in owner)
                match = next(
                    (
                        d
                        for d in sorted(candidates, key=self.serials.__getitem__)
                        if np.count_nonzero(self.sketches[d] == sketches[r]) >= self.min_matches
                    ),
                    None,
                )
                if match is not None:
                    out[positions[r]] = int(self.serials[match])
                    continue
            number[r] = self._keep(sketches[r : r + 1], batch_serials[r : r + 1])[0]
            # a band an earlier batch has keeps that batch's document as its first (found, not owner)
            for k, before in zip(shared, found[r][in_batch[r]].tolist(), strict=True):
                if before < 0:
                    owner.setdefault(k, int(number[r]))
        # index the bands of the kept documents that no earlier document has, each with its first owner
        kept = number >= 0
        new = kept[:, None] & (found < 0)
        band_keys, band_docs = keys[new], np.broadcast_to(number[:, None], keys.shape)[new]
        if owner:  # bands shared within the batch: only their first kept document's entry
            shared_keys = np.fromiter(owner.keys(), dtype=np.uint64, count=len(owner))
            shared_docs = np.fromiter(owner.values(), dtype=np.int64, count=len(owner))
            order = np.argsort(shared_keys)
            shared_keys, shared_docs = shared_keys[order], shared_docs[order]
            at = np.minimum(np.searchsorted(shared_keys, band_keys), len(shared_keys) - 1)
            mine = (shared_keys[at] != band_keys) | (shared_docs[at] == band_docs)
            band_keys, band_docs = band_keys[mine], band_docs[mine]
        self.index.add(band_keys, band_docs)
        return out

    def _first_matches(self, candidates: np.ndarray, sketches: np.ndarray) -> np.ndarray:
        """Per row, the serial of the earliest candidate (kept documents' numbers, -1 for none) whose signature
        agrees with the row's sketch on enough values; -1 where none does (:meth:`decide`'s rule, in numpy)."""
        valid = candidates >= 0
        safe = np.where(valid, candidates, 0)
        agree = np.count_nonzero(self.sketches[safe] == sketches[:, None, :], axis=2)
        ok = valid & (agree >= self.min_matches)
        serials = np.where(ok, self.serials[safe], np.iinfo(np.int64).max)
        best = serials.min(axis=1)
        return np.where(ok.any(axis=1), best, -1)

    def _keep(self, sketches: np.ndarray, serials: np.ndarray) -> np.ndarray:
        """Store kept documents (room reserved); their numbers."""
        start = self.n_docs
        self.n_docs += len(serials)
        self.sketches[start : self.n_docs] = sketches
        self.serials[start : self.n_docs] = serials
        return np.arange(start, self.n_docs, dtype=np.int64)

    def _reserve(self, more: int) -> None:
        """Room for ``more`` kept documents (capacity doubles, so growing costs linear time)."""
        need = self.n_docs + more
        if need > _MAX_KEPT:
            raise ValueError(
                f"more than {_MAX_KEPT:,} kept documents: the band table numbers them in 32 bits"
            )
        if need <= len(self.serials):
            return
        size = max(need, 2 * len(self.serials), 1024)
        sketches = np.empty((size, self.num_perm), dtype=np.uint8)
        sketches[: self.n_docs] = self.sketches[: self.n_docs]
        serials = np.empty(size, dtype=np.int64)
        serials[: self.n_docs] = self.serials[: self.n_docs]
        self.sketches, self.serials = sketches, serials
