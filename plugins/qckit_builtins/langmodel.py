"""py3langid's model, shared by the language filters: loaded once per process, scored a batch at a time.

:func:`identifier` is py3langid's own classifier (the ``langid`` filter classifies with it, text by
text). :func:`features` and :class:`LanguageScorer` give the same model's probabilities for a whole
batch: the features of every text at once (py3langid's byte-level DFA walk, in C with
``accelerated.textscan``, else py3langid's own Python walk: the same counts in the same order), then one
numpy pass per batch for the scores. A batch's features serve several scorers, so a text is walked once
whether it is scored among a few candidates or, to name what it is, among all 97 languages. Their arrays
(:func:`model_table`) are memory-mapped from qckit's table cache: the workers share them, and only the
first run per cache loads py3langid's model to write them.

The probabilities are py3langid's ``norm_probs`` ones (the naive-Bayes log scores divided by the square
root of the text's UTF-8 length, then a softmax over the scored languages) up to float32 rounding: the
sums run in another order than py3langid's matrix product, the same order for a text whatever the batch.
"""

from __future__ import annotations

import copy
import functools
import re
import threading
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qckit.table_cache import cached_table
from qckit_builtins import accelerated

_CODE = re.compile(r"[a-z]{2,3}")
_IDENTIFIERS: dict[tuple[str, ...] | None, Any] = {}  # one classifier per candidate set and process
_LOCK = threading.Lock()


def identifier(candidates: tuple[str, ...] | None) -> Any:
    """A py3langid classifier with normalized probabilities, restricted to ``candidates`` when given.

    Loading the model takes ~0.6 s and ~90 MB; it happens once per process. A restricted classifier
    shares the full one's tables (only its class columns are its own).
    """
    with _LOCK:
        ident = _IDENTIFIERS.get(candidates)
        if ident is None:
            full = _IDENTIFIERS.get(None)
            if full is None:
                from py3langid import langid as pl

                if hasattr(pl.LanguageIdentifier, "from_model_file"):  # py3langid >= 0.4
                    full = pl.LanguageIdentifier.from_model_file(pl.MODEL_FILE, norm_probs=True)
                else:  # py3langid 0.3
                    full = pl.LanguageIdentifier.from_pickled_model(pl.MODEL_FILE, norm_probs=True)
                _IDENTIFIERS[None] = full
            ident = full
            if candidates is not None:
                check_known("candidates", candidates)
                ident = copy.copy(full)  # set_languages replaces the class columns, never the tables
                ident.set_languages(list(candidates))
                _IDENTIFIERS[candidates] = ident
        return ident


def language_codes(key: str, value: list[str] | str) -> tuple[str, ...]:
    """A recipe's list of ISO 639 codes (one string is a list of one), lower-cased, duplicates removed;
    ``ValueError`` naming ``key`` when it is empty or holds something else than a code. Whether
    py3langid knows the codes is :func:`check_known`'s question (it needs the model)."""
    if isinstance(value, str):
        value = [value]
    codes = tuple(dict.fromkeys(str(code).strip().lower() for code in value))
    if not codes:
        raise ValueError(f"{key} must name at least one language")
    bad = [code for code in codes if not _CODE.fullmatch(code)]
    if bad:
        raise ValueError(f"{key}: {', '.join(bad)} is not an ISO 639 code such as 'fr'")
    return codes


def check_known(key: str, codes: Sequence[str]) -> None:
    """``ValueError`` naming ``key`` and the codes py3langid does not know."""
    unknown = sorted(set(codes) - set(model_table("classes").tolist()))
    if unknown:
        raise ValueError(f"{key}: py3langid does not know {', '.join(unknown)}")


@functools.cache
def _model_arrays() -> dict[str, np.ndarray]:
    """The full model as flat arrays (loads py3langid's model: ~0.6 s)."""
    ident = identifier(None)
    return {
        "nextmove": np.asarray(ident.tk_nextmove, dtype=np.uint32),  # the DFA's distinct rows
        "rows": np.asarray(ident.tk_row, dtype=np.uint32) << 8,  # a state's row offset in nextmove
        "output": np.asarray(ident.tk_output, dtype=np.int32),  # the feature a state emits, or -1
        "ptc": np.asarray(ident.nb_ptc),  # log P(feature | class), float16, features × classes
        "pc": np.asarray(ident.nb_pc, dtype=np.float32),  # log P(class)
        "classes": np.array(ident.nb_classes),  # the class columns' codes (an alias repeats a code)
    }


@functools.cache
def model_table(name: str) -> np.ndarray:
    """One array of py3langid's full model (``nextmove``, ``rows``, ``output``, ``ptc``, ``pc``,
    ``classes``), kept in qckit's table cache (:mod:`qckit.table_cache`, memory-mapped): loading the
    model once per worker would cost each ~0.6 s of CPU and ~130 MB of its own; mapped, the workers
    share the pages and load nothing. The key is this module and py3langid's code and model file."""
    return cached_table(f"py3langid-{name}", lambda: _model_arrays()[name], _model_sources(), mmap=True)


@functools.cache
def _model_sources() -> list[str]:
    import py3langid
    from py3langid import langid as pl

    package = Path(py3langid.__file__).parent
    return [__file__, pl.__file__, str(package / "modelio.py"), str(package / pl.MODEL_FILE)]


class _Tables:
    """The DFA of the full model as the flat arrays ``textscan.langid_features`` reads."""

    def __init__(self) -> None:
        self.nextmove = model_table("nextmove")
        self.rows = model_table("rows")
        self.output = model_table("output")
        self.n_features = int(model_table("ptc").shape[0])


@functools.cache
def _tables() -> _Tables:
    return _Tables()


@functools.cache
def _python_walk() -> tuple[Any, list[int], Any]:
    """py3langid's own Python DFA walk and its tables (the fallback without the C accelerator)."""
    from py3langid.langid import visit_counts

    ident = identifier(None)
    return visit_counts, [row << 8 for row in ident.tk_row], ident


def utf8(text: str) -> bytes:
    """The bytes py3langid classifies for ``text``: lower-cased when all upper case, NFC, UTF-8."""
    if text.isupper():
        text = text.lower()
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    return text.encode("utf-8", "surrogatepass")


class Features:
    """The features of a batch of texts: text ``k``'s distinct feature ids are
    ``ids[bounds[k]:bounds[k + 1]]`` (in the order of their first occurrence), ``weights`` their
    ``log1p(count)`` alike (float32), ``sizes[k]`` its UTF-8 length."""

    __slots__ = ("bounds", "ids", "sizes", "weights")

    def __init__(self, bounds: np.ndarray, ids: np.ndarray, weights: np.ndarray, sizes: np.ndarray) -> None:
        self.bounds = bounds
        self.ids = ids
        self.weights = weights
        self.sizes = sizes

    def __len__(self) -> int:
        return len(self.sizes)

    def take(self, rows: Sequence[int]) -> Features:
        """The features of the texts at ``rows`` only, in that order."""
        index = np.asarray(rows, dtype=np.intp)
        starts, ends = self.bounds[index], self.bounds[index + 1]
        lengths = ends - starts
        bounds = np.zeros(len(index) + 1, dtype=np.int64)
        np.cumsum(lengths, out=bounds[1:])
        picked = np.repeat(starts - bounds[:-1], lengths) + np.arange(bounds[-1])
        return Features(bounds, self.ids[picked], self.weights[picked], self.sizes[index])


def features(texts: Sequence[str]) -> Features:
    """The features of every text (see :class:`Features`), as py3langid counts them."""
    encoded = [utf8(text) for text in texts]
    scan = accelerated.textscan
    if scan is not None:
        tables = _tables()
        raw_bounds, raw_ids, raw_counts = scan.langid_features(
            encoded, tables.nextmove, tables.rows, tables.output, tables.n_features
        )
        bounds = np.frombuffer(raw_bounds, dtype=np.int64)
        ids = np.frombuffer(raw_ids, dtype=np.int32)
        counts = np.frombuffer(raw_counts, dtype=np.int32)
    else:
        walk, rows, ident = _python_walk()
        found = [walk(ident.tk_nextmove, rows, ident.tk_output, text) or {} for text in encoded]
        bounds = np.zeros(len(found) + 1, dtype=np.int64)
        np.cumsum([len(counter) for counter in found], out=bounds[1:])
        ids = np.fromiter((f for counter in found for f in counter), dtype=np.int32, count=int(bounds[-1]))
        counts = np.fromiter(
            (c for counter in found for c in counter.values()), dtype=np.int32, count=int(bounds[-1])
        )
    sizes = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    return Features(bounds, ids, np.log1p(counts.astype(np.float32)), sizes)


#: table cells (features × languages) scored at once: 4 MB of float32
_CHUNK_CELLS = 1 << 20


class LanguageScorer:
    """The normalized probabilities of ``candidates`` (all of py3langid's languages for None) for the
    texts of a :class:`Features`: py3langid's own with ``set_languages(candidates)``.

    ``codes``: the languages, in the model's order (the columns of :meth:`probabilities`).
    """

    def __init__(self, candidates: tuple[str, ...] | None) -> None:
        if candidates is not None:
            check_known("candidates", candidates)
        classes = model_table("classes").tolist()
        ptc = model_table("ptc")
        columns = [i for i, code in enumerate(classes) if candidates is None or code in candidates]
        labels = [classes[i] for i in columns]
        self.codes = list(dict.fromkeys(labels))
        # a label in several columns (py3langid's script aliases: srl → sr): their sum, in its first
        self._first = [labels.index(code) for code in self.codes]
        self._aliases = [(labels.index(code), i) for i, code in enumerate(labels) if labels.index(code) != i]
        # float16, as stored; the candidates' columns are an entry of their own (a copy made here would
        # read the whole table in every worker)
        if candidates is None:
            self._table = ptc
        else:
            self._table = cached_table(
                f"py3langid-columns-{'-'.join(self.codes)}",
                lambda: np.ascontiguousarray(ptc[:, columns]),
                _model_sources(),
                mmap=True,
            )
        self._prior = np.asarray(model_table("pc"), dtype=np.float32)[columns]

    def probabilities(self, feats: Features) -> np.ndarray:
        """A (texts × codes) float32 array; a text without any feature gets the uniform distribution."""
        n, bounds = len(feats), feats.bounds
        scores = np.zeros((n, len(self._prior)), dtype=np.float32)
        present = np.flatnonzero(bounds[1:] > bounds[:-1])
        # the texts in runs of about _CHUNK_CELLS table cells, so that a batch of long texts scored among
        # every language never needs a large temporary; a text's rows are summed in order within it,
        # so its sums do not depend on the rest of the batch nor on the runs
        per_run = max(1, _CHUNK_CELLS // len(self._prior))
        done = 0
        while done < len(present):
            first_feature = bounds[present[done]]
            stop = int(np.searchsorted(bounds[present + 1], first_feature + per_run, side="right"))
            stop = max(stop, done + 1)
            texts = present[done:stop]
            rows = slice(first_feature, bounds[texts[-1] + 1])
            weighted = self._table[feats.ids[rows]] * feats.weights[rows, None]  # float32
            starts = bounds[texts] - first_feature
            scores[texts] = np.add.reduceat(weighted, starts, axis=0) + self._prior
            done = stop
        scale = (1.0 / np.sqrt(np.maximum(feats.sizes, 1))).astype(np.float32)
        scores *= scale[:, None]
        scores -= scores.max(axis=1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=1, keepdims=True)
        for first, other in self._aliases:
            scores[:, first] += scores[:, other]
        return scores[:, self._first] if self._aliases else scores

    def classify(self, feats: Features) -> list[tuple[str, float]]:
        """The most likely language of each text and its probability (py3langid's ``classify``)."""
        probs = self.probabilities(feats)
        best = probs.argmax(axis=1)
        return [
            (self.codes[i], p)
            for i, p in zip(best.tolist(), probs[np.arange(len(best)), best].tolist(), strict=True)
        ]


@functools.cache
def scorer(candidates: tuple[str, ...] | None) -> LanguageScorer:
    """The :class:`LanguageScorer` of ``candidates``, one per process (never pickled: components hold
    the codes and ask here)."""
    return LanguageScorer(candidates)
