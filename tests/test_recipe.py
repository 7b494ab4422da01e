"""Recipe validation: every error names the file and key path, before any work starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from qckit.errors import RecipeError
from qckit.recipe import apply_override, build_recipe, dump_toml, load_recipe

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path, text):
    p = tmp_path / "r.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_shipped_recipes_are_valid():
    for path in sorted((REPO / "recipes").glob("*.toml")):
        recipe = load_recipe(path)
        assert recipe.prepare is not None or recipe.train is not None


def test_defaults_fill_missing_component_lists():
    recipe = build_recipe({"prepare": {"inputs": ["x.txt"]}})
    names = [s.name for s in recipe.prepare.filters]
    assert names[:4] == ["length", "min_words", "unique_words", "alpha_ratio"]
    assert "exact_dedup" in names
    assert recipe.prepare.splitter.name == "random"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[prepare]\ninputz = []\n",
            "r.toml:prepare.inputz: unknown key 'inputz' in [prepare]; did you mean 'inputs'?",
        ),
        ("[prepare]\nworkers = 'two'\n", "r.toml:prepare.workers: expected an integer, got a string 'two'"),
        ("[prepare]\nworkers = -1\n", "r.toml:prepare.workers: must be 0 (one per core) or more"),
        (
            "[[prepare.filters]]\nuse = 'lenght'\n",
            "r.toml:prepare.filters[0].use: unknown filter 'lenght'; did you mean 'length'?",
        ),
        (
            "[[prepare.filters]]\nuse = 'length'\nmin_lenght = 3\n",
            "r.toml:prepare.filters[0].min_lenght: unknown key 'min_lenght'",
        ),
        (
            "[[prepare.filters]]\nuse = 'length'\nmin_length = 'a'\n",
            "r.toml:prepare.filters[0].min_length: expected an integer",
        ),
        ("[[prepare.filters]]\nmin_length = 3\n", "r.toml:prepare.filters[0]: missing 'use'"),
        (
            "[prepare.splitter]\nuse = 'random'\nval_split = 0.9\n",
            "r.toml:prepare.splitter.val_split: splitter 'random':",
        ),
        ("[prepare]\nfilters = 3\n", "r.toml:prepare.filters: expected an array of tables"),
        ("[bogus]\n", "r.toml:bogus: unknown key 'bogus' in the recipe"),
        ("name = 'x'\n", "a recipe needs a [prepare] or a [train] table"),
        ("[prepare\n", "r.toml: invalid TOML"),
    ],
)
def test_errors_name_file_and_key_path(tmp_path, text, message):
    with pytest.raises(RecipeError) as err:
        load_recipe(write(tmp_path, text))
    assert str(err.value).endswith(message) or message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="no such recipe file"):
        load_recipe(tmp_path / "nope.toml")


def test_set_overrides_by_index_and_by_component_name(tmp_path):
    data = {"prepare": {"inputs": ["a.txt"]}}
    apply_override(data, "prepare.filters.length.min_length=25", "x")
    apply_override(data, "prepare.splitter.val_split=0.2", "x")
    apply_override(data, "prepare.merge=true", "x")
    apply_override(data, "prepare.filters[1].min_words=5", "x")
    recipe = build_recipe(data)
    assert recipe.prepare.filters[0].instance is not None
    assert recipe.data["prepare"]["filters"][0]["min_length"] == 25
    assert recipe.data["prepare"]["filters"][1]["min_words"] == 5
    assert recipe.data["prepare"]["splitter"]["val_split"] == 0.2
    assert recipe.prepare.settings.merge is True


def test_set_with_unknown_component_name_lists_components():
    data = {"prepare": {"inputs": ["a.txt"]}}
    with pytest.raises(RecipeError, match="no component named 'nope'"):
        apply_override(data, "prepare.filters.nope.x=1", "cli")


def test_resolved_recipe_round_trips_through_toml():
    import tomllib

    recipe = build_recipe({"prepare": {"inputs": ["a.txt"], "merge": True}})
    again = build_recipe(tomllib.loads(recipe.to_toml()))
    assert again.data == recipe.data
    assert "min_length = 10" in dump_toml(recipe.data)


def test_ints_are_accepted_for_floats():
    recipe = build_recipe({"prepare": {"splitter": {"use": "random", "val_split": 0}}})
    assert recipe.prepare.splitter.params["val_split"] == 0


def test_nested_settings_tables_are_validated_with_their_key_path():
    import dataclasses

    from qckit.recipe import _coerce

    @dataclasses.dataclass
    class Source:
        path: str
        weight: float = 1.0

        def __post_init__(self):
            if self.weight <= 0:
                raise ValueError("weight: must be greater than 0")

    built = _coerce([{"path": "a.txt"}, {"path": "b.txt", "weight": 2}], list[Source], "train.data", "r.toml")
    assert built == [Source("a.txt", 1.0), Source("b.txt", 2.0)]
    with pytest.raises(RecipeError, match=r"^r.toml:train.data\[1\].weight: expected a number"):
        _coerce([{"path": "a"}, {"path": "b", "weight": "x"}], list[Source], "train.data", "r.toml")
    with pytest.raises(RecipeError, match=r"^r.toml:train.data\[0\].weight: must be greater than 0"):
        _coerce([{"path": "a", "weight": 0}], list[Source], "train.data", "r.toml")
    with pytest.raises(
        RecipeError, match=r"^r.toml:train.data\[0\].pth: unknown key 'pth'.*did you mean 'path'"
    ):
        _coerce([{"pth": "a"}], list[Source], "train.data", "r.toml")
    with pytest.raises(RecipeError, match=r"^r.toml:train.data\[0\]: missing key 'path'$"):
        _coerce([{"weight": 1}], list[Source], "train.data", "r.toml")
    with pytest.raises(RecipeError, match=r"train.data: expected an array of tables"):
        _coerce("a.txt", list[Source], "train.data", "r.toml")
