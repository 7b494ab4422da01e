"""The plugin host: loads plugins, asks each one once for its components, and remembers who owns what.

There is no module-level plugin manager: every :class:`PluginHost` is independent, so two embedded
pipelines in one process can use different plugin sets.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import inspect
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from qckit import hookspecs
from qckit.errors import PluginError
from qckit.kinds import BY_NAME, KINDS

ENTRY_POINT_GROUP = "qckit"


@dataclass(frozen=True)
class PluginInfo:
    """A loaded (or failed) plugin: its entry-point name, the module, and the distribution that shipped it."""

    name: str
    module: str
    distribution: str | None = None
    version: str | None = None
    error: str | None = None  # set when the plugin failed to load

    @property
    def owner(self) -> str:
        """``plugin 'x' (dist 1.2)`` style label used in error messages."""
        dist = f"{self.distribution} {self.version}" if self.distribution else "not installed as a package"
        return f"plugin {self.name!r}, {dist}"


@dataclass(frozen=True)
class ComponentInfo:
    """A registered component class and the plugin that registered it."""

    kind: str
    name: str
    cls: type
    plugin: PluginInfo

    @property
    def owner(self) -> str:
        return self.plugin.owner

    @property
    def doc(self) -> str:
        return inspect.getdoc(self.cls) or ""

    def parameters(self) -> list[inspect.Parameter]:
        """The constructor's keyword parameters: the settings a recipe may give this component."""
        sig = inspect.signature(self.cls)
        return [p for p in sig.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


@dataclass
class PluginHost:
    """Holds one set of plugins and the registry of their components.

    >>> host = PluginHost.from_entry_points()          # built-ins + installed third-party plugins
    >>> host.get("filter", "length")                    # ComponentInfo
    """

    plugins: dict[str, PluginInfo] = field(default_factory=dict)
    failed: dict[str, PluginInfo] = field(default_factory=dict)
    _pm: pluggy.PluginManager = field(init=False, repr=False)
    _registry: dict[str, dict[str, ComponentInfo]] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self._pm.add_hookspecs(hookspecs)

    # -- loading ---------------------------------------------------------------------------------

    @classmethod
    def from_entry_points(
        cls, *, disable: Iterable[str] = (), extra: Iterable[tuple[str, Any]] = ()
    ) -> PluginHost:
        """A host with every plugin of the ``qckit`` entry-point group (minus ``disable``) plus ``extra``."""
        host = cls()
        host.load_entry_points(disable=disable)
        for name, plugin in extra:
            host.register(plugin, name=name)
        return host

    def load_entry_points(self, *, disable: Iterable[str] = ()) -> None:
        """Load the ``qckit`` entry points. A plugin that fails to import is recorded in ``failed``, not raised."""
        skip = set(disable)
        # (name, version) of each distribution, read once: reading a distribution's metadata parses its
        # whole METADATA file (long descriptions included) every time
        owners: dict[Any, tuple[str | None, str | None]] = {}  # keyed by the Distribution object
        for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if ep.name in skip or ep.name in self.plugins:
                continue
            dist = getattr(ep, "dist", None)
            if dist not in owners:
                meta = dist.metadata if dist is not None else None
                owners[dist] = (meta["Name"], meta["Version"]) if meta is not None else (None, None)
            dist_name, version = owners[dist]
            try:
                module = ep.load()
            except Exception as exc:  # any import-time failure of a third-party plugin
                self.failed[ep.name] = PluginInfo(
                    ep.name, ep.value, dist_name, version, error=f"{type(exc).__name__}: {exc}"
                )
                continue
            self._add(module, PluginInfo(ep.name, ep.value, dist_name, version))

    def register(
        self, plugin: Any, *, name: str, distribution: str | None = None, version: str | None = None
    ) -> None:
        """Register a plugin object or module directly (tests, notebooks, embedding applications)."""
        module = plugin.__name__ if inspect.ismodule(plugin) else type(plugin).__qualname__
        self._add(plugin, PluginInfo(name, module, distribution, version))

    def _add(self, plugin: Any, info: PluginInfo) -> None:
        if info.name in self.plugins:
            raise PluginError(
                f"two plugins are named {info.name!r}: {self.plugins[info.name].module} and {info.module}"
            )
        try:
            self._pm.register(plugin, name=info.name)
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"{info.owner}: {exc}") from exc
        self.plugins[info.name] = info
        self._registry = None

    # -- registry --------------------------------------------------------------------------------

    @property
    def registry(self) -> dict[str, dict[str, ComponentInfo]]:
        """kind → name → ComponentInfo, built on first use by calling each plugin's hooks once."""
        if self._registry is None:
            self._registry = self._build_registry()
        return self._registry

    def _build_registry(self) -> dict[str, dict[str, ComponentInfo]]:
        registry: dict[str, dict[str, ComponentInfo]] = {kind.name: {} for kind in KINDS}
        for kind_name, hook_name in ((kind.name, kind.hook) for kind in KINDS):
            # Calling each implementation ourselves (instead of through the hook caller) tells us
            # which plugin registered which component.
            for impl in getattr(self._pm.hook, hook_name).get_hookimpls():
                info = self.plugins[impl.plugin_name]

                def register(component: type, _kind: str = kind_name, _info: PluginInfo = info) -> None:
                    self._register_component(registry, _kind, component, _info)

                try:
                    impl.function(register=register)
                except PluginError:
                    raise
                except Exception as exc:
                    raise PluginError(
                        f"{info.owner}: {hook_name} failed: {type(exc).__name__}: {exc}"
                    ) from exc
        return registry

    @staticmethod
    def _register_component(registry: dict, kind: str, component: type, info: PluginInfo) -> None:
        name = getattr(component, "name", None)
        if not isinstance(component, type):
            raise PluginError(f"{info.owner} registered {component!r} as a {kind}; register the class itself")
        if not isinstance(name, str) or not name:
            raise PluginError(f"{info.owner} registered a {kind} without a 'name' attribute: {component!r}")
        label = f"{kind} {name!r} ({component.__module__}.{component.__qualname__}, {info.owner})"
        missing = BY_NAME[kind].missing(component)
        protocol = BY_NAME[kind].protocol(component)
        if missing:
            raise PluginError(f"{label} does not implement {protocol.__name__}: missing {', '.join(missing)}")
        for attribute, allowed in getattr(protocol, "__qckit_choices__", {}).items():
            value = getattr(component, attribute, None)
            if isinstance(value, str) and value not in allowed:
                raise PluginError(f"{label}: {attribute} must be one of {', '.join(allowed)}, not {value!r}")
        try:
            # Recipe values are checked against these hints: unresolvable ones would silently check nothing.
            typing.get_type_hints(component.__init__)  # type: ignore[misc]
        except Exception as exc:
            raise PluginError(
                f"{label}: the type hints of __init__ cannot be resolved ({type(exc).__name__}: {exc}); "
                f"recipe settings could not be checked"
            ) from None
        existing = registry[kind].get(name)
        if existing is not None:
            raise PluginError(
                f"{kind} {name!r} is registered twice: by {existing.owner} and by {info.owner}; "
                f"disable one of them"
            )
        registry[kind][name] = ComponentInfo(kind, name, component, info)

    def names(self, kind: str) -> list[str]:
        return sorted(self.registry[kind])

    def get(self, kind: str, name: str) -> ComponentInfo:
        """The component ``name`` of ``kind``, or a :class:`PluginError` with suggestions and failed plugins."""
        found = self.registry[kind].get(name)
        if found is not None:
            return found
        raise PluginError(self.unknown_message(kind, name))

    def unknown_message(self, kind: str, name: str) -> str:
        known = self.names(kind)
        msg = f"unknown {kind} {name!r}"
        close = difflib.get_close_matches(name, known, n=3)
        if close:
            msg += f"; did you mean {', '.join(repr(c) for c in close)}?"
        else:
            msg += f"; known: {', '.join(known) or 'none'}"
        prefix = name.split(".", 1)[0]
        culprits = [p for p in self.failed.values() if p.name == prefix] or list(self.failed.values())
        if culprits:
            msg += "; plugins that failed to load: " + ", ".join(f"{p.name} ({p.error})" for p in culprits)
        return msg
