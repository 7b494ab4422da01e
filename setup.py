"""The optional C accelerators of the built-in components; everything else is in pyproject.toml.

Each extension is ``optional``: without a C compiler (or with ``QCKIT_NO_EXTENSIONS=1``) the install
still succeeds and the components use their Python/numpy code, which gives the same output, slower.
"""

import os

from setuptools import Extension, setup

SOURCES = "plugins/qckit_builtins/_speedups"

extensions = [
    Extension("qckit_builtins._textscan", [f"{SOURCES}/textscan.c"], optional=True),
    Extension("qckit_builtins._markerscan", [f"{SOURCES}/markerscan.c"], optional=True),
]

setup(ext_modules=[] if os.environ.get("QCKIT_NO_EXTENSIONS") else extensions)
