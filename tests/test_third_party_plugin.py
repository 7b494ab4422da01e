"""A real third-party plugin package, pip-installed into a temporary directory, used by a recipe."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from qckit.cli import main
from qckit.host import PluginHost
from qckit.prepare import prepare_texts
from qckit.recipe import build_recipe

PACKAGE = Path(__file__).parent / "plugins" / "qckit-acme"


@pytest.fixture(scope="module")
def acme_installed(tmp_path_factory):
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--target",
            str(target),
            str(PACKAGE),
        ],
        check=True,
        capture_output=True,
    )
    sys.path.insert(0, str(target))
    yield target
    sys.path.remove(str(target))
    for name in [m for m in sys.modules if m.startswith("qckit_acme")]:
        del sys.modules[name]


def test_entry_point_plugin_is_loaded_with_its_distribution(acme_installed):
    host = PluginHost.from_entry_points()
    info = host.get("filter", "acme.no_shouting")
    assert (info.plugin.name, info.plugin.distribution, info.plugin.version) == (
        "acme",
        "qckit-acme",
        "0.3.1",
    )
    # the broken module is reported by name, and did not take the others down
    assert "acme_broken" in host.failed
    assert "qckit_acme_missing_dependency" in host.failed["acme_broken"].error


def test_recipe_uses_third_party_filter(acme_installed):
    result = prepare_texts(
        ["Bonjour tout le monde, il fait beau à Québec.", "ARRÊTE DE CRIER COMME ÇA MON CHUM!!"],
        {
            "prepare": {
                "filters": [{"use": "acme.no_shouting", "max_upper_ratio": 0.6}],
                "splitter": {"use": "random", "val_split": 0.0},
            }
        },
    )
    assert [d.text for d in result.train] == ["Bonjour tout le monde, il fait beau à Québec."]
    assert result.stats["filters"]["acme.no_shouting"]["reasons"] == {"shouting": 1}


@pytest.mark.parametrize("workers", [1, 2])
def test_error_inside_plugin_names_component_distribution_and_position(acme_installed, tmp_path, workers):
    # with 2 workers the error is raised in a worker process and must cross back intact
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("une ligne correcte icitte\nça fait boom dans le char\n", encoding="utf-8")
    recipe = build_recipe(
        {
            "prepare": {
                "inputs": [str(corpus)],
                "output": str(tmp_path / "out"),
                "workers": workers,
                "filters": [{"use": "acme.explode"}],
            }
        }
    )
    from qckit.errors import ComponentError
    from qckit.prepare import run_prepare

    with pytest.raises(ComponentError) as err:
        run_prepare(recipe.prepare)
    assert str(err.value).startswith(
        f"filter \"acme.explode\" (plugin 'acme', qckit-acme 0.3.1) failed on {corpus}:2"
    )
    assert not (tmp_path / "out" / "train.txt").exists()


def test_recipe_naming_a_component_of_a_failed_plugin_fails_loudly(acme_installed, tmp_path):
    from qckit.errors import RecipeError

    with pytest.raises(
        RecipeError, match=r"unknown filter 'acme_broken.x'.*acme_broken.*ModuleNotFoundError"
    ):
        build_recipe({"prepare": {"filters": [{"use": "acme_broken.x"}]}})


def test_plugins_command_lists_components_and_failures(acme_installed, capsys):
    from rich.console import Console

    console = Console(width=200, record=True)
    status = main(["plugins"], console=console)
    out = console.export_text()
    assert "acme.no_shouting" in out and "qckit-acme 0.3.1" in out
    assert "failed to load: acme_broken" in out
    assert status == 4  # a failed plugin is a plugin error for `qckit plugins`
