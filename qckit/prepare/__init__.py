"""The prepare stage, in parts:

* :mod:`.inputs`: input files (or in-memory items) → batches of raw records, in corpus order;
* :mod:`.work`: what a worker does to a batch (parse, repair, normalize, filter, fingerprint, format
  the writers' lines), and the stateful decisions taken in corpus order;
* :mod:`.shards`: shards with completion records, for executors whose workers read their own input;
* :mod:`.stats`: the funnel (``add(result)``, ``as_dict()``);
* :mod:`.output`: spool, split (one path for files and memory), write;
* :mod:`.outdir`: the output directory (lock, generations, publication all at once);
* :mod:`.pipeline`: the run that ties them together.

Where batches and shards run is an executor's business (``[prepare.executor]``, the ``executor``
kind of :mod:`qckit.kinds`). Settings are :class:`qckit.settings.PrepareSettings`, shared with the
recipe validator.
"""

from qckit.prepare.pipeline import PreparePipeline, PrepareResult, prepare_texts, run_prepare
from qckit.settings import REJECTS_FILE, STATS_FILE, PrepareSettings

__all__ = [
    "REJECTS_FILE",
    "STATS_FILE",
    "PreparePipeline",
    "PrepareResult",
    "PrepareSettings",
    "prepare_texts",
    "run_prepare",
]
