"""Run the ``qckit`` command line in this process with the fault plugins of ``fault_plugins.py``
registered (``faults.*`` components), for tests that need a real process to signal or kill::

    python tests/fault_driver.py prepare --input … --set 'prepare.filters=[…]'
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fault_plugins  # noqa: E402

from qckit import host  # noqa: E402

_from_entry_points = host.PluginHost.from_entry_points.__func__  # type: ignore[attr-defined]


def _with_faults(cls, *, disable=(), extra=()):
    return _from_entry_points(cls, disable=disable, extra=[*extra, ("faults", fault_plugins)])


host.PluginHost.from_entry_points = classmethod(_with_faults)  # type: ignore[method-assign]

if __name__ == "__main__":
    from qckit.cli.main import main

    sys.exit(main(sys.argv[1:]))
