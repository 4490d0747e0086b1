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

    def notifiers(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for result in self.pm.hook.mlops_notifiers():
            out.update(result or {})
        return out

    def deploy_targets(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for result in self.pm.hook.mlops_deploy_targets():
            out.update(result or {})
        return out


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
            info.append(PluginInfo(module_name, "builtin", True, provides=_provides(mod)))
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
            info.append(PluginInfo(ep.name, source, True, provides=_provides(mod)))
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


def _provides(mod) -> list[str]:
    out = []
    for hook in ("mlops_deploy_targets", "mlops_notifiers"):
        fn = getattr(mod, hook, None)
        if fn is not None:
            try:
                out += [f"{hook.removeprefix('mlops_')}:{k}" for k in (fn() or {})]
            except Exception as exc:
                out.append(f"{hook}: error {exc}")
    return out
