"""Default component lists, used where a recipe (or the seed-compatible flags) leaves a list out.

They reproduce the seed's ``prepare_data.py`` behaviour with its bugs fixed (NFC instead of NFKC, a
correct URL pattern, mojibake repair that keeps French typography, exact deduplication) plus two
components the seed lacked: ``dialect_langid``, the language decision made for a Quebec corpus (other
languages out; short, colloquial and code-switched Quebec French kept, see
``qckit_builtins/filters/dialect_langid.py``), and the Quebec-marker tagger, which never drops anything
but measures dialect density for the report.
"""

from __future__ import annotations

from typing import Any

#: the defaults' language decision (``qckit prepare --all_languages`` leaves it out, as the seed had none)
LANGUAGE_FILTER = "dialect_langid"
#: the near-duplicate step ``qckit prepare --near_duplicates tag|drop`` adds: short-text MinHash; ``tag`` keeps
#: near-duplicates with each cluster on one side of train/val. Not a default: on a plain corpus it costs more
#: than the rest of prepare (bench/bench_prepare.py); the main recipe drops near-duplicates
NEAR_DUPLICATES: dict[str, Any] = {"use": "minhash_dedup", "shingling": "short", "duplicates": "tag"}

PREPARE_DEFAULTS: dict[str, Any] = {
    "readers": [],  # every registered reader with its defaults; list one here only to change its settings
    "normalizers": [
        {"use": "unicode", "form": "NFC"},
        {"use": "mojibake"},
        {"use": "control_chars"},
        {"use": "strip_urls"},
        {"use": "strip_emails"},
        {"use": "collapse_punctuation"},
        {"use": "whitespace"},
    ],
    "filters": [
        {"use": "length", "min_length": 10, "max_length": 10000},
        {"use": "min_words", "min_words": 3},
        {"use": "unique_words", "min_ratio": 0.3},
        {"use": "alpha_ratio", "min_ratio": 0.7},
        {"use": LANGUAGE_FILTER},
        {"use": "quebec_markers"},
        {"use": "exact_dedup"},
    ],
    "splitter": {"use": "random", "val_split": 0.1, "seed": 42},
    "writers": [{"use": "txt"}],
    "executor": {"use": "local"},
}

TRAIN_DEFAULTS: dict[str, Any] = {
    "chunker": {"use": "window", "max_length": 1024, "stride": 128},
    "adapters": [{"use": "lora"}],
    "eval": [],  # named eval sets besides the validation file ([[train.eval]])
}

#: the evaluator that measures ``val_file``, the default eval set (named :data:`VALIDATION_SET`)
VALIDATION_EVALUATOR = "bpb"
VALIDATION_SET = "val"


def validation_set_table(settings: Any) -> dict[str, Any]:
    """The ``[[train.eval]]`` table of the default set: ``val_file`` as a ``bpb`` target set, scored as
    the ``train.eval_*`` settings say (its window is the run's evaluation window)."""
    table: dict[str, Any] = {
        "kind": VALIDATION_EVALUATOR,
        "name": VALIDATION_SET,
        "path": settings.val_file,
        "protocol": settings.eval_protocol,
        "stride": settings.eval_stride,
        "max_documents": settings.eval_max_documents,
    }
    if settings.eval_prefix_token is not None:
        table["prefix_token"] = settings.eval_prefix_token
    return table
