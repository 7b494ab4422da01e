"""Input files as users give them: thousands of them, the same one twice, one that grows while it is
read, a FIFO or a device instead of a file. Each either works (and is reported) or is refused in one
line before any work starts, in the library and at the command line (exit status 3)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from rich.console import Console

from qckit.cli import main
from qckit.prepare import run_prepare
from qckit.recipe import build_recipe


def prepare(inputs, out, **settings):
    recipe = build_recipe(
        {"prepare": {"inputs": [str(p) for p in inputs], "output": str(out), "workers": 1, **settings}}
    )
    assert recipe.prepare is not None
    return run_prepare(recipe.prepare)


def cli(argv: list[str]) -> tuple[int, str]:
    err = Console(width=300, record=True, force_terminal=False)
    status = main(argv, console=Console(width=300, record=True, force_terminal=False), stderr=err)
    return status, err.export_text()


def line(i: int) -> str:
    return f"Le fichier numéro {i} parle de la cabane à sucre pis du sirop d'érable."


# -- any number of inputs --------------------------------------------------------------------------

MANY = textwrap.dedent(
    """
    import resource, sys
    from pathlib import Path
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    from qckit.prepare import run_prepare
    from qckit.recipe import build_recipe
    d = Path(sys.argv[1])
    paths = sorted(str(p) for p in d.glob("in*.txt"))
    recipe = build_recipe({"prepare": {"inputs": paths, "output": str(d / "out"), "workers": 1,
                                       "splitter": {"use": "hash", "val_split": 0.5}}})
    print(run_prepare(recipe.prepare).stats["kept"])
    """
)


def test_more_inputs_than_open_files_allowed_without_merge(tmp_path):
    n = 1100  # each input its own set: once one spool file per set was open, 256 was the limit
    for i in range(n):
        (tmp_path / f"in{i:04d}.txt").write_text(f"{line(i)}\n{line(i)} Encore.\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-c", MANY, str(tmp_path)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == [str(2 * n)]
    out = tmp_path / "out"
    for i in (0, 255, 256, 1099):  # every set got its own file's documents, and only those
        got = sorted(
            (out / f"{part}_{i + 1}.txt").read_text(encoding="utf-8").splitlines()
            for part in ("train", "val")
        )
        assert sorted(sum(got, [])) == sorted([line(i), f"{line(i)} Encore."])
