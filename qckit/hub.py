"""Whether a Hugging Face Hub model id can be used here, decided once and fast.

``huggingface_hub`` retries a refused or timed-out connection with back-off (about a minute and a
warning per try) before ``transformers`` falls back to the local cache or fails, so an unreachable Hub
would cost every hub-id run a minute and a screenful of lines. Instead, one request with a short
timeout (:data:`PROBE_TIMEOUT_S`, no retry) decides before anything is downloaded:

* ``HF_HUB_OFFLINE=1``: the model must be in the local Hugging Face cache (no request is made);
* the Hub answers: download as usual (``transformers`` keeps its own cache);
* the Hub cannot be reached: the cached copy when there is one, else one :class:`InputError` line.

``huggingface_hub`` is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import functools
from typing import Any

from qckit.errors import InputError

__all__ = ["PROBE_TIMEOUT_S", "hub_kwargs", "is_cached", "is_offline"]

#: seconds the one probe of the Hub may take (a firewall that drops packets, not only a refused port)
PROBE_TIMEOUT_S = 5.0
#: the file every model repository has; its presence in the cache means the model was downloaded once
_PROBE_FILE = "config.json"


def is_offline() -> bool:
    """``HF_HUB_OFFLINE`` as ``huggingface_hub`` (and so ``transformers``) read it."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def is_cached(repo_id: str) -> bool:
    """Whether ``repo_id`` has been downloaded into the local Hugging Face cache (its ``config.json``)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, _PROBE_FILE), str)
    except Exception:  # an id the cache cannot hold (HFValidationError), an unreadable cache
        return False


def hub_kwargs(repo_id: str) -> dict[str, Any]:
    """The ``from_pretrained`` keywords for hub id ``repo_id``: ``{}`` (download as usual) or
    ``{"local_files_only": True}`` (the cached copy: offline, or the Hub unreachable). Raises one
    :class:`InputError` line when neither works. The Hub is asked at most once per id and process."""
    return dict(_decide(repo_id))


@functools.cache
def _decide(repo_id: str) -> tuple[tuple[str, Any], ...]:
    local = (("local_files_only", True),)
    if is_offline():
        if is_cached(repo_id):
            return local
        raise InputError(
            repo_id,
            "not in the local Hugging Face cache, and HF_HUB_OFFLINE=1 forbids downloading it: "
            "download it once with the Hub reachable, or give a local path",
        )
    unreachable = _probe(repo_id)
    if unreachable is None:
        return ()
    if is_cached(repo_id):
        return local
    raise InputError(
        repo_id,
        f"cannot reach the Hugging Face Hub to check this model ({unreachable}): set HF_HUB_OFFLINE=1 to "
        "use the local cache only, or give a local path",
    )


def _probe(repo_id: str) -> str | None:
    """``None`` when the Hub answered for ``repo_id``; else why it could not be reached (a short phrase).
    A repository the Hub says does not exist is an :class:`InputError`."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    try:
        # a fresh HfApi reads the endpoint (HF_ENDPOINT) now; model_info makes one request, no retry
        HfApi().model_info(repo_id, timeout=PROBE_TIMEOUT_S)
    except GatedRepoError:
        return None  # it exists; the download says whether this token may read it
    except RepositoryNotFoundError:
        raise InputError(
            repo_id,
            "no such model on the Hugging Face Hub (a private one needs `hf auth login`), "
            "and no local directory of that name",
        ) from None
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        return f"HTTP {status}" if status else type(exc).__name__
    except Exception as exc:  # connection refused, name resolution, timeout: the transport's own classes
        detail = " ".join(str(exc).split())[:120]
        return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return None
