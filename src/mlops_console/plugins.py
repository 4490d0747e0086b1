"""Plugins: pluggy hook specifications and the plugin manager.

Built-in deploy targets register through the same hooks as third-party plugins (entry
point group `mlops_console`). A plugin that fails to load is recorded with the reason
and never takes the CLI or the console down. `MLOPS_PLUGINS=a,b` loads only those
third-party plugins; `MLOPS_PLUGINS=none` loads none.
"""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from typing import Any

import pluggy

GROUP = "mlops_console"
hookspec = pluggy.HookspecMarker(GROUP)
hookimpl = pluggy.HookimplMarker(GROUP)


class Specs:
    @hookspec
    def mlops_deploy_targets(self) -> dict[str, Any]:
        """Return {target name: class} of deploy targets (see mlops_console.deploy.base)."""

    @hookspec
    def mlops_notifiers(self) -> dict[str, Any]:
        """Return {notifier name: callable(event: dict)}."""


BUILTINS = (
    "mlops_console.deploy.local",
    "mlops_console.deploy.docker",
    "mlops_console.monitoring.notifiers",
)


@dataclass
class PluginInfo:
    name: str
    source: str  # builtin or entry point "dist: module"
    loaded: bool
    error: str = ""
    provides: list[str] = field(default_factory=list)


@dataclass
class Plugins:
    pm: pluggy.PluginManager
    info: list[PluginInfo]

    def _collect(self, hook: str) -> dict[str, Any]:
        """Each plugin's answer to a hook, called one by one: a plugin whose hook raises
        (or answers something other than a dict) is reported and left out, never the end
        of the command that asked."""
        out: dict[str, Any] = {}
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            try:
                result = impl.function()
                if result is not None and not isinstance(result, dict):
                    raise TypeError(f"{hook} returned {type(result).__name__}, not a dict")
            except Exception as exc:
                self._failed(impl.plugin_name, f"{hook} raised {type(exc).__name__}: {exc}")
                continue
            out.update(result or {})
        return out

    def _failed(self, plugin: str, error: str) -> None:
        for p in self.info:
            if p.name == plugin and p.loaded:
                p.loaded, p.error = False, error

    def notifiers(self) -> dict[str, Any]:
        return self._collect("mlops_notifiers")

    def deploy_targets(self) -> dict[str, Any]:
        return self._collect("mlops_deploy_targets")


@cache
def load_plugins() -> Plugins:
    import importlib

    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(Specs)
    info: list[PluginInfo] = []
    for module_name in BUILTINS:
        try:
            mod = importlib.import_module(module_name)
            pm.register(mod, name=module_name)
            provides, error = _provides(mod)
            info.append(PluginInfo(module_name, "builtin", not error, error, provides))
        except Exception as exc:  # a broken built-in is reported like any plugin
            info.append(PluginInfo(module_name, "builtin", False, f"{type(exc).__name__}: {exc}"))
    wanted = os.environ.get("MLOPS_PLUGINS")
    only = None if not wanted else {w.strip() for w in wanted.split(",")}
    for ep in metadata.entry_points(group=GROUP):
        if only is not None and ep.name not in only:
            continue
        source = f"{ep.dist.name if ep.dist else '?'}: {ep.value}"
        try:
            mod = ep.load()
            pm.register(mod, name=ep.name)
            provides, error = _provides(mod)
            info.append(PluginInfo(ep.name, source, not error, error, provides))
        except Exception as exc:
            info.append(
                PluginInfo(
                    ep.name,
                    source,
                    False,
                    f"{type(exc).__name__}: {exc} ({traceback.format_exc(limit=1).splitlines()[-1]})",
                )
            )
    return Plugins(pm, info)


def _provides(mod) -> tuple[list[str], str]:
    """What a plugin module's hooks offer, and the first hook failure ("" when none)."""
    out, error = [], ""
    for hook in ("mlops_deploy_targets", "mlops_notifiers"):
        fn = getattr(mod, hook, None)
        if fn is not None:
            try:
                out += [f"{hook.removeprefix('mlops_')}:{k}" for k in (fn() or {})]
            except Exception as exc:
                error = error or f"{hook} raised {type(exc).__name__}: {exc}"
    return out, error
