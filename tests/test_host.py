"""The plugin host: built-ins load through entry points, ownership, duplicates, failures."""

from __future__ import annotations

import types

import pytest

from qckit import hookimpl
from qckit.errors import PluginError
from qckit.host import PluginHost
from qckit.kinds import BY_NAME, KINDS


def test_builtins_load_through_entry_points_and_are_tagged_with_qckit():
    host = PluginHost.from_entry_points()
    info = host.get("filter", "length")
    assert info.plugin.name == "filters"
    assert info.plugin.distribution == "qckit"
    assert info.plugin.version
    for kind in KINDS:
        assert host.names(kind.name), f"no built-in {kind.name}"


def test_two_hosts_are_independent():
    class Extra:
        name = "extra.keep_all"
        stateful = False

        def drop_reason(self, doc):
            return None

    plugin = types.SimpleNamespace(register_filters=hookimpl(lambda register: register(Extra)))
    a = PluginHost.from_entry_points(extra=[("extra", plugin)])
    b = PluginHost.from_entry_points()
    assert "extra.keep_all" in a.names("filter")
    assert "extra.keep_all" not in b.names("filter")


def test_duplicate_component_names_name_both_plugins():
    class Clash:
        name = "length"
        stateful = False

        def drop_reason(self, doc):
            return None

    plugin = types.SimpleNamespace(register_filters=hookimpl(lambda register: register(Clash)))
    host = PluginHost.from_entry_points(extra=[("clasher", plugin)])
    with pytest.raises(PluginError, match=r"registered twice: by plugin 'filters'.*plugin 'clasher'"):
        _ = host.registry


def test_a_builtin_can_be_disabled_and_replaced():
    class MyLength:
        """A replacement length filter."""

        name = "length"
        stateful = False

        def __init__(self, min_length: int = 1):
            self.min_length = min_length

        def drop_reason(self, doc):
            return None

    plugin = types.SimpleNamespace(register_filters=hookimpl(lambda register: register(MyLength)))
    host = PluginHost.from_entry_points(disable=["filters"], extra=[("mine", plugin)])
    assert host.get("filter", "length").cls is MyLength


def test_unknown_component_suggests_close_matches():
    host = PluginHost.from_entry_points()
    with pytest.raises(PluginError, match="did you mean 'length'"):
        host.get("filter", "lenght")


def test_component_without_name_is_rejected():
    class Nameless:
        pass

    plugin = types.SimpleNamespace(register_filters=hookimpl(lambda register: register(Nameless)))
    host = PluginHost.from_entry_points(extra=[("bad", plugin)])
    with pytest.raises(PluginError, match="plugin 'bad'.*without a 'name'"):
        _ = host.registry


def test_every_hook_spec_is_documented():
    from qckit import hookspecs

    for name in dir(hookspecs):
        fn = getattr(hookspecs, name)
        if name.startswith("register_"):
            assert fn.__doc__ and len(fn.__doc__) > 100, (
                f"hook spec {name} needs a docstring (it is the API doc)"
            )


def test_disabling_a_kind_entry_point_removes_every_builtin_of_that_kind():
    host = PluginHost.from_entry_points(disable=["filters"])
    assert host.names("filter") == []
    assert host.names("normalizer")  # the other kinds stay


@pytest.mark.parametrize(
    ("kind", "members", "missing"),
    [
        ("filter", {"stateful": False}, "drop_reason"),
        ("filter", {"stateful": True, "fingerprint": lambda self, d: 0}, "drop_reasons"),
        ("writer", {"suffix": ".x"}, "format"),
        ("reader", {"suffixes": (".x",), "records": lambda self, p: iter(())}, "parse"),
    ],
)
def test_registration_names_the_missing_protocol_members(kind, members, missing):
    component = type("Incomplete", (), {"name": "bad.incomplete", **members})
    plugin = types.SimpleNamespace(**{BY_NAME[kind].hook: hookimpl(lambda register: register(component))})
    host = PluginHost.from_entry_points(extra=[("bad", plugin)])
    with pytest.raises(PluginError, match=rf"{kind} 'bad.incomplete'.*plugin 'bad'.*missing {missing}$"):
        _ = host.registry


def test_an_evaluator_with_an_unknown_regression_unit_is_refused():
    from qckit_builtins.evaluators import BitsPerByte

    component = type("Percent", (BitsPerByte,), {"name": "bad.percent", "regression": "percent"})
    plugin = types.SimpleNamespace(register_evaluators=hookimpl(lambda register: register(component)))
    host = PluginHost.from_entry_points(extra=[("bad", plugin)])
    with pytest.raises(
        PluginError,
        match=r"evaluator 'bad.percent'.*regression must be one of relative, points, not 'percent'",
    ):
        _ = host.registry


def test_optional_abilities_are_not_required():
    kind = BY_NAME["normalizer"]
    assert "normalize_batch" in kind.abilities()
    assert kind.required(object) == ("name", "normalize")
    assert BY_NAME["writer"].required(object) == ("name", "suffix", "format")


def test_unresolvable_type_hints_are_a_registration_error_naming_the_plugin():
    namespace: dict = {}
    exec(  # annotations as strings that name a type nobody defines
        "from __future__ import annotations\n"
        "class Hinted:\n"
        "    name = 'bad.hinted'\n"
        "    stateful = False\n"
        "    def __init__(self, min_len: Undefined = 3):\n"
        "        self.min_len = min_len\n"
        "    def drop_reason(self, doc):\n"
        "        return None\n",
        namespace,
    )
    plugin = types.SimpleNamespace(register_filters=hookimpl(lambda register: register(namespace["Hinted"])))
    host = PluginHost.from_entry_points(extra=[("hinted", plugin)])
    with pytest.raises(
        PluginError, match=r"plugin 'hinted'.*type hints of __init__ cannot be resolved.*Undefined"
    ):
        _ = host.registry


def test_contributing_quotes_the_batch_size_the_code_uses():
    import dataclasses
    from pathlib import Path

    from qckit.prepare import PrepareSettings

    default = next(f.default for f in dataclasses.fields(PrepareSettings) if f.name == "batch_bytes")
    text = (Path(__file__).parents[1] / "CONTRIBUTING.md").read_text(encoding="utf-8")
    assert f"`prepare.batch_bytes` = {default // 1024} KiB by default" in text
    assert "MiB batch" not in text and "~256" not in text


def test_the_kinds_table_and_the_hook_specs_are_the_same_list():
    from qckit import hookspecs
    from qckit.kinds import KINDS

    specs = {name for name in dir(hookspecs) if name.startswith("register_")}
    assert specs == {kind.hook for kind in KINDS}
    assert len({kind.recipe_key for kind in KINDS}) == len(KINDS)  # one recipe key per kind
    host = PluginHost.from_entry_points()
    assert set(host.registry) == {kind.name for kind in KINDS}  # the host builds its registry from it
