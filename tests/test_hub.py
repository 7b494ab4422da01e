"""A hub id is decided once and fast: offline → the local cache or one line; an unreachable Hub → the cached
copy or one line naming HF_HUB_OFFLINE, in seconds (huggingface_hub alone retries for about a minute).

No test touches the network: the "Hub" is a closed port on the loopback interface, and the cache a
temporary directory laid out as huggingface_hub lays it out.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from huggingface_hub import constants

from qckit import hub
from qckit.errors import InputError
from qckit.models import resolve_model

REPO_ID = "meta-llama/Llama-3.2-1B"


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed): connecting is refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cache_model(cache: Path, repo_id: str) -> None:
    """``repo_id``'s config.json in huggingface_hub's cache layout (refs/main → snapshots/<commit>/)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit, encoding="utf-8")
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}", encoding="utf-8")


@pytest.fixture
def hub_state(tmp_path, monkeypatch):
    """An empty cache, an unreachable endpoint, online; each test starts with no decision remembered."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    hub._decide.cache_clear()
    yield cache
    hub._decide.cache_clear()


def test_unreachable_hub_fails_in_one_line_within_seconds(hub_state):
    started = time.monotonic()
    with pytest.raises(InputError) as caught:
        resolve_model(REPO_ID).pretrained_kwargs()
    assert time.monotonic() - started < hub.PROBE_TIMEOUT_S + 5  # not huggingface_hub's minute of retries
    message = str(caught.value)
    assert message.startswith(f"{REPO_ID}: cannot reach the Hugging Face Hub to check this model (")
    assert "set HF_HUB_OFFLINE=1 to use the local cache only, or give a local path" in message
    assert "\n" not in message


def test_unreachable_hub_uses_the_cached_copy(hub_state):
    cache_model(hub_state, REPO_ID)
    assert hub.hub_kwargs(REPO_ID) == {"local_files_only": True}


def test_offline_needs_the_model_in_the_cache(hub_state, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(InputError, match=r"not in the local Hugging Face cache, and HF_HUB_OFFLINE=1"):
        hub.hub_kwargs(REPO_ID)
    cache_model(hub_state, REPO_ID)
    assert hub.is_cached(REPO_ID) and not hub.is_cached("someone/else")
    assert hub.hub_kwargs(REPO_ID) == {"local_files_only": True}


def test_local_sources_never_ask_the_hub(hub_state, tiny_model_dir):
    assert resolve_model(str(tiny_model_dir)).pretrained_kwargs() == {"local_files_only": True}
    assert hub._decide.cache_info().currsize == 0
