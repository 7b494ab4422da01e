"""The optional C accelerators of the built-in components; everything else is in pyproject.toml.

Each extension is ``optional``: without a C compiler (or with ``QCKIT_NO_EXTENSIONS=1``, read as a
boolean by ``plugins/qckit_builtins/_env.py``) the install still succeeds and the components use their
Python/numpy code, which gives the same output, slower.
"""

import os
import runpy
import sys

from setuptools import Extension, setup

PACKAGE = "plugins/qckit_builtins"
SOURCES = f"{PACKAGE}/_speedups"
# read by its path: the package is not importable before it is installed
_env = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), PACKAGE, "_env.py"))
try:
    NO_EXTENSIONS = _env["no_extensions"](os.environ)
except ValueError as exc:
    sys.exit(f"setup.py: {exc}")

extensions = [
    Extension("qckit_builtins._textscan", [f"{SOURCES}/textscan.c"], optional=True),
    Extension("qckit_builtins._markerscan", [f"{SOURCES}/markerscan.c"], optional=True),
    Extension("qckit_builtins._minhash", [f"{SOURCES}/minhash.c"], optional=True),
]

setup(ext_modules=[] if NO_EXTENSIONS else extensions)
