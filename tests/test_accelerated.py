"""The optional C accelerators are really there where they can be: a machine with a C compiler builds
them at install (a failed optional build would otherwise only make their tests skip), and a build is
used only when it is the interface version the Python code expects."""

from __future__ import annotations

import importlib
import os
import shutil

import pytest

from qckit_builtins import accelerated

ENABLED = not os.environ.get("QCKIT_NO_EXTENSIONS")


@pytest.mark.skipif(not ENABLED, reason="QCKIT_NO_EXTENSIONS is set")
@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler here")
def test_every_accelerator_is_built_and_used_where_a_compiler_is() -> None:
    assert accelerated.available() == dict.fromkeys(accelerated.available(), True), (
        "a C accelerator did not build or is stale: rebuild with `pip install -e .` and read its output"
    )


@pytest.mark.parametrize("name", sorted(accelerated.API))
def test_a_build_of_another_interface_version_is_left_unused(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    try:
        module = importlib.import_module(f"qckit_builtins.{name}")
    except ImportError:
        pytest.skip(f"{name} is not built here")
    assert accelerated.API[name] == module.API, "a stale build: rebuild with pip install -e ."
    monkeypatch.setattr(module, "API", module.API + 1)
    assert accelerated._load(name) is None
    monkeypatch.setenv("QCKIT_NO_EXTENSIONS", "1")
    monkeypatch.setattr(module, "API", accelerated.API[name])
    assert accelerated._load(name) is None
