"""Shared fixtures. Keep this small and generic; fixtures specific to one test file belong in that file."""

from __future__ import annotations

from pathlib import Path

import pytest

from qckit.testing import SAMPLE_SENTENCES, save_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding a tiny Llama + byte-level BPE tokenizer (safetensors), built once per session.

    Treat it as read-only: copy it if a test needs to change it.
    """
    return save_tiny_model(tmp_path_factory.mktemp("tiny_model"), SAMPLE_SENTENCES)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir: Path):
    """The tokenizer of :func:`tiny_model_dir`, loaded with ``AutoTokenizer`` (shared: do not mutate)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture
def tiny_model(tiny_model_dir: Path):
    """A fresh copy of the tiny model (function-scoped, so tests may train or wrap it)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir)
