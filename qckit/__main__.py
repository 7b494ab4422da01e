"""``python -m qckit`` (used by ``torchrun -m qckit …`` for multi-process training)."""

import sys

from qckit.cli import main

sys.exit(main())
