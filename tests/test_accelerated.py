"""The optional C accelerators are really there where they can be: a machine with a C compiler builds
them at install (a failed optional build would otherwise only make their tests skip), and a build is
used only when it is the interface version the Python code expects."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qckit_builtins import accelerated
from qckit_builtins._env import no_extensions

ENABLED = not no_extensions(os.environ)
REPO = Path(__file__).resolve().parents[1]


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


@pytest.mark.parametrize(
    ("value", "off"),
    [
        (None, False),
        ("", False),
        ("0", False),
        (" false ", False),
        ("No", False),
        ("OFF", False),
        ("1", True),
        ("true", True),
        ("YES", True),
        ("on", True),
    ],
)
def test_qckit_no_extensions_is_read_as_a_boolean(value: str | None, off: bool) -> None:
    environ = {} if value is None else {"QCKIT_NO_EXTENSIONS": value}
    assert no_extensions(environ) is off


def test_a_value_that_is_not_a_boolean_is_one_clear_error_at_run_time_and_at_install() -> None:
    message = "QCKIT_NO_EXTENSIONS='maybe' is not a boolean: 1/true/yes/on leaves the C accelerators out"
    with pytest.raises(ValueError, match=message):
        no_extensions({"QCKIT_NO_EXTENSIONS": "maybe"})
    env = {**os.environ, "QCKIT_NO_EXTENSIONS": "maybe"}
    setup = subprocess.run(
        [sys.executable, "setup.py", "--name"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert setup.returncode != 0 and f"setup.py: {message}" in setup.stderr
    env["QCKIT_NO_EXTENSIONS"] = "0"
    setup = subprocess.run(
        [sys.executable, "setup.py", "--name"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert setup.returncode == 0, setup.stderr


def test_zero_uses_the_accelerators_as_unset_does(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in accelerated.API:
        monkeypatch.delenv("QCKIT_NO_EXTENSIONS", raising=False)
        unset = accelerated._load(name)
        monkeypatch.setenv("QCKIT_NO_EXTENSIONS", "0")
        assert accelerated._load(name) is unset
        monkeypatch.setenv("QCKIT_NO_EXTENSIONS", "on")
        assert accelerated._load(name) is None
