"""Built-in filters: each decides whether a document stays (see :class:`qckit.components.Filter`).

* :mod:`.heuristics`: the seed's four — ``length``, ``min_words``, ``unique_words``, ``alpha_ratio``;
* :mod:`.quality`: ``french_quality``, FineWeb-2 ``fra_Latn`` quality thresholds;
* :mod:`.langid`: ``langid``, language identification with py3langid;
* :mod:`.dialect_langid`: ``dialect_langid``, the language decision for a Quebec corpus (short,
  colloquial and code-switched French stays);
* :mod:`.dedup`: ``exact_dedup`` and ``minhash_dedup`` (stateful: fingerprints in workers, decisions
  in corpus order);
* :mod:`.dialect`: ``quebec_markers``, a tagger that never drops but measures dialect density;
* :mod:`.decontam`: ``decontaminate``, drops documents that share a word sequence with an eval set.

A new filter goes into the module of its family (or a new module here) and into ``FILTERS`` below.
"""

from __future__ import annotations

from qckit import hookimpl
from qckit_builtins.filters.decontam import Decontaminate
from qckit_builtins.filters.dedup import ExactDedup, MinHashDedup
from qckit_builtins.filters.dialect import QuebecMarkers
from qckit_builtins.filters.dialect_langid import DialectLangId
from qckit_builtins.filters.heuristics import (
    AlphaRatioFilter,
    LengthFilter,
    MinWordsFilter,
    UniqueWordsFilter,
)
from qckit_builtins.filters.langid import LangIdFilter
from qckit_builtins.filters.quality import FrenchQualityFilter

FILTERS = (
    LengthFilter,
    MinWordsFilter,
    UniqueWordsFilter,
    AlphaRatioFilter,
    FrenchQualityFilter,
    LangIdFilter,
    DialectLangId,
    ExactDedup,
    MinHashDedup,
    QuebecMarkers,
    Decontaminate,
)

__all__ = [
    "FILTERS",
    "AlphaRatioFilter",
    "Decontaminate",
    "DialectLangId",
    "ExactDedup",
    "FrenchQualityFilter",
    "LangIdFilter",
    "LengthFilter",
    "MinHashDedup",
    "MinWordsFilter",
    "QuebecMarkers",
    "UniqueWordsFilter",
]


@hookimpl
def register_filters(register) -> None:
    for component in FILTERS:
        register(component)
