"""Shared fixtures. Keep this small and generic; fixtures specific to one test file belong in that file."""

from __future__ import annotations

import os
from pathlib import Path

# The suite describes a CPU machine (CI has no GPU): hide any CUDA device before torch is imported, so the
# same tests pass unchanged on a GPU host. GPU paths are checked by bench/gpu_check.sh. QCKIT_TEST_GPU=1
# keeps the devices visible (then tests that describe the CPU are expected to differ).
if not os.environ.get("QCKIT_TEST_GPU"):
    os.environ["CUDA_VISIBLE_DEVICES"] = ""

import pytest
from hypothesis import settings

from qckit.testing import SAMPLE_SENTENCES, save_tiny_model

# Property tests draw the same examples on every run and machine, and keep no example database.
settings.register_profile("qckit", derandomize=True, database=None, deadline=None)
settings.load_profile("qckit")


@pytest.fixture(scope="session", autouse=True)
def _private_qckit_cache(tmp_path_factory: pytest.TempPathFactory):
    """Keep the GGUF cache (QCKIT_CACHE) of the whole session in a temporary directory, never in ~/.cache."""
    import os

    before = os.environ.get("QCKIT_CACHE")
    os.environ["QCKIT_CACHE"] = str(tmp_path_factory.mktemp("qckit_cache"))
    yield
    if before is None:
        os.environ.pop("QCKIT_CACHE", None)
    else:
        os.environ["QCKIT_CACHE"] = before


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models' matrices are far too small for intra-op threads: on a busy 2-core machine the thread
    pool's spinning only slows training tests down. Use with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``; restored after the module."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding a tiny Llama + byte-level BPE tokenizer (safetensors), built once per session.

    Treat it as read-only: copy it if a test needs to change it.
    """
    return save_tiny_model(tmp_path_factory.mktemp("tiny_model"), SAMPLE_SENTENCES)


@pytest.fixture(scope="session")
def tiny_tied_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`tiny_model_dir` with tied input/output embeddings (one matrix, as SmolLM2 has); read-only."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny_tied_model"), SAMPLE_SENTENCES, tied=True)


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


# Fragments that exercise the batch methods of the text components: markers, phrases and shields, case and
# accents, ligatures, characters that fold, compose or case-fold to several, astral characters, every kind
# of whitespace and control character, mojibake, URLs, e-mail addresses, repeated punctuation.
_BATCH_FRAGMENTS = (
    "pis",
    "Pis",
    "PIS",
    "tant pis",
    "de mal en pis",
    "c'est plate",
    "C’est ben plate",
    "ç'a",
    "à matin",
    "À SOIR",
    "fin de semaine",
    "ben là",
    "char",
    "chars d'assaut",
    "poutine",
    "Poutinerie",
    "bécosses",
    "débarbouillettes",
    "debarbouillettesxyzlongue",
    "magasiner",
    "tabarnak",
    "écœurant",
    "ÉCŒURANT",
    "œuvre",
    "Lætitia",
    "straße",
    "ﬁn",
    "½",
    "x²",
    "e\u0301te\u0301",
    "İstanbul",
    "ΣΟΦΟΣ",
    "σοφος",
    "𐐀𐐨",
    "😀",
    "𝐀bc",
    "\u0301",
    "한국",
    "\u1100\u1161",
    "\ufffd",
    "\x85",
    "\x0c",
    "\r\n",
    "\n",
    "\t",
    "  ",
    " ",
    "\u00a0",
    "\u202f",
    "\u2007",
    "\u3000",
    "\u200b",
    "\u00ad",
    "\x07",
    "\x1b[0m",
    "CafÃ©",
    "câ€™est",
    "Ã ",
    "l\x92homme",
    "Â ",
    "https://exemple.ca/page",
    "(www.x.qc.ca).",
    "WWW.X.CA",
    "Www.Y.ca",
    "marie.tremblay@exemple.qc.ca",
    "mailto:a@b.ca",
    "@",
    "...",
    "..",
    "!!!",
    "??",
    "?!",
    "«",
    "»",
    ",",
    ".",
    "'",
    "’",
    "-",
    "123",
    "l'",
    "d'",
    "j'su",
    "t'sais",
    "y",
    "a",
    "de",
    "la",
    "mal",
    "en",
    "anticonstitutionnellement",
    "Ça",
    "toute toute",
    "allo allo allo allo",
    "…",
    "™",
)


@pytest.fixture(scope="session")
def varied_texts() -> tuple[str, ...]:
    """Deterministic texts for checking that a batch method gives what the per-document one gives: the
    sample corpus (invalid UTF-8 replaced, so with its mojibake, control characters, URLs), the same in
    upper case, random mixes of tricky fragments, and edge cases (empty, "\\0", lone surrogate …)."""
    import random

    data = Path(__file__).resolve().parent.parent / "data" / "sample" / "quebec_sample.txt"
    lines = data.read_bytes().decode("utf-8", errors="replace").split("\n")
    rng = random.Random(20240531)
    mixes = [
        rng.choice(["", " ", "\u00a0"]).join(rng.choice(_BATCH_FRAGMENTS) for _ in range(rng.randint(0, 14)))
        for _ in range(600)
    ]
    edges = ["", " ", "\u00a0", "\n", "\x00", "a\x00b pis", "lone \ud800 surrogate", "x" * 300, "pis " * 50]
    return (*lines, *(line.upper() for line in lines[::3]), *mixes, *edges)


@pytest.fixture(scope="session")
def varied_batches(varied_texts: tuple[str, ...]) -> list[list[str]]:
    """:func:`varied_texts` cut into consecutive batches of 1, 7, 64 and 1000 texts, plus an empty batch."""
    batches: list[list[str]] = [[]]
    for size in (1, 7, 64, 1000):
        batches += [list(varied_texts[i : i + size]) for i in range(0, len(varied_texts), size)]
    return batches
