"""Language identification with py3langid (its model ships inside the package: no download, offline)."""

from __future__ import annotations

from typing import Any, ClassVar

from qckit.components import Document
from qckit_builtins.langmodel import identifier, language_codes


class LangIdFilter:
    """Keeps documents in the wanted language(s), identified by py3langid (recipe: ``use = "langid"``).

    ``languages``: ISO 639 codes to keep (default ``["fr"]``; py3langid has no separate label for Quebec
    French, which is identified as ``fr``). ``min_confidence``: the minimum normalized probability of the
    top language (0 to 1). ``candidates``: restrict the classifier to these languages (for example
    ``["fr", "en"]``), which raises confidences on short texts; default: all of py3langid's 97 languages.
    ``sample_chars``: classify only the first N characters (0 = the whole text), since the cost grows
    with the length and a few hundred characters are plenty.

    Writes ``doc.meta["lang"]`` and ``doc.meta["lang_score"]``. Reasons: ``wrong_language`` when the top
    language is not wanted, ``low_confidence`` when it is but below ``min_confidence``.

    The model (~0.6 s to load) is loaded on first use in each process and is not part of the pickled
    component, so shipping the filter to worker processes stays cheap. The codes themselves are checked
    against the model then too (a ``ValueError`` on the first document).
    """

    name: ClassVar[str] = "langid"
    stateful: ClassVar[bool] = False

    def __init__(
        self,
        languages: list[str] = ["fr"],  # noqa: B006 (copied, never mutated)
        min_confidence: float = 0.5,
        candidates: list[str] | None = None,
        sample_chars: int = 2000,
    ) -> None:
        self.languages = language_codes("languages", languages)
        if not 0.0 <= float(min_confidence) <= 1.0:
            raise ValueError(f"min_confidence must be between 0 and 1, not {min_confidence}")
        self.min_confidence = float(min_confidence)
        self.candidates = None if candidates is None else language_codes("candidates", candidates)
        if self.candidates is not None:
            missing = [code for code in self.languages if code not in self.candidates]
            if missing:
                raise ValueError(f"languages {', '.join(missing)} must also be in candidates")
        if sample_chars < 0:
            raise ValueError(f"sample_chars must be at least 0, not {sample_chars}")
        self.sample_chars = int(sample_chars)
        self._ident: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_ident"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def classify(self, text: str) -> tuple[str, float]:
        """The most likely language of ``text`` and its normalized probability."""
        if self._ident is None:
            self.check_languages()
        if self.sample_chars and len(text) > self.sample_chars:
            text = text[: self.sample_chars]
        lang, score = self._ident.classify(text)
        return lang, float(score)

    def check_languages(self) -> None:
        """Load the model now and raise ``ValueError`` if py3langid does not know a code of ``languages``."""
        if self._ident is None:
            self._ident = identifier(self.candidates)
        unknown = [code for code in self.languages if code not in set(self._ident.nb_classes)]
        if unknown:
            raise ValueError(f"languages: py3langid does not know {', '.join(unknown)}")

    def drop_reason(self, doc: Document) -> str | None:
        lang, score = self.classify(doc.text)
        doc.meta["lang"] = lang
        doc.meta["lang_score"] = round(score, 4)
        if lang not in self.languages:
            return "wrong_language"
        if score < self.min_confidence:
            return "low_confidence"
        return None
