"""Every error class leaves the CLI with its own exit status, through ``main()`` and through ``python -m qckit``.

The failures come from real places: a recipe, a missing file, a hardware refusal, and a small plugin
distribution written into a temporary directory and found through the ``qckit`` entry-point group, whose
components raise on purpose.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from rich.console import Console

from qckit import errors
from qckit.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"

PLUGIN = '''
import os
import time

from qckit import hookimpl
from qckit.errors import QckitError


class FailingReader:
    """Reads nothing: refuses every file with a qckit error of the base class."""

    name = "hostile.fail"
    suffixes = (".fail",)

    def records(self, path):
        raise QckitError(f"{path}: the hostile reader refuses on purpose")

    def parse(self, record, source, line, issues):
        return None


class Crash:
    name = "hostile.crash"
    stateful = False

    def drop_reason(self, doc):
        raise ValueError("boom")


class Stall:
    """Touches $HOSTILE_MARK, then sleeps: a stand-in for a long run to interrupt."""

    name = "hostile.stall"
    stateful = False

    def drop_reason(self, doc):
        mark = os.environ.get("HOSTILE_MARK")
        if mark:
            open(mark, "w").close()
        time.sleep(60)
        return None


class Interrupt:
    name = "hostile.interrupt"
    stateful = False

    def drop_reason(self, doc):
        raise KeyboardInterrupt


@hookimpl
def register_readers(register):
    register(FailingReader)


@hookimpl
def register_filters(register):
    for component in (Crash, Stall, Interrupt):
        register(component)
'''

DUPLICATE = """
from qckit import hookimpl


class Length:
    name = "length"  # the built-in's name: registering it again is a plugin error
    stateful = False

    def drop_reason(self, doc):
        return None


@hookimpl
def register_filters(register):
    register(Length)
"""


def _distribution(root: Path, name: str, modules: dict[str, str], entry_points: dict[str, str]) -> Path:
    """A minimal installed distribution (``*.dist-info`` with ``entry_points.txt``) under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    info = root / f"{name.replace('-', '_')}-0.1.dist-info"  # the wheel spec: no dash in the name part
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n", encoding="utf-8")
    lines = "\n".join(f"{k} = {v}" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[qckit]\n{lines}\n", encoding="utf-8")
    return root


@pytest.fixture
def hostile_plugin(tmp_path, monkeypatch) -> Path:
    root = _distribution(
        tmp_path / "site", "qckit-hostile", {"qckit_hostile": PLUGIN}, {"hostile": "qckit_hostile"}
    )
    monkeypatch.syspath_prepend(str(root))
    return root


def _recipe(tmp_path: Path, filters: str = "", inputs: str = '["in.txt"]') -> Path:
    (tmp_path / "in.txt").write_text(
        "Une phrase assez longue pour se rendre aux filtres.\n" * 3, encoding="utf-8"
    )
    (tmp_path / "in.fail").write_text("x\n", encoding="utf-8")
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        f'[prepare]\ninputs = {inputs}\noutput = "out"\nworkers = 1\n{filters}', encoding="utf-8"
    )
    return recipe


def _main(argv: list[str]) -> tuple[int, str]:
    out = Console(width=120, record=True, force_terminal=False)
    err = Console(width=120, record=True, force_terminal=False)
    status = main(argv, console=out, stderr=err)
    return status, err.export_text()


def test_success_is_0(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _main(["run", str(_recipe(tmp_path))])[0] == 0


def test_a_qckit_error_of_the_base_class_is_1(tmp_path, monkeypatch, hostile_plugin):
    monkeypatch.chdir(tmp_path)
    status, err = _main(["run", str(_recipe(tmp_path, inputs='["in.fail"]'))])
    assert status == errors.QckitError.exit_code == 1, err
    assert "the hostile reader refuses on purpose" in err


def test_a_recipe_error_is_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, err = _main(["run", str(_recipe(tmp_path)), "--set", "prepare.workers=-1"])
    assert status == errors.RecipeError.exit_code == 2, err


def test_an_input_error_is_3(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, err = _main(["prepare", "--input", "missing.txt", "--output", "out"])
    assert status == errors.InputError.exit_code == 3, err


def test_a_plugin_error_is_4(tmp_path, monkeypatch):
    root = _distribution(tmp_path / "site", "qckit-dup", {"qckit_dup": DUPLICATE}, {"dup": "qckit_dup"})
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.chdir(tmp_path)
    status, err = _main(["run", str(_recipe(tmp_path)), "--check"])
    assert status == errors.PluginError.exit_code == 4, err
    assert "registered twice" in err and "plugin 'dup'" in err


def test_a_component_error_is_5(tmp_path, monkeypatch, hostile_plugin):
    monkeypatch.chdir(tmp_path)
    status, err = _main(["run", str(_recipe(tmp_path, '[[prepare.filters]]\nuse = "hostile.crash"\n'))])
    assert status == errors.ComponentError.exit_code == 5, err
    assert 'filter "hostile.crash"' in err and "in.txt:1" in err and "ValueError: boom" in err


def test_a_hardware_error_is_6(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.txt").write_text("Une phrase.\n", encoding="utf-8")
    # FSDP needs several CUDA processes: refused on this CPU and on a single-process GPU run alike
    status, err = _main(["train", "--train_file", "train.txt", "--fsdp", "full_shard auto_wrap"])
    assert status == errors.HardwareError.exit_code == 6, err
    assert "FSDP" in err


def test_an_interruption_is_130(tmp_path, monkeypatch, hostile_plugin):
    monkeypatch.chdir(tmp_path)
    status, err = _main(["run", str(_recipe(tmp_path, '[[prepare.filters]]\nuse = "hostile.interrupt"\n'))])
    assert status == errors.INTERRUPTED_EXIT_CODE == 130, err
    assert "interrupted" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_the_real_process_exits_130_on_sigint_and_2_on_a_bad_recipe(tmp_path, hostile_plugin):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(hostile_plugin), os.environ.get("PYTHONPATH", "")]),
    }
    bad = subprocess.run(
        [sys.executable, "-m", "qckit", "run", "nope.toml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "nope.toml" in bad.stderr
    mark = tmp_path / "started"
    recipe = _recipe(tmp_path, '[[prepare.filters]]\nuse = "hostile.stall"\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "qckit", "run", str(recipe)],
        cwd=tmp_path,
        env={**env, "HOSTILE_MARK": str(mark)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as from a terminal: a test run started in the background (``cmd &``) ignores SIGINT, and so
        # would the child, rightly (a background job is not Ctrl-C'd)
        preexec_fn=functools.partial(signal.signal, signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 60
        while not mark.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert mark.exists(), proc.communicate(timeout=5)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == errors.INTERRUPTED_EXIT_CODE, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr


def test_readme_lists_every_exit_status_once():
    """README's table is a copy of the one table, ``errors.exit_statuses()`` (which ``qckit --help`` prints)."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n### Exit statuses\n", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| (\d+) \| (.*?) \|\s*`?(\w*)`?\s*\|$", section, flags=re.M)
    assert rows == [(str(status), meaning, raised) for status, meaning, raised in errors.exit_statuses()]
    codes = [cls.exit_code for cls in errors.ERROR_CLASSES]
    assert len(set(codes)) == len(codes)  # one status per kind of error
