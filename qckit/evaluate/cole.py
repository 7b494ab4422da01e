"""COLE's Quebec tasks as released, read from a local copy: the row formats and the settings that read them.

COLE (the French benchmark of Université Laval's GRAIL group) publishes four Quebec-French tasks as JSON
Lines under CC-BY-NC-SA: qckit never ships them; a set's ``path`` points at the user's copy. Each format
is a set of field names, nothing else:

* **QFrBLiMP** (minimal pairs, ``kind = "minimal_pairs"``): ``{"sentence_a", "sentence_b", "label"}``
  with ``label`` = the index of the grammatical sentence (0 → ``sentence_a``, 1 → ``sentence_b``), or the
  layout of COLE's dataset card, ``{"grammatical", "ungrammatical"}``; read by
  :mod:`qckit.evaluate.pairs` without a setting (the field names say which layout a row is);
* **QFrCoLA** (acceptability, ``kind = "choice"``, ``format = "qfrcola"``): ``{"sentence", "label"}``,
  ``label`` 1 = acceptable, scored as a binary choice between ``non`` (0) and ``oui`` (1);
* **QFrCoRE** / **QFrCoRT** (``format = "qfrcore"`` / ``"qfrcort"``): ``{"expression"`` (QFrCoRE) or
  ``"terme"`` (QFrCoRT), ``"choices": [...], "correct_index": k}``: which definition is the term's.

A ``format`` fills the choice kind's ``template``, ``choices`` and ``answer_field`` (:data:`CHOICE_FORMATS`);
a setting given in the recipe wins over the format's. The templates are qckit's (COLE publishes no
zero-shot prompt); a set that states its own is scored with that one. Imports nothing heavy.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CHOICE_FORMATS", "choice_format"]

#: ``format`` → the choice kind's settings that read a COLE task's released rows
CHOICE_FORMATS: dict[str, dict[str, Any]] = {
    "qfrcola": {
        "template": "Phrase : {sentence}\nCette phrase est-elle acceptable ?",
        "choices": ["non", "oui"],
        "answer_field": "label",
    },
    "qfrcore": {
        "template": "Que veut dire l'expression québécoise « {expression} » ?\nRéponse :",
        "answer_field": "correct_index",
    },
    "qfrcort": {
        "template": "Que veut dire le terme québécois « {terme} » ?\nRéponse :",
        "answer_field": "correct_index",
    },
}


def choice_format(name: str) -> dict[str, Any]:
    """The settings of format ``name`` (``""``: none). Raises :class:`ValueError` for an unknown one."""
    if not name:
        return {}
    if name not in CHOICE_FORMATS:
        raise ValueError(f"format must be one of {', '.join(CHOICE_FORMATS)}, got {name!r}")
    return dict(CHOICE_FORMATS[name])
