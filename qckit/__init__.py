"""qckit: plugin-based continued pretraining of language models on dialect corpora."""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

#: Decorate plugin functions with this to implement a hook of :mod:`qckit.hookspecs`.
hookimpl = pluggy.HookimplMarker("qckit")

__all__ = ["__version__", "hookimpl"]
