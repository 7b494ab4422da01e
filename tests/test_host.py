"""The plugin host: built-ins load through entry points, ownership, duplicates, failures."""

from __future__ import annotations

import types

import pytest

from qckit import hookimpl
from qckit.errors import PluginError
from qckit.host import PluginHost


def test_builtins_load_through_entry_points_and_are_tagged_with_qckit():
    host = PluginHost.from_entry_points()
    info = host.get("filter", "length")
    assert info.plugin.name == "filters"
    assert info.plugin.distribution == "qckit"
    assert info.plugin.version
    for kind in ("reader", "normalizer", "filter", "splitter", "writer", "chunker", "adapter"):
        assert host.names(kind), f"no built-in {kind}"


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
