"""Plugins: pluggy hook specifications and the plugin manager.

Every plugin, the built-in deploy targets and notifiers among them, is an entry point in
the group `mlops_console` (the package declares its own in pyproject.toml). Listing them
reads entry-point metadata only (`installed()`); a plugin is imported when something asks
a hook (`load_plugins()`). A plugin that fails to import, or whose hook raises, is
recorded with the reason and never takes a command or the console down.
`MLOPS_PLUGINS=a,b` loads only those third-party plugins; `MLOPS_PLUGINS=none` loads none
(the package's own always load).
"""

from __future__ import annotations

import ast
import os
import traceback
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from typing import Any, cast

import pluggy

GROUP = "mlops_console"
hookspec = pluggy.HookspecMarker(GROUP)
hookimpl = pluggy.HookimplMarker(GROUP)
CORE_PACKAGE = "mlops_console"  # entry points into the package itself are its built-ins


class Specs:
    @hookspec
    def mlops_deploy_targets(self) -> dict[str, Any]:
        """Return {target name: class}; each class subclasses
        `mlops_console.deploy.base.DeployTarget` and declares its `capabilities`."""

    @hookspec
    def mlops_notifiers(self) -> dict[str, Any]:
        """Return {notifier name: callable(event: dict)}; it raises on failure (see
        `mlops_console.monitoring.notifiers` for what `event` holds)."""

    @hookspec
    def mlops_register_commands(self, cli) -> None:
        """Add commands to the `mlops` click group `cli` (`cli.add_command(...)` or
        `@cli.group()`); a built-in command's name is never taken over."""

    @hookspec
    def mlops_console_areas(self) -> list[Any]:
        """Return a list of `mlops_console.tui.areas.Area`, shown after the built-in ones."""

    @hookspec
    def mlops_model_checks(self) -> dict[str, Any]:
        """Return {check name: callable(ctx: CheckContext) -> dict}; the dict is
        `mlops_console.testing.checks.result(...)` (passed, reason, measured). Plugin checks
        run after the built-in ones on every training run; one that raises fails."""

    @hookspec
    def mlops_data_sources(self) -> dict[str, Any]:
        """Return {file suffix such as ".feather": reader callable(path) -> pyarrow.Table}
        for files the built-in CSV and Parquet readers do not know."""

    @hookspec
    def mlops_compute_backends(self) -> dict[str, Any]:
        """Return {backend name: factory(settings: dict)} of where searches and training
        run (a Dask or Ray cluster); the factory returns a joblib-compatible backend."""

    @hookspec
    def mlops_lab_scenario_dirs(self) -> list[Any]:
        """Return folders (`Path`) of teaching-lab scenario files the plugin ships; they are
        searched after the core's own and before a trainer's (`[labs] paths`)."""

    @hookspec
    def mlops_lab_steps(self) -> dict[str, Any]:
        """Return {"namespace.kind": class} of lab steps (`do = "fleet.devices"`); each
        class subclasses `mlops_console.labs.spec.PluginStep` (a strict pydantic model:
        a mistake names the file and the key) and implements `run(ws, scenario, state)`."""

    @hookspec
    def mlops_lab_checks(self) -> dict[str, Any]:
        """Return {"namespace.kind": class} of objective checkers (`kind = "fleet.serving"`);
        each subclasses `mlops_console.labs.spec.PluginCheck` and implements
        `verdict(ws, state) -> (passed, reason)`."""

    @hookspec
    def mlops_lab_stop(self, ws) -> None:
        """Stop every process the plugin's lab steps started for the workspace `ws` (`lab
        stop`, `lab reset` before the snapshot is restored, a new `lab start`)."""


HOOKS = tuple(n for n in vars(Specs) if n.startswith("mlops_"))


@dataclass
class PluginInfo:
    name: str
    source: str  # "distribution: module"
    loaded: bool | None  # None: listed from metadata, not imported
    error: str = ""
    provides: list[str] = field(default_factory=list)
    distribution: str = ""
    version: str = ""
    module: str = ""
    hooks: list[str] = field(default_factory=list)  # declared in its module, without importing
    builtin: bool = False


def _entry_points() -> list[metadata.EntryPoint]:
    """The group's entry points, the package's own first, filtered by MLOPS_PLUGINS."""
    wanted = os.environ.get("MLOPS_PLUGINS")
    only = None if not wanted else {w.strip() for w in wanted.split(",")}
    seen, out = set(), []
    for ep in metadata.entry_points(group=GROUP):
        if ep.name in seen:  # a distribution found twice on sys.path
            continue
        seen.add(ep.name)
        if only is not None and not _builtin(ep) and ep.name not in only:
            continue
        out.append(ep)
    return sorted(out, key=lambda ep: not _builtin(ep))


def _builtin(ep: metadata.EntryPoint) -> bool:
    return ep.module.partition(".")[0] == CORE_PACKAGE


def _describe(ep: metadata.EntryPoint) -> PluginInfo:
    dist = ep.dist.name if ep.dist else "?"
    return PluginInfo(
        ep.name,
        f"{dist}: {ep.value}",
        None,
        distribution=dist,
        version=ep.dist.version if ep.dist else "",
        module=ep.module,
        hooks=declared_hooks(ep.module),
        builtin=_builtin(ep),
    )


def installed() -> list[PluginInfo]:
    """The plugins installed, from entry-point metadata: nothing is imported."""
    return [_describe(ep) for ep in _entry_points()]


def declared_hooks(module: str) -> list[str]:
    """The hooks a module defines, read from its source without importing it (and without
    importing its parent packages); [] when the source cannot be found or parsed."""
    from importlib.machinery import PathFinder

    search, spec = None, None
    try:
        for part in module.split("."):
            spec = PathFinder.find_spec(part, search)
            if spec is None:
                return []
            search = spec.submodule_search_locations
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            return []
        with open(spec.origin, encoding="utf-8") as fh:
            tree = ast.parse(fh.read())
    except (OSError, SyntaxError, ValueError, ImportError):
        return []
    return [
        n.name
        for n in tree.body
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name in HOOKS
    ]


@dataclass
class Plugins:
    pm: pluggy.PluginManager
    info: list[PluginInfo]

    def _collect(self, hook: str, kind: type = dict, **kwargs: Any) -> Any:
        """Each plugin's answer to a hook, called one by one: a plugin whose hook raises
        (or answers something other than `kind`) is reported and left out, never the end
        of the command that asked."""
        out: Any = kind()
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            try:
                result = impl.function(*[kwargs[a] for a in impl.argnames])
                if result is not None and not isinstance(result, kind):
                    raise TypeError(
                        f"{hook} returned {type(result).__name__}, not a {kind.__name__}"
                    )
            except Exception as exc:
                self._failed(impl.plugin_name, f"{hook} raised {type(exc).__name__}: {exc}")
                continue
            if isinstance(out, dict):
                out.update(cast(dict, result) or {})
            else:
                out.extend(result or [])
        return out

    def _failed(self, plugin: str, error: str) -> None:
        for p in self.info:
            if p.name == plugin and p.loaded:
                p.loaded, p.error = False, error

    def notifiers(self) -> dict[str, Any]:
        return self._collect("mlops_notifiers")

    def deploy_targets(self) -> dict[str, Any]:
        return self._collect("mlops_deploy_targets")

    def model_checks(self) -> dict[str, Any]:
        return self._collect("mlops_model_checks")

    def data_sources(self) -> dict[str, Any]:
        """{lower-case file suffix: reader(path) -> pyarrow.Table}."""
        return {k.lower(): v for k, v in self._collect("mlops_data_sources").items()}

    def compute_backends(self) -> dict[str, Any]:
        return self._collect("mlops_compute_backends")

    def console_areas(self) -> list[Any]:
        return self._collect("mlops_console_areas", kind=list)

    def lab_scenario_dirs(self) -> list[Any]:
        return self._collect("mlops_lab_scenario_dirs", kind=list)

    def lab_steps(self) -> dict[str, Any]:
        return self._collect("mlops_lab_steps")

    def lab_checks(self) -> dict[str, Any]:
        return self._collect("mlops_lab_checks")

    def lab_stop(self, ws) -> list[str]:
        """Ask each plugin to stop its lab processes for `ws`; returns the failures, in
        words (one plugin's failure does not keep the others from stopping theirs)."""
        errors = []
        for impl in self.pm.hook.mlops_lab_stop.get_hookimpls():
            try:
                impl.function(ws)
            except Exception as exc:
                errors.append(f"{impl.plugin_name}: {type(exc).__name__}: {exc}")
        return errors

    def register_commands(self, cli) -> None:
        """Let each plugin add commands to `cli`; one that replaces a built-in command is
        reported and the built-in put back."""
        for impl in self.pm.hook.mlops_register_commands.get_hookimpls():
            before = dict(cli.commands)
            try:
                impl.function(cli)
            except Exception as exc:
                self._failed(
                    impl.plugin_name, f"mlops_register_commands raised {type(exc).__name__}: {exc}"
                )
            for name, cmd in before.items():
                if cli.commands.get(name) is not cmd:
                    cli.commands[name] = cmd
                    self._failed(impl.plugin_name, f"it tried to replace the command {name!r}")


def add_plugin_commands(cli) -> None:
    """Let plugins add their commands to `cli`, importing only those whose source declares
    `mlops_register_commands` (or cannot be read): `mlops --help` lists plugin commands
    without importing the built-in targets and notifiers, or any plugin without commands."""
    _load(lambda p: not p.hooks or "mlops_register_commands" in p.hooks).register_commands(cli)


@cache
def load_plugins() -> Plugins:
    """Import every plugin and register it; failures are recorded in `info`."""
    return _load(lambda p: True)


def load_builtin_plugins() -> Plugins:
    """Only the package's own plugins (its entry points): enough to know the built-in
    targets and notifiers without importing any third party's code."""
    return _load(lambda p: p.builtin)


def load_console_plugins() -> Plugins:
    """The plugins whose source declares `mlops_console_areas` (or cannot be read), without
    asking their other hooks what they provide: a fleet plugin's targets import asyncssh,
    a third of a second the console's first frame must not wait for."""
    return _load(lambda p: not p.hooks or "mlops_console_areas" in p.hooks, provides=False)


def _load(wanted, provides: bool = True) -> Plugins:
    """Import and register the plugins `wanted(PluginInfo)` selects from their metadata;
    `provides`: also call their hooks to record what they offer (and any failure)."""
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(Specs)
    info: list[PluginInfo] = []
    for ep in _entry_points():
        p = _describe(ep)
        if not wanted(p):
            continue
        info.append(p)
        try:
            mod = ep.load()
            pm.register(mod, name=ep.name)
        except Exception as exc:
            p.loaded = False
            p.error = (
                f"{type(exc).__name__}: {exc} ({traceback.format_exc(limit=1).splitlines()[-1]})"
            )
            continue
        p.loaded = True
        p.hooks = [h for h in HOOKS if callable(getattr(mod, h, None))]
        if provides:
            p.provides, p.error = _provides(mod)
            p.loaded = not p.error
    return Plugins(pm, info)


def _provides(mod) -> tuple[list[str], str]:
    """What a plugin module's hooks offer, and the first hook failure ("" when none)."""
    out, error = [], ""
    for hook in (
        "mlops_deploy_targets",
        "mlops_notifiers",
        "mlops_model_checks",
        "mlops_data_sources",
        "mlops_compute_backends",
        "mlops_lab_steps",
        "mlops_lab_checks",
    ):
        fn = getattr(mod, hook, None)
        if fn is not None:
            try:
                out += [f"{hook.removeprefix('mlops_')}:{k}" for k in (fn() or {})]
            except Exception as exc:
                error = error or f"{hook} raised {type(exc).__name__}: {exc}"
    for hook in ("mlops_register_commands", "mlops_console_areas"):
        if getattr(mod, hook, None) is not None:
            out.append(hook.removeprefix("mlops_"))
    return out, error
