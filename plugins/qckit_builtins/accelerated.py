"""The optional C accelerators of the built-in components, or None where they are not built.

``setup.py`` compiles them from ``_speedups/*.c`` at install time when a C compiler is there. A batch
method looks its accelerator up here at every call and falls back to its Python/numpy code when it is
None; both give the same output (``tests/test_textscan.py`` and ``tests/test_markerscan.py`` compare
them on random text), the C one faster. ``QCKIT_NO_EXTENSIONS=1`` (or ``true``/``yes``/``on``) in the
environment leaves them unused (and unbuilt at install); ``0``/``false``/``no``/``off`` or unset uses them;
another value is an error (:mod:`qckit_builtins._env`, which ``setup.py`` reads too).
``tests/test_accelerated.py`` checks that they are built where a compiler is.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

from qckit_builtins._env import no_extensions

#: the interface version (``API`` in the C source) this code expects of each accelerator: a build of
#: another version (an editable checkout not rebuilt after a change) is left unused
API = {"_textscan": 4, "_markerscan": 3, "_minhash": 3}


def _load(name: str) -> ModuleType | None:
    if no_extensions(os.environ):
        return None
    try:
        module = importlib.import_module(f"qckit_builtins.{name}")
    except ImportError:
        return None
    return module if getattr(module, "API", None) == API[name] else None


#: per-text scans: counts, the normalizers' pre-checks, dedup keys and fingerprints, py3langid's features
#: (``_speedups/textscan.c``)
textscan = _load("_textscan")
#: MarkerList.find for a whole batch, and word-list counts (``_speedups/markerscan.c``)
markerscan = _load("_markerscan")
#: MinHash signatures of a batch of documents (near-dedup's ``shingling = "short"``) and the verifying or
#: tagging near-dedup's decisions (``_speedups/minhash.c``)
minhash = _load("_minhash")


def available() -> dict[str, bool]:
    """Which accelerators this process uses, by name (the benches print it; see README for users)."""
    return {
        "textscan": textscan is not None,
        "markerscan": markerscan is not None,
        "minhash": minhash is not None,
    }
