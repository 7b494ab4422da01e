"""Two example components, registered exactly as a real third-party plugin would."""

from __future__ import annotations

from typing import ClassVar

from qckit import hookimpl
from qckit.components import Document


class NoShouting:
    """Drops documents whose letters are mostly upper case (``shouting``)."""

    name: ClassVar[str] = "acme.no_shouting"
    stateful: ClassVar[bool] = False

    def __init__(self, max_upper_ratio: float = 0.5):
        if not 0.0 <= max_upper_ratio <= 1.0:
            raise ValueError("max_upper_ratio must be between 0 and 1")
        self.max_upper_ratio = max_upper_ratio

    def drop_reason(self, doc: Document) -> str | None:
        letters = [c for c in doc.text if c.isalpha()]
        if letters and sum(c.isupper() for c in letters) / len(letters) > self.max_upper_ratio:
            return "shouting"
        return None


class Explode:
    """Raises on documents containing ``boom`` (to test error attribution)."""

    name: ClassVar[str] = "acme.explode"
    stateful: ClassVar[bool] = False

    def drop_reason(self, doc: Document) -> str | None:
        if "boom" in doc.text:
            raise RuntimeError("kaboom")
        return None


@hookimpl
def register_filters(register):
    register(NoShouting)
    register(Explode)
