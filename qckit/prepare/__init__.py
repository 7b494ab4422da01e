"""The prepare stage, in parts:

* :mod:`.inputs`: input files (or in-memory items) → batches of raw records, in corpus order;
* :mod:`.work`: what a worker does to a batch (parse, normalize, filter, fingerprint), and the
  stateful decisions taken in corpus order;
* :mod:`.executor`: how batches are scheduled (this process or a worker pool), results in order;
* :mod:`.stats`: the funnel (``add(result)``, ``as_dict()``);
* :mod:`.output`: spool, split (one path for files and memory), write, commit;
* :mod:`.pipeline`: the run that ties them together.

Settings are :class:`qckit.settings.PrepareSettings`, shared with the recipe validator.
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
