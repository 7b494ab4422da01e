"""Built-in executors: where the prepare work runs (see :class:`qckit.components.Executor`).

* :mod:`.local`: ``local``, a pool of worker processes on this machine (the default);
* :mod:`.ray`: ``ray``, Ray tasks on a local or remote cluster, by shards with completion records
  (needs ``pip install 'qckit[ray]'``).
"""

from __future__ import annotations

from qckit import hookimpl
from qckit_builtins.executors.local import LocalExecutor
from qckit_builtins.executors.ray import RayExecutor

EXECUTORS: tuple[type, ...] = (LocalExecutor, RayExecutor)

__all__ = ["EXECUTORS", "LocalExecutor", "RayExecutor"]


@hookimpl
def register_executors(register) -> None:
    for component in EXECUTORS:
        register(component)
