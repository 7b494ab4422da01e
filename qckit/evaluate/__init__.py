"""Held-out evaluation of a causal LM: bits per byte, minimal pairs, multiple-choice tasks, named eval sets.

* :mod:`qckit.evaluate.loglik`: the one scoring engine (summed log-probabilities of continuations, as
  lm-evaluation-harness computes them) and the request builders every kind shares;
* :mod:`qckit.evaluate.bpb`: bits per byte and perplexities under the ``document`` (lm-eval
  ``loglikelihood_rolling``, the default) and ``stream`` protocols;

Each module's docstring gives its exact definitions; README.md repeats them for users.
"""

from qckit.evaluate.bpb import PROTOCOLS, EvalResult, evaluate_lm, sliding_windows

__all__ = ["PROTOCOLS", "EvalResult", "evaluate_lm", "sliding_windows"]
