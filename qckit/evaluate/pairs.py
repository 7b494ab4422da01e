"""Minimal pairs: does the model give the grammatical sentence of each pair the higher probability?

Rows (JSON Lines, one pair per line) come in one of these layouts:

* BLiMP: ``sentence_good``, ``sentence_bad``, optionally a phenomenon under ``phenomenon``,
  ``linguistic_phenomenon``, ``linguistics_term`` or ``UID`` (the first one present is used);
* QFrBLiMP: ``sentence_a``, ``sentence_b`` and ``label`` = the index (0 or 1) of the grammatical
  sentence, optionally ``category`` or ``type``; or ``grammatical`` and ``ungrammatical`` (the layout
  of COLE's dataset card, :mod:`qckit.evaluate.cole`).

``group_by`` names the field to group by instead (a phenomenon is a string or a number; a field
holding anything else is passed over). A bad row (not JSON, a missing, empty or non-string sentence,
two identical sentences, a label that is not 0 or 1) is counted with its ``file:line`` and skipped;
so is a pair that cannot be scored (a sentence that encodes to no token or to more than
``max_length`` tokens), counted in each measurement's ``bad_rows``.

Scoring, as lm-eval scores its minimal-pair tasks (``multiple_choice`` with an empty context): a
sentence's score is ``LL(s) = log p(delimiter + s | prefix token)``, the summed log-probability of its
tokens after the prefix token (:func:`~qckit.evaluate.loglik.prefix_token_id`). ``delimiter`` is
empty by default (lm-eval's ``multiblimp`` and ``blimp_nl`` tasks); ``" "`` reproduces its English
``blimp`` task, which keeps the default ``target_delimiter``. A pair is correct when
``LL(good) > LL(bad)`` (strictly: a tie counts as wrong, where lm-eval's argmax would pick the
grammatical one). The numbers:

* ``accuracy`` = correct pairs / pairs, with ``accuracy_ci95``, its 95 % Wilson interval;
* ``accuracy_norm``: the same with ``LL(s) / len(s)`` (characters; lm-eval's ``acc_norm``) and
  ``accuracy_bytes`` with ``LL(s) / UTF-8 bytes of s`` (lm-eval's ``acc_bytes``), which do not favour
  the shorter sentence of a pair;
* ``phenomena``: pairs and accuracy per phenomenon; ``confidently_wrong``: the pairs with the
  largest ``LL(bad) - LL(good)``, the model's worst mistakes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qckit.components import IssueLog
from qckit.evaluate.rows import brief, iter_rows, no_usable, scalar_text, text_field
from qckit.evaluate.stats import wilson_interval

if TYPE_CHECKING:  # the scoring engine imports torch: reading rows (decontamination) need not
    from qckit.evaluate.loglik import EvalContext

__all__ = ["PHENOMENON_FIELDS", "SENTENCE_FIELDS", "Pair", "PairSet", "read_pairs", "score_pairs"]

#: fields that name a pair's phenomenon, in the order they are looked for (BLiMP's, then QFrBLiMP's)
PHENOMENON_FIELDS = ("phenomenon", "linguistic_phenomenon", "linguistics_term", "UID", "category", "type")
NO_PHENOMENON = "(none)"
#: (grammatical, ungrammatical) field names of the layouts that name the sentences: BLiMP's, COLE's QFrBLiMP card
_NAMED_LAYOUTS = (("sentence_good", "sentence_bad"), ("grammatical", "ungrammatical"))
#: the sentence fields of every layout (BLiMP's, then QFrBLiMP's): a row holding one is a minimal pair
SENTENCE_FIELDS = (
    "sentence_good",
    "sentence_bad",
    "sentence_a",
    "sentence_b",
    "grammatical",
    "ungrammatical",
)


@dataclass(frozen=True)
class Pair:
    """One minimal pair: the grammatical and the ungrammatical sentence, and where it came from."""

    line: int
    good: str
    bad: str
    phenomenon: str = NO_PHENOMENON


@dataclass
class PairSet:
    """The usable pairs of a file and its bad rows (``issues``: kind → count and first examples)."""

    source: str
    pairs: list[Pair]
    issues: IssueLog = field(default_factory=IssueLog)


def read_pairs(path: str | Path, *, group_by: str = "") -> PairSet:
    """Read a BLiMP- or QFrBLiMP-style file (see the module docstring), counting bad rows.

    Raises :class:`~qckit.errors.InputError` when the file is missing or holds no usable pair.
    """
    issues = IssueLog()
    source = str(path)
    pairs: list[Pair] = []
    for line, row in iter_rows(path, issues):
        pair = _pair(row, line, source, issues, group_by)
        if pair is not None:
            pairs.append(pair)
    if not pairs:
        raise no_usable(source, "minimal pairs", issues)
    return PairSet(source, pairs, issues)


def _pair(row: dict[str, Any], line: int, source: str, issues: IssueLog, group_by: str) -> Pair | None:
    named = next((k for k in _NAMED_LAYOUTS if k[0] in row or k[1] in row), None)
    if named is not None:
        good, bad = text_field(row, named[0]), text_field(row, named[1])
        if good is None or bad is None:
            missing = named[0] if good is None else named[1]
            issues.add("missing_sentence", source, line, f"{missing} is missing, empty or not text")
            return None
    elif "sentence_a" in row or "sentence_b" in row:
        a, b = text_field(row, "sentence_a"), text_field(row, "sentence_b")
        if a is None or b is None:
            missing = "sentence_a" if a is None else "sentence_b"
            issues.add("missing_sentence", source, line, f"{missing} is missing, empty or not text")
            return None
        label = row.get("label")
        if isinstance(label, str) and label.strip() in ("0", "1"):
            label = int(label)
        if isinstance(label, bool) or not isinstance(label, (int, float)) or label not in (0, 1):
            issues.add(
                "bad_label",
                source,
                line,
                f"label must be 0 or 1 (the grammatical sentence), got {brief(label)}",
            )
            return None
        good, bad = (a, b) if label == 0 else (b, a)
    else:
        issues.add(
            "missing_sentence",
            source,
            line,
            "expected sentence_good and sentence_bad (BLiMP), sentence_a, sentence_b and label, or grammatical "
            "and ungrammatical (QFrBLiMP)",
        )
        return None
    if good == bad:
        issues.add("identical_sentences", source, line, "the two sentences are identical")
        return None
    fields = (group_by,) if group_by else PHENOMENON_FIELDS
    names = (scalar_text(row.get(k) or "") for k in fields)
    phenomenon = next((name.strip() for name in names if name and name.strip()), NO_PHENOMENON)
    return Pair(line, good, bad, phenomenon)


def score_pairs(
    model: Any,
    pair_set: PairSet,
    context: EvalContext,
    *,
    prefix_token: str | int | None = None,
    examples: int = 5,
    delimiter: str = "",
    split_special_tokens: bool = False,
) -> dict[str, Any]:
    """Score every pair of ``pair_set`` on ``model`` (see the module docstring for the numbers).

    A pair that cannot be scored is counted with the set's bad rows; raises
    :class:`~qckit.errors.InputError` when no pair can.
    """
    from qckit.evaluate.loglik import encode_pairs, prefix_token_id, request_problem

    started = time.perf_counter()
    tokenizer = context.tokenizer
    prefix = prefix_token_id(tokenizer, prefix_token)
    texts = [s for p in pair_set.pairs for s in (p.good, p.bad)]
    encoded = encode_pairs(
        tokenizer, [("", delimiter + s) for s in texts], prefix, split_special_tokens=split_special_tokens
    )
    scorer = context.scorer(model)
    issues = IssueLog()
    issues.merge(pair_set.issues)
    pairs: list[Pair] = []
    requests: list[tuple[list[int], list[int]]] = []
    for k, pair in enumerate(pair_set.pairs):
        good, bad = encoded[2 * k], encoded[2 * k + 1]
        problem = request_problem(good, scorer.max_length) or request_problem(bad, scorer.max_length)
        if problem:
            issues.add("unscorable", pair_set.source, pair.line, problem)
            continue
        pairs.append(pair)
        requests.extend((good, bad))
    if not pairs:
        raise no_usable(pair_set.source, "minimal pairs", issues)
    scores = scorer.loglikelihoods(model, requests, task="minimal pairs")
    results = []
    for pair, lg, lb in zip(pairs, scores[0::2].tolist(), scores[1::2].tolist(), strict=True):
        results.append(
            (
                pair,
                lg > lb,
                lg / len(pair.good) > lb / len(pair.bad),
                lg / len(pair.good.encode("utf-8")) > lb / len(pair.bad.encode("utf-8")),
                lb - lg,
            )
        )
    n = len(results)
    correct = sum(r[1] for r in results)
    phenomena: dict[str, dict[str, Any]] = {}
    for pair, ok, ok_norm, _, _ in results:
        entry = phenomena.setdefault(pair.phenomenon, {"pairs": 0, "correct": 0, "correct_norm": 0})
        entry["pairs"] += 1
        entry["correct"] += int(ok)
        entry["correct_norm"] += int(ok_norm)
    wrong = sorted((r for r in results if not r[1]), key=lambda r: -r[4])[:examples]
    return {
        "accuracy": correct / n,
        "accuracy_ci95": list(wilson_interval(correct, n)),
        "accuracy_norm": sum(r[2] for r in results) / n,
        "accuracy_bytes": sum(r[3] for r in results) / n,
        "pairs": n,
        "correct": correct,
        "phenomena": {
            name: {
                "pairs": e["pairs"],
                "accuracy": e["correct"] / e["pairs"],
                "accuracy_norm": e["correct_norm"] / e["pairs"],
            }
            for name, e in sorted(phenomena.items())
        },
        "confidently_wrong": [
            {"line": p.line, "good": p.good, "bad": p.bad, "phenomenon": p.phenomenon, "margin": margin}
            for p, _, _, _, margin in wrong
        ],
        "bad_rows": issues.total(),
        "bad_row_kinds": issues.as_dict(),
        "prefix_token": prefix,
        "truncated": scorer.truncated,
        "seconds": time.perf_counter() - started,
    }
