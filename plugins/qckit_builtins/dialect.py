"""Quebec French dialect markers: a tagger that counts them, and an optional density threshold."""

from __future__ import annotations

import functools
import operator
import re
import unicodedata
from importlib import resources
from pathlib import Path
from typing import ClassVar

from qckit import hookimpl
from qckit.components import Document

_TOKEN = re.compile(r"[a-z0-9]+")
_COMBINING = re.compile("[\u0300-\u036f]")


def fold_words(text: str) -> list[str]:
    """The words of ``text`` for matching: accent- and case-insensitive; apostrophes and hyphens split."""
    text = text.casefold()
    if not text.isascii():
        if "œ" in text or "æ" in text:
            text = text.replace("œ", "oe").replace("æ", "ae")
        text = _COMBINING.sub("", unicodedata.normalize("NFKD", text))
        text = text.encode("ascii", "replace").decode("ascii")
    return _TOKEN.findall(text)


class MarkerList:
    """A parsed marker file (format in ``data/quebec_markers.txt``): words, stems, phrases and shields."""

    def __init__(self, text: str, source: str = "<markers>") -> None:
        self.words: dict[str, str] = {}
        self.stems: dict[str, str] = {}
        # first word → [(words, entry or None for a shield)], longest phrase first
        self.phrases: dict[str, list[tuple[tuple[str, ...], str | None]]] = {}
        for number, line in enumerate(text.splitlines(), 1):
            entry = line.split("#", 1)[0].strip()
            if not entry:
                continue
            shield = entry.startswith("-")
            label = entry[1:].strip() if shield else entry
            stem = label.endswith("*")
            words = tuple(fold_words(label[:-1] if stem else label))
            if not words or (stem and (shield or len(words) != 1)):
                raise ValueError(f"{source}:{number}: cannot use marker entry {entry!r}")
            if stem:
                self.stems.setdefault(words[0], label[:-1])
            elif len(words) == 1 and not shield:
                self.words.setdefault(words[0], label)
            else:
                self.phrases.setdefault(words[0], []).append((words, None if shield else label))
        for options in self.phrases.values():
            options.sort(key=lambda option: -len(option[0]))
        self.first_words = frozenset(self.words) | frozenset(self.phrases)
        self.stem_tuple = tuple(sorted(self.stems, key=len, reverse=True))
        # The first letters shared by every stem's words: a C-level set test rules most documents out.
        self._key_len = min(map(len, self.stems), default=0)
        self._stem_keys = frozenset(stem[: self._key_len] for stem in self.stems)

    def __len__(self) -> int:
        return (
            len(self.words)
            + len(self.stems)
            + sum(1 for options in self.phrases.values() for _, label in options if label is not None)
        )

    def find(self, text: str) -> tuple[int, int, list[str]]:
        """Return (markers, words, distinct marker entries found) for ``text``."""
        n_words = len(text.split())
        tokens = fold_words(text)
        if not tokens:
            return 0, n_words, []
        stems = self.stem_tuple
        if self.first_words.isdisjoint(tokens) and (
            not stems
            or self._stem_keys.isdisjoint(map(operator.itemgetter(slice(None, self._key_len)), tokens))
        ):
            return 0, n_words, []
        count, found = 0, set()
        words, phrases, n = self.words, self.phrases, len(tokens)
        i = 0
        while i < n:
            token = tokens[i]
            options = phrases.get(token)
            if options:
                matched = False
                for phrase, label in options:
                    size = len(phrase)
                    if tuple(tokens[i : i + size]) == phrase:
                        if label is not None:
                            count += 1
                            found.add(label)
                        i += size
                        matched = True
                        break
                if matched:
                    continue
            label = words.get(token)
            if label is None and stems and token.startswith(stems):
                label = next(self.stems[s] for s in stems if token.startswith(s))
            if label is not None:
                count += 1
                found.add(label)
            i += 1
        return count, n_words, sorted(found)


@functools.cache
def _builtin_markers() -> MarkerList:
    data = resources.files("qckit_builtins").joinpath("data/quebec_markers.txt")
    return MarkerList(data.read_text(encoding="utf-8"), "qckit_builtins/data/quebec_markers.txt")


@functools.cache
def _file_markers(path: str) -> MarkerList:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"markers_file: cannot read {path}: {exc.strerror}") from None
    return MarkerList(text, path)


class QuebecMarkers:
    """Counts Quebec French dialect markers in each document (recipe: ``use = "quebec_markers"``).

    The built-in list (``qckit_builtins/data/quebec_markers.txt``, about 200 entries: "pis", "icitte",
    "pantoute", "char", "chum", "magasiner", "dépanneur", "tsé", "c'est plate", sacres …) matches whole
    words, case- and accent-insensitively, with ' and ’ alike; standard idioms such as "tant pis" are
    shielded. ``markers_file`` replaces it with your own list in the same format (another dialect, say;
    a relative path is taken from the current directory).

    Sets ``doc.metrics["qc_markers"]`` (occurrences), ``doc.metrics["qc_words"]`` (whitespace-separated
    words), ``doc.metrics["qc_docs_with_markers"]`` (1 or 0) and ``doc.meta["qc_markers"]`` (the distinct
    entries found, sorted). With ``min_density`` above 0 (markers per 1000 words) documents below it are
    dropped with reason ``below_dialect_density``; the default 0 only tags.
    """

    name: ClassVar[str] = "quebec_markers"
    stateful: ClassVar[bool] = False

    def __init__(self, min_density: float = 0.0, markers_file: str | None = None) -> None:
        if float(min_density) < 0:
            raise ValueError(f"min_density must be at least 0, not {min_density}")
        self.min_density = float(min_density)
        # Resolved now, so that worker processes read the same file; a bad file is reported right away.
        self.markers_file = None if markers_file is None else str(Path(markers_file).resolve())
        if self.markers_file is not None:
            _file_markers(self.markers_file)

    @property
    def markers(self) -> MarkerList:
        return _builtin_markers() if self.markers_file is None else _file_markers(self.markers_file)

    def drop_reason(self, doc: Document) -> str | None:
        count, n_words, found = self.markers.find(doc.text)
        doc.metrics["qc_markers"] = float(count)
        doc.metrics["qc_words"] = float(n_words)
        doc.metrics["qc_docs_with_markers"] = 1.0 if count else 0.0
        doc.meta["qc_markers"] = found
        if self.min_density > 0 and (not n_words or 1000.0 * count / n_words < self.min_density):
            return "below_dialect_density"
        return None

    def summary(self, sums: dict[str, float]) -> dict[str, float]:
        """Corpus-level figures from the summed metrics of the kept documents."""
        words = sums.get("qc_words", 0.0)
        markers = sums.get("qc_markers", 0.0)
        return {
            "qc_density_per_1k_words": 1000.0 * markers / words if words else 0.0,
            "qc_docs_with_markers": sums.get("qc_docs_with_markers", 0.0),
        }


@hookimpl
def register_filters(register):
    register(QuebecMarkers)
