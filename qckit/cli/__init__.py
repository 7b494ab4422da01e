"""The ``qckit`` command line: the only place that prints, renders with rich, and exits (see :mod:`.main`)."""

from qckit.cli.main import main

__all__ = ["main"]
