"""``QCKIT_NO_EXTENSIONS``, read as a boolean by :mod:`qckit_builtins.accelerated` and by ``setup.py``.

This module imports nothing of qckit: ``setup.py`` loads it by its path, before anything is installed,
so that the install and the run time read the variable the same way.
"""

from __future__ import annotations

from collections.abc import Mapping

#: the environment variable that leaves the C accelerators out (unbuilt at install, unused at run time)
NO_EXTENSIONS_ENV = "QCKIT_NO_EXTENSIONS"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


def no_extensions(environ: Mapping[str, str]) -> bool:
    """Whether ``environ`` asks to leave the accelerators out: ``1``/``true``/``yes``/``on`` (any case)
    yes; unset, empty, ``0``/``false``/``no``/``off`` no; anything else a ``ValueError`` (a typo must
    not silently pick the one the user did not mean)."""
    value = environ.get(NO_EXTENSIONS_ENV, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(
        f"{NO_EXTENSIONS_ENV}={environ[NO_EXTENSIONS_ENV]!r} is not a boolean: 1/true/yes/on leaves the C "
        "accelerators out, 0/false/no/off (or unset) uses them"
    )
