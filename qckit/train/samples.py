"""Sample completions during training (``train.sample_prompts``): what the model writes, not only its loss.

At each evaluation (before training, every ``eval_steps``, after training) the model completes the
configured prompts greedily (:func:`qckit.generate.complete`); the completions go to the observer (the
report), to every sink (TensorBoard text, MLflow / W&B) and into ``training_summary.json`` (``samples``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from qckit.progress import Observer, phase

__all__ = ["SampleLog", "samples_markdown"]

#: a place completions are written to: ``sink(step, [{"prompt": …, "text": …}, …])``
Sink = Callable[[int, list[dict[str, str]]], None]


def samples_markdown(rows: list[dict[str, str]]) -> str:
    """Completions as a Markdown table (TensorBoard's text tab and MLflow render it)."""

    def cell(text: str) -> str:
        return " ".join(text.split()).replace("|", "\\|") or " "

    lines = ["| prompt | completion |", "|---|---|"]
    lines += [f"| {cell(row['prompt'])} | {cell(row['text'])} |" for row in rows]
    return "\n".join(lines)


class SampleLog:
    """Completes ``prompts`` with the model being trained and records the completions."""

    def __init__(
        self,
        prompts: Sequence[str],
        tokenizer: Any,
        max_new_tokens: int,
        observer: Observer,
        sinks: Sequence[Sink] = (),
    ) -> None:
        from qckit.generate import GenerationSettings

        self.prompts = list(prompts)
        self.tokenizer = tokenizer
        self.settings = GenerationSettings(max_new_tokens=max_new_tokens)
        self.observer = observer
        self.sinks = list(sinks)
        self.history: list[dict[str, Any]] = []
        self.seconds = 0.0  # time spent completing, left out of the training throughput like evaluation

    @property
    def enabled(self) -> bool:
        return bool(self.prompts)

    def take(self, model: Any, step: int, when: str) -> None:
        """Complete every prompt with ``model`` at optimizer step ``step`` (``when``: before, during, after)."""
        if not self.prompts:
            return
        import time

        from qckit.generate import complete

        started = time.perf_counter()
        with phase(self.observer, f"completing {len(self.prompts)} sample prompt(s)"):
            texts = complete(model, self.tokenizer, self.prompts, self.settings)
        self.seconds += time.perf_counter() - started
        rows = [{"prompt": p, "text": t} for p, t in zip(self.prompts, texts, strict=True)]
        entry = {"step": step, "when": when, "completions": rows}
        self.history.append(entry)
        self.observer.report("samples", entry)
        for sink in self.sinks:
            sink(step, rows)
