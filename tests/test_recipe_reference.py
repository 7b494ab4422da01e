"""README's recipe keys are generated from the settings dataclasses, so they cannot drift from the code."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from qckit import recipe_reference as ref
from qckit.cli import reference as reference_cli
from qckit.components import EvalSetSettings
from qckit.recipe import _nested_dataclass
from qckit.settings import PrepareSettings
from qckit.train.settings import TrainSettings

ROOT = Path(__file__).resolve().parents[1]

#: the choices of Toy.mode (rendered from the role in its doc)
MODES = ("fast", "exact")


@dataclass
class Toy:
    """A toy table: | piped | and :class:`~qckit.settings.PrepareSettings`."""

    path: str  #: beside: the file
    #: above, one line
    count: int = 3
    #: above, first line,
    #: second line
    ratio: float = 0.5  #: and beside
    flag: bool = (
        True  #: inside the parentheses, where ruff format puts a value whose comment is too long for one line
    )
    plain: str = "x"  # an ordinary comment is no doc
    #: a | pipe, <dir> and a*b outside code; `a|b <c>` inside
    tags: list[str] = field(default_factory=lambda: ["a", "b"])
    mode: str = "fast"  #: one of :data:`MODES`
    limit: int | None = None  #: unset = no limit


def _settings_classes() -> list[type]:
    """Every settings dataclass a recipe reads, the nested ones of [train] included."""
    classes: list[type] = [PrepareSettings, TrainSettings, EvalSetSettings]
    hints = typing.get_type_hints(TrainSettings)
    for f in dataclasses.fields(TrainSettings):
        nested = _nested_dataclass(hints[f.name])
        if nested is not None:
            classes.append(nested[0])
    return classes


def test_readme_block_equals_the_generated_reference():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert ref.replace_block(text, ref.recipe_reference()) == text, (
        "README.md's recipe keys are stale: run python -m qckit.cli.reference --write README.md"
    )
    # the block is the Reference's "Recipe keys" section, right before the exit statuses
    assert (
        text.index("\n## Reference\n")
        < text.index("\n### Recipe keys\n")
        < text.index(ref.START)
        < text.index(ref.END)
        < text.index("\n### Exit statuses\n")
    )


@pytest.mark.parametrize("cls", _settings_classes(), ids=lambda c: c.__name__)
def test_every_settings_field_has_a_meaning(cls):
    docs = ref.field_docs(cls)
    undocumented = [f.name for f in dataclasses.fields(cls) if not docs.get(f.name, "").strip()]
    assert not undocumented, f"{cls.__name__}: add a #: doc to {undocumented}"
    table = ref.settings_table(cls)
    reference = ref.recipe_reference()
    for f in dataclasses.fields(cls):
        row = next(line for line in table.splitlines() if line.startswith(f"| `{f.name}` |"))
        assert row.rstrip(" |").split(" | ")[-1].strip(), row
        assert row in reference


def test_nested_train_tables_have_their_own_section():
    reference = ref.recipe_reference()
    for title in (
        "#### `[prepare]`",
        "#### `[train]`",
        "#### `[[train.data]]`",
        "#### `[train.select]`",
        "#### `[[train.eval]]`",
    ):
        assert title in reference
    assert "`qckit plugins filter NAME`" in reference and "`kind = NAME`" in reference


def test_toy_dataclass_renders_docs_types_and_toml_defaults():
    assert ref.field_docs(Toy) == {
        "path": "beside: the file",
        "count": "above, one line",
        "ratio": "above, first line, second line and beside",
        "flag": "inside the parentheses, where ruff format puts a value whose comment is too long for one line",
        "plain": "",
        "tags": "a | pipe, <dir> and a*b outside code; `a|b <c>` inside",
        "mode": "one of :data:`MODES`",
        "limit": "unset = no limit",
    }
    assert ref.settings_table(Toy).splitlines() == [
        "| key | type | default | meaning |",
        "|---|---|---|---|",
        "| `path` | string | required | beside: the file |",
        "| `count` | integer | `3` | above, one line |",
        "| `ratio` | number | `0.5` | above, first line, second line and beside |",
        "| `flag` | boolean | `true` | inside the parentheses, where ruff format puts a value whose comment is too long for one line |",
        '| `plain` | string | `"x"` |  |',
        '| `tags` | array of strings | `["a", "b"]` | a \\| pipe, \\<dir> and a\\*b outside code; `a\\|b <c>` inside |',
        '| `mode` | string | `"fast"` | one of `["fast", "exact"]` |',
        "| `limit` | integer | unset | unset = no limit |",
    ]


def test_docstring_roles_become_code():
    assert ref._docstring(Toy) == "A toy table: | piped | and `PrepareSettings`."


def test_replace_block_and_the_command(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{ref.START}\nold\n{ref.END}\n\n## after\n", encoding="utf-8")
    assert reference_cli.main(["--check", str(readme)]) == 1
    assert reference_cli.main(["--write", str(readme)]) == 0
    assert (
        readme.read_text(encoding="utf-8")
        == f"# x\n\n{ref.START}\n{ref.recipe_reference()}{ref.END}\n\n## after\n"
    )
    assert reference_cli.main(["--check", str(readme)]) == 0
    readme.write_text("no markers\n", encoding="utf-8")
    assert reference_cli.main(["--check", str(readme)]) == 2
    assert "needs one <!-- recipe-keys:start -->" in capsys.readouterr().err
    with pytest.raises(ValueError, match="README.md: needs one"):
        ref.replace_block(f"{ref.END}\n{ref.START}\n", "x", "README.md")


def test_a_top_level_key_without_its_line_is_refused(monkeypatch):
    monkeypatch.setattr(ref, "_TOP_LEVEL", {k: v for k, v in ref._TOP_LEVEL.items() if k != "description"})
    with pytest.raises(ValueError, match="TOP_LEVEL_KEYS"):
        ref.recipe_reference()
