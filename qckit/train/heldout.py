"""Held-out evaluation inside the train stage: the one seam that measures the model before, during and after.

The Trainer callback calls :meth:`HeldOut.measure` before the first step (the baseline), every
``eval_steps`` optimizer steps (or at the end of every epoch) and after the last step. A measurement
is a dict of *named sets* (``{"val": {"loss": …, "perplexity": …, "bits_per_byte": …, "step": 12, …}}``);
the summary, the observer's reports, the experiment trackers and the checkpoints consume it
generically, set by set, whatever the sets are. The numbers always come from
:func:`qckit.evaluate.evaluate_lm` (token-weighted loss over sliding windows of held-out documents),
never from the Trainer's own evaluation loop and never from the training loss.
"""

from __future__ import annotations

import time
from typing import Any

from qckit.progress import NullObserver, Observer

__all__ = ["HeldOut", "VAL_SET"]

#: the name of the set measured on ``val_file``
VAL_SET = "val"


class HeldOut:
    """Measures a model on the validation documents (``val_file``) with fixed evaluation settings.

    ``texts`` is ``None`` when the run has no validation file: then :attr:`enabled` is false and the
    callback never calls :meth:`measure`. ``seconds`` adds up the time of every measurement.
    """

    def __init__(
        self,
        tokenizer: Any,
        texts: list[str] | None,
        *,
        max_length: int,
        stride: int | None,
        batch_size: int,
        device: Any = None,
        max_documents: int = 0,
        observer: Observer | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.texts = texts[:max_documents] if texts is not None and max_documents else texts
        self.max_length = max_length
        self.stride = stride
        self.batch_size = batch_size
        self.device = device
        self.observer = observer or NullObserver()
        self.seconds = 0.0

    @property
    def enabled(self) -> bool:
        return self.texts is not None

    @property
    def names(self) -> list[str]:
        """The names of the sets :meth:`measure` returns."""
        return [VAL_SET] if self.enabled else []

    def measure(self, model: Any, step: int) -> dict[str, dict[str, Any]]:
        """The held-out numbers of ``model`` at optimizer step ``step``, by set name: each set's
        :class:`~qckit.evaluate.EvalResult` fields plus ``step``. Safe during training: train/eval modes
        are restored."""
        from qckit.evaluate import evaluate_lm

        started = time.perf_counter()
        result = evaluate_lm(
            model,
            self.tokenizer,
            self.texts or [],
            max_length=self.max_length,
            stride=self.stride,
            batch_size=self.batch_size,
            device=self.device,
            observer=self.observer,
        )
        self.seconds += time.perf_counter() - started
        data = result.as_dict()
        data["step"] = step
        return {VAL_SET: data}
