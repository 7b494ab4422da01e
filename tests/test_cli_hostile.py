"""Hostile input at the command line: every failure is one literal line on stderr, the right exit status,
the culprit named, and never a traceback.

Each case builds its inputs in a temporary directory and runs ``qckit.cli.main`` with separate stdout and
stderr consoles (rendered at 80 columns, as a new user's terminal would be).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from rich.console import Console

from qckit.cli import main
from qckit.errors import InputError, QckitError, RecipeError
from qckit.recipe import MAX_RECIPE_BYTES, dump_toml, load_recipe

GOOD_RECIPE = '[prepare]\ninputs = ["in.txt"]\noutput = "out"\n'


def run_cli(argv: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    monkeypatch.chdir(cwd)
    out = Console(width=80, record=True, force_terminal=False)
    err = Console(width=80, record=True, force_terminal=False)
    status = main(argv, console=out, stderr=err)
    return status, out.export_text(), err.export_text()


@dataclass
class Case:
    """One hostile invocation: files to create, the argv, what must come out."""

    id: str
    argv: list[str]
    status: int
    names: tuple[str, ...]  # substrings the single error line must contain (the culprit and what is wrong)
    files: Callable[[Path], None] = lambda d: None


def write(name: str, content: str | bytes) -> Callable[[Path], None]:
    def make(d: Path) -> None:
        path = d / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")

    return make


def both(*makers: Callable[[Path], None]) -> Callable[[Path], None]:
    def make(d: Path) -> None:
        for m in makers:
            m(d)

    return make


CASES = [
    Case("recipe-missing", ["run", "nope.toml"], 2, ("nope.toml", "no such recipe file")),
    Case("recipe-is-a-directory", ["run", "."], 2, ("is a directory",)),
    Case("recipe-is-dev-zero", ["run", "/dev/zero", "--check"], 2, ("/dev/zero", "not a regular file")),
    Case(
        "recipe-unreadable", ["run", "/proc/self/mem", "--check"], 2, ("/proc/self/mem", "cannot read recipe")
    ),
    Case(
        "recipe-too-large",
        ["run", "big.toml", "--check"],
        2,
        ("big.toml", "larger than"),
        write("big.toml", "# " + "x" * MAX_RECIPE_BYTES + "\n"),
    ),
    Case(
        "recipe-not-utf8",
        ["run", "latin1.toml", "--check"],
        2,
        ("latin1.toml", "not UTF-8", "0xe9", "line 2"),
        write("latin1.toml", b'[prepare]\ninputs = ["caf\xe9.txt"]\n'),
    ),
    Case(
        "recipe-not-toml",
        ["run", "bad.toml", "--check"],
        2,
        ("bad.toml", "invalid TOML", "line 2"),
        write("bad.toml", "[prepare]\ninputs = [1,,]\n"),
    ),
    Case(
        "message-with-brackets-is-literal",
        ["run", "r.toml", "--check"],
        2,
        ("r.toml:prepare.bogus", "unknown key 'bogus' in [prepare]"),
        write("r.toml", GOOD_RECIPE + "bogus = 1\n"),
    ),
    Case("path-with-closing-markup", ["run", "a[/]b.toml"], 2, ("a[/]b.toml", "no such recipe file")),
    Case("path-with-emoji-code", ["run", "x:a:.toml"], 2, ("x:a:.toml",)),
    Case("path-with-markup-tags", ["run", "[bold]x[/bold].toml"], 2, ("[bold]x[/bold].toml",)),
    Case("path-with-escape-sequence", ["run", "x\x1b[31mred.toml"], 2, ("x\\x1b[31mred.toml",)),
    Case(
        "set-starts-with-index",
        ["run", "r.toml", "--set", "[0]=1"],
        2,
        ("--set [0]=1", "starts with a table"),
    ),
    Case(
        "set-empty-segment", ["run", "r.toml", "--set", "prepare..output=x"], 2, ("--set prepare..output=x",)
    ),
    Case(
        "set-without-equals",
        ["run", "r.toml", "--set", "prepare.output"],
        2,
        ("--set prepare.output", "key.path=value"),
    ),
    Case("set-empty-key", ["run", "r.toml", "--set", "=3"], 2, ("--set =3", "empty key path")),
    Case(
        "set-index-out-of-range",
        ["run", "r.toml", "--set", "prepare.filters[99].min_length=3"],
        2,
        ("prepare.filters[99]", "out of range"),
    ),
    Case(
        "set-unknown-component",
        ["run", "r.toml", "--set", "prepare.filters.nope.x=1"],
        2,
        ("no component named 'nope'",),
    ),
    Case(
        "set-not-utf8",
        ["run", "r.toml", "--set", "prepare.output=caf\udce9"],
        2,
        ("not valid UTF-8",),
    ),
    Case("set-into-scalar", ["run", "r.toml", "--set", "prepare.output.x=1"], 2, ("prepare.output",)),
    Case("plugins-unknown-kind", ["plugins", "filtre"], 2, ("unknown component kind 'filtre'",)),
    Case("plugins-unknown-name", ["plugins", "filter", "lenght"], 2, ("'lenght'", "did you mean 'length'")),
    Case(
        "prepare-missing-input",
        ["prepare", "--input", "x[/].txt", "--output", "o"],
        3,
        ("x[/].txt", "no such file"),
    ),
    Case(
        "evaluate-missing-model",
        ["evaluate", "--model", "./no/model", "--val_file", "v.txt"],
        3,
        ("./no/model",),
    ),
]


def _recipe(d: Path) -> None:
    (d / "r.toml").write_text(GOOD_RECIPE, encoding="utf-8")
    (d / "in.txt").write_text(
        "Une phrase assez longue pour passer les filtres du pipeline.\n", encoding="utf-8"
    )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_each_hostile_invocation_fails_in_one_literal_line(case: Case, tmp_path, monkeypatch):
    _recipe(tmp_path)
    case.files(tmp_path)
    status, out, err = run_cli(case.argv, tmp_path, monkeypatch)
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == case.status, (status, err, out)
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    for name in case.names:
        assert name in lines[0], (name, lines[0])
    assert "Traceback" not in err + out
    assert "\x1b" not in err  # a control character in a user string never reaches the terminal raw


# -- model and adapter loading ------------------------------------------------------------------------


@pytest.fixture
def broken_models(tmp_path, tiny_model_dir):
    """Model directories broken in the ways users break them."""
    d = tmp_path / "models"
    variants = {}
    corrupt = d / "corrupt-safetensors"
    shutil.copytree(tiny_model_dir, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    variants["corrupt-safetensors"] = corrupt
    pickled = d / "bad-pickle"
    shutil.copytree(tiny_model_dir, pickled)
    (pickled / "model.safetensors").unlink()
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x02not a pickle at all")
    variants["bad-pickle"] = pickled
    no_weights = d / "no-weights"
    shutil.copytree(tiny_model_dir, no_weights)
    (no_weights / "model.safetensors").unlink()
    variants["no-weights"] = no_weights
    arch = d / "unknown-architecture"
    shutil.copytree(tiny_model_dir, arch)
    config = json.loads((arch / "config.json").read_text())
    config["model_type"] = "no_such_architecture"
    config["architectures"] = ["NoSuchForCausalLM"]
    (arch / "config.json").write_text(json.dumps(config))
    variants["unknown-architecture"] = arch
    return variants


@pytest.mark.parametrize(
    "variant", ["corrupt-safetensors", "bad-pickle", "no-weights", "unknown-architecture"]
)
def test_broken_models_are_one_line_naming_the_path(variant, broken_models, tmp_path, monkeypatch):
    (tmp_path / "v.txt").write_text("Une phrase de validation.\n", encoding="utf-8")
    model = broken_models[variant]
    status, out, err = run_cli(
        ["evaluate", "--model", str(model), "--val_file", "v.txt"], tmp_path, monkeypatch
    )
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == InputError.exit_code, err
    assert len(lines) == 1 and str(model) in lines[0] and "cannot load" in lines[0], err
    assert "Traceback" not in err + out


@pytest.mark.parametrize(
    ("variant", "what"),
    [
        ("missing", "adapter not found"),
        ("no-config", "no adapter_config.json"),
        ("garbage-config", "cannot apply the adapter"),
        ("corrupt-weights", "cannot apply the adapter"),
    ],
)
def test_broken_adapters_are_one_line_naming_the_directory(
    variant, what, tiny_model_dir, tmp_path, monkeypatch
):
    (tmp_path / "v.txt").write_text("Une phrase de validation.\n", encoding="utf-8")
    adapter = tmp_path / "adapter"
    if variant != "missing":
        adapter.mkdir()
    if variant == "garbage-config":
        (adapter / "adapter_config.json").write_text("{not json")
    if variant == "corrupt-weights":
        config = {
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "r": 4,
            "lora_alpha": 8,
            "target_modules": ["q_proj"],
        }
        (adapter / "adapter_config.json").write_text(json.dumps(config))
        (adapter / "adapter_model.safetensors").write_bytes(b"garbage")
    argv = ["evaluate", "--model", str(tiny_model_dir), "--adapter", str(adapter), "--val_file", "v.txt"]
    status, out, err = run_cli(argv, tmp_path, monkeypatch)
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == InputError.exit_code, err
    assert len(lines) == 1 and str(adapter) in lines[0] and what in lines[0], err
    assert "Traceback" not in err + out


# -- the saved recipe ---------------------------------------------------------------------------------

HOSTILE_STRINGS = [
    'quote " and backslash \\ and \\n literal',
    "line\nbreak\r\nand\ttab",
    "control \x00\x01\x07\x08\x0b\x0c\x1b\x1f and DEL \x7f",
    "unicode: Québec « guillemets » œ 🎉 \u202e\u2028\u2029",
    "[prepare] :a: [/] [bold]",
    "",
]


@pytest.mark.parametrize("text", HOSTILE_STRINGS)
def test_dump_toml_round_trips_hostile_strings(text, tmp_path):
    import tomllib

    data = {"name": text, "prepare": {"inputs": [text, "x"], text or "k": {"v": text}}}
    dumped = dump_toml(data)
    assert tomllib.loads(dumped) == data
    path = tmp_path / "r.toml"
    path.write_text(dumped, encoding="utf-8")
    assert tomllib.loads(path.read_text(encoding="utf-8")) == data


def test_a_recipe_with_control_characters_saves_a_recipe_that_parses(tmp_path):
    import tomllib

    (tmp_path / "in.txt").write_text("x\n", encoding="utf-8")
    recipe = load_recipe(
        _write(tmp_path / "r.toml", 'description = "tab\\there\\u0007bell\\u001b[31m"\n' + GOOD_RECIPE)
    )
    assert tomllib.loads(recipe.to_toml())["description"] == "tab\there\x07bell\x1b[31m"


def test_lone_surrogates_from_the_command_line_are_refused_before_any_work(tmp_path):
    from qckit.recipe import build_recipe

    # a file name given as bytes that are not UTF-8 reaches Python as a lone surrogate
    with pytest.raises(RecipeError, match=r"^qckit prepare:prepare.inputs\[0\]: not valid UTF-8"):
        build_recipe({"prepare": {"inputs": ["caf\udce9.txt"]}}, source="qckit prepare")
    with pytest.raises(RecipeError, match=r"^--set prepare.inputs=.*: not valid UTF-8"):
        load_recipe(_write(tmp_path / "r.toml", GOOD_RECIPE), overrides=['prepare.inputs=["caf\udce9.txt"]'])


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- warnings and the real process ---------------------------------------------------------------------


def test_warnings_and_reports_print_user_text_literally():
    from qckit.cli.observer import RichObserver

    console = Console(width=80, record=True, force_terminal=False)
    observer = RichObserver(console)
    observer.warn("file [/]x.txt has :a: and [bold]tags[/bold]")
    observer.report("note", "a [red]value[/red]")
    text = console.export_text()
    assert "warning: file [/]x.txt has :a: and [bold]tags[/bold]" in text
    assert "note: a [red]value[/red]" in text


def test_unexpected_errors_are_one_line_too(monkeypatch, tmp_path):
    import qckit.cli.plugins as plugins_command

    def broken(args, console):
        raise ZeroDivisionError("a bug\nwith two lines")

    monkeypatch.setattr(plugins_command, "cmd_plugins", broken)
    monkeypatch.delenv("QCKIT_TRACEBACK", raising=False)
    status, out, err = run_cli(["plugins"], tmp_path, monkeypatch)
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == QckitError.exit_code
    assert len(lines) == 1 and "unexpected ZeroDivisionError: a bug with two lines" in lines[0]


def test_the_real_process_prints_one_line_on_stderr_and_exits_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "qckit", "run", "a[/]b :a: \x1b.toml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "a[/]b :a: \\x1b.toml: no such recipe file" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_plugins_table_is_readable_at_80_columns(tmp_path, monkeypatch):
    from qckit.host import PluginHost

    status, out, err = run_cli(["plugins"], tmp_path, monkeypatch)
    assert status == 0, err
    host = PluginHost.from_entry_points()
    words = set(out.split())
    for plugin in host.plugins.values():
        assert plugin.module in words, plugin.module  # never broken across lines
    for comps in host.registry.values():
        for name in comps:
            assert name in words or f"{name}," in words, name
    assert max(len(line) for line in out.splitlines()) <= 80
