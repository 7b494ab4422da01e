"""Built-in normalizers: ``normalize(text) -> text``, run in recipe order on every document.

* :mod:`.text`: Unicode form (``unicode``), mojibake repair (``mojibake``), control characters
  (``control_chars``), whitespace (``whitespace``), opt-in ligature folding (``fold_ligatures``);
* :mod:`.cleaners`: URL and e-mail removal (``strip_urls``, ``strip_emails``), repeated punctuation
  (``collapse_punctuation``).

Every normalizer returns the *same object* when it has nothing to do and checks that cheaply first.
"""

from __future__ import annotations

from qckit import hookimpl
from qckit_builtins.normalizers.cleaners import CollapsePunctuation, StripEmails, StripUrls
from qckit_builtins.normalizers.text import (
    ControlCharsNormalizer,
    FoldLigaturesNormalizer,
    MojibakeNormalizer,
    UnicodeNormalizer,
    WhitespaceNormalizer,
    looks_like_mojibake,
)

NORMALIZERS = (
    UnicodeNormalizer,
    MojibakeNormalizer,
    ControlCharsNormalizer,
    WhitespaceNormalizer,
    FoldLigaturesNormalizer,
    StripUrls,
    StripEmails,
    CollapsePunctuation,
)

__all__ = [
    "NORMALIZERS",
    "CollapsePunctuation",
    "ControlCharsNormalizer",
    "FoldLigaturesNormalizer",
    "MojibakeNormalizer",
    "StripEmails",
    "StripUrls",
    "UnicodeNormalizer",
    "WhitespaceNormalizer",
    "looks_like_mojibake",
]


@hookimpl
def register_normalizers(register) -> None:
    for component in NORMALIZERS:
        register(component)
