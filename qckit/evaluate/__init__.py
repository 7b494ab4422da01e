"""Held-out evaluation of a causal LM: bits per byte, minimal pairs, multiple-choice tasks, named eval sets.

* :mod:`qckit.evaluate.loglik`: the one scoring engine (summed log-probabilities of continuations, as
  lm-evaluation-harness computes them) and the request builders every kind shares;
* :mod:`qckit.evaluate.bpb`: bits per byte and perplexities under the ``document`` (lm-eval
  ``loglikelihood_rolling``, the default) and ``stream`` protocols;
* :mod:`qckit.evaluate.pairs`: minimal pairs (BLiMP and QFrBLiMP rows);
* :mod:`qckit.evaluate.choice`: multiple-choice and binary tasks (lm-eval ``multiple_choice``);
* :mod:`qckit.evaluate.stats`: Wilson interval, macro-F1; :mod:`qckit.evaluate.rows`: reading JSONL rows;
* :mod:`qckit.evaluate.sets`: named eval sets, their roles, before/after/delta and the forgetting check.

Each module's docstring gives its exact definitions; README.md repeats them for users. Importing this
package is cheap (the scoring modules import torch when they are imported themselves).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

#: the scoring protocols of bits per byte, the default first (see :mod:`qckit.evaluate.bpb`)
PROTOCOLS = ("document", "stream")

if TYPE_CHECKING:
    from qckit.evaluate.bpb import EvalResult, evaluate_lm, sliding_windows

__all__ = ["PROTOCOLS", "EvalResult", "evaluate_lm", "sliding_windows"]


def __getattr__(name: str) -> Any:
    if name in ("EvalResult", "evaluate_lm", "sliding_windows"):
        from qckit.evaluate import bpb

        return getattr(bpb, name)
    raise AttributeError(f"module 'qckit.evaluate' has no attribute {name!r}")
