"""Loads cogframe plugins into a pluggy manager and collects what their hooks return.

Built-in plugins are modules named in ``cogframe.plugins.BUILTIN_PLUGINS``; third-party plugins
are entry points of group ``cogframe`` in installed distributions. Both go through the same hooks
(:mod:`cogframe.hookspecs`). Each hook implementation is called one plugin at a time so that every
result and every failure can be attributed to the plugin (its *origin*) that produced it.

``COGFRAME_PLUGINS`` selects third-party plugins: unset loads all of them; a comma-separated list of
entry-point names loads only those; an empty value loads none. Built-ins always load.

Built-in modules are registered *lazily* when their source allows it: if a module's only hook is
``register_components`` returning ``@component`` objects whose declarations are literal,
:func:`cogframe.registry.lazy_components` reads them without importing the module, and a light
stand-in plugin returns those lazy specs from the same hook. The module (and torch) is imported
when one of its components is built. A module that cannot be read that way is imported as before.
Third-party plugins are imported as they are (their entry-point module may return
``lazy_components(...)`` or ``lazy_component(...)`` to stay light).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import pluggy

from cogframe import hookspecs
from cogframe.errors import CogframeError
from cogframe.registry import ComponentSpec, Registries, closest, lazy_components, spec_of

ENTRY_POINT_GROUP = "cogframe"
ENV_VAR = "COGFRAME_PLUGINS"
_BUILTIN_PACKAGE = "cogframe.plugins."


@dataclass(frozen=True)
class LoadedPlugin:
    """One plugin registered with the manager.

    Attributes:
        name: Its pluggy name: ``builtin:<module>`` or the entry-point name.
        origin: How listings and errors name it: ``builtin:loggers`` or ``myplug (myplug-dist 0.1)``.
        module: The dotted module (or ``module:attr``) it was loaded from.
        builtin: Whether it ships with cogframe.
    """

    name: str
    origin: str
    module: str
    builtin: bool


def builtin_name(module: str) -> str:
    """Returns the plugin name/origin of a built-in module, e.g. ``builtin:attention_naive``."""
    short = module[len(_BUILTIN_PACKAGE):] if module.startswith(_BUILTIN_PACKAGE) else module
    return f"builtin:{short}"


def _hook_names(pm: pluggy.PluginManager) -> list[str]:
    return sorted(name for name, caller in vars(pm.hook).items()
                  if isinstance(caller, pluggy.HookCaller) and caller.spec is not None)


class PluginSet:
    """The loaded plugins and their manager; turns hook results into registries, commands, folders."""

    def __init__(self, manager: pluggy.PluginManager, plugins: Iterable[LoadedPlugin]) -> None:
        self.manager = manager
        self.plugins = tuple(plugins)
        self._by_name = {p.name: p for p in self.plugins}

    def results(self, hook_name: str) -> list[tuple[LoadedPlugin, list[Any]]]:
        """Calls ``hook_name`` on each plugin separately, in load order.

        Returns:
            ``(plugin, items)`` pairs; ``items`` is the list the plugin returned (None counts as empty).

        Raises:
            CogframeError: A hook raised or returned something other than a list; names the plugin.
        """
        out = []
        for impl in getattr(self.manager.hook, hook_name).get_hookimpls():
            plugin = self._by_name[impl.plugin_name]
            if impl.hookwrapper or impl.wrapper:
                # Each hook is called per plugin to attribute results, so there is nothing to wrap.
                raise CogframeError(
                    f"plugin {plugin.origin} declares {hook_name}() as a hook wrapper, which cogframe does not "
                    "support: drop wrapper=True/hookwrapper=True from its @hookimpl"
                )
            try:
                items = impl.function()
            except Exception as exc:
                raise CogframeError(
                    f"plugin {plugin.origin} failed in its {hook_name}() hook: {type(exc).__name__}: {exc}. "
                    f"{_blame(plugin)}"
                ) from exc
            if items is None:
                items = []
            if not isinstance(items, (list, tuple)):
                raise CogframeError(
                    f"plugin {plugin.origin}: {hook_name}() returned {type(items).__name__}, not a list. "
                    f"{_blame(plugin)}"
                )
            out.append((plugin, list(items)))
        return out

    def registries(self) -> Registries:
        """Registers every plugin's components, each under its plugin's origin."""
        regs = Registries()
        for plugin, items in self.results("register_components"):
            for obj in items:
                if isinstance(obj, ComponentSpec):  # lazy_component(...) / lazy_components(...)
                    regs.register(obj, plugin.origin)
                    continue
                try:
                    spec = spec_of(obj)
                except CogframeError as exc:
                    raise CogframeError(f"plugin {plugin.origin}: {exc}") from None
                regs.register(spec, plugin.origin)
        return regs

    def commands(self) -> list[tuple[LoadedPlugin, Any]]:
        """Returns ``(plugin, command)`` for each extra CLI command the plugins provide."""
        return [(plugin, cmd) for plugin, items in self.results("register_commands") for cmd in items]

    def recipe_dirs(self) -> list[tuple[LoadedPlugin, Path]]:
        """Returns ``(plugin, folder)`` for each recipe folder the plugins ship.

        Raises:
            CogframeError: A folder is relative or does not exist.
        """
        out = []
        for plugin, items in self.results("recipe_dirs"):
            for item in items:
                path = Path(item)
                if not path.is_absolute() or not path.is_dir():
                    raise CogframeError(
                        f"plugin {plugin.origin}: recipe_dirs() returned {str(item)!r}, which is not an existing "
                        "absolute folder. Return e.g. Path(__file__).parent / 'recipes' and ship that folder "
                        "in the package"
                    )
                out.append((plugin, path))
        return out


def _blame(plugin: LoadedPlugin) -> str:
    if plugin.builtin:
        return f"This is a bug in cogframe's built-in module {plugin.module}; rerun with --debug and report it."
    return (f"Fix or upgrade the plugin, or leave it out by listing only the plugins you want in "
            f"{ENV_VAR} (e.g. {ENV_VAR}= to load no third-party plugin).")


class LazyModulePlugin:
    """Stands in for a built-in module that is registered without importing it.

    Its one hook returns the lazy specs :func:`cogframe.registry.lazy_components` read from the
    module's source; pluggy sees an ordinary plugin object.

    Attributes:
        module: The dotted name of the module it stands for.
        specs: The lazy component specs.
    """

    def __init__(self, module: str, specs: list[ComponentSpec]) -> None:
        self.module = module
        self.specs = specs

    @hookspecs.hookimpl
    def register_components(self) -> list[ComponentSpec]:
        """The module's components, as lazy specs."""
        return list(self.specs)

    def __repr__(self) -> str:
        return f"<lazy plugin {self.module}>"


def _lazy_builtin(module: str) -> LazyModulePlugin | None:
    """A stand-in for ``module`` when its only hook is a statically readable register_components."""
    from cogframe.component_source import read_module

    if module in sys.modules:
        return None  # already imported: its real objects are at hand and cost nothing
    static = read_module(module)
    if static is None or tuple(static.hooks) != ("register_components",):
        return None
    specs = lazy_components(module)
    return None if specs is None else LazyModulePlugin(module, specs)


def _import_builtin(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            raise CogframeError(
                f"built-in plugin module '{module}' is listed in cogframe.plugins.BUILTIN_PLUGINS but does not "
                "exist: create it, or remove it from BUILTIN_PLUGINS in src/cogframe/plugins/__init__.py"
            ) from exc
        raise CogframeError(
            f"built-in plugin module '{module}' could not be imported because module '{exc.name}' is missing: "
            "install cogframe's dependencies (pip install -e .) or the optional package it needs"
        ) from exc
    except Exception as exc:
        raise CogframeError(
            f"built-in plugin module '{module}' failed to import: {type(exc).__name__}: {exc}. "
            "This is a bug in cogframe; rerun with --debug for the traceback"
        ) from exc


def _selected_entry_points(env: Mapping[str, str]) -> list[importlib.metadata.EntryPoint]:
    eps = sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)
    wanted = env.get(ENV_VAR)
    if wanted is None:
        return eps
    names = [n.strip() for n in wanted.split(",") if n.strip()]
    installed = [ep.name for ep in eps]
    for name in names:
        if name not in installed:
            hint = closest(name, installed)
            did_you_mean = f" (did you mean '{hint}'?)" if hint else ""
            listing = ", ".join(installed) or "none"
            raise CogframeError(
                f"{ENV_VAR} names plugin '{name}'{did_you_mean}, but no installed distribution provides a "
                f"'{ENTRY_POINT_GROUP}' entry point of that name. Installed third-party plugins: {listing}. "
                f"Fix the name or install the plugin; built-in plugins always load and are not listed here"
            )
    return [ep for ep in eps if ep.name in names]


def _entry_point_origin(ep: importlib.metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return ep.name
    return f"{ep.name} ({dist.metadata['Name']} {dist.version})"


def _load_entry_point(ep: importlib.metadata.EntryPoint, origin: str) -> Any:
    try:
        return ep.load()
    except Exception as exc:
        raise CogframeError(
            f"third-party plugin {origin} (entry point '{ep.value}') failed to import: {type(exc).__name__}: "
            f"{exc}. Install what it needs or reinstall it (pip install --force-reinstall <package>), or skip "
            f"it by listing only the plugins you want in {ENV_VAR} (e.g. {ENV_VAR}= loads none)"
        ) from exc


def _register(pm: pluggy.PluginManager, obj: Any, plugin: LoadedPlugin) -> None:
    try:
        pm.register(obj, name=plugin.name)
    except pluggy.PluginValidationError as exc:
        raise CogframeError(f"plugin {plugin.origin} has an invalid hook: {exc}. Valid hooks take no "
                            f"arguments: {', '.join(_hook_names(pm))}; see docs/plugins.md") from exc
    except ValueError as exc:  # same name or same module object registered twice
        raise CogframeError(f"plugin {plugin.origin} is registered twice ({exc}): uninstall one of the "
                            "distributions that provide it") from exc


def _check_hook_names(pm: pluggy.PluginManager, plugins: dict[str, LoadedPlugin]) -> None:
    # pluggy silently keeps implementations of unknown hooks until check_pending(); we report them
    # ourselves so the message names the plugin, the misspelled hook and the valid names.
    valid = _hook_names(pm)
    for name, caller in vars(pm.hook).items():
        if not isinstance(caller, pluggy.HookCaller) or caller.spec is not None:
            continue
        for impl in caller.get_hookimpls():
            if impl.optionalhook:
                continue
            plugin = plugins[impl.plugin_name]
            hint = closest(name, valid)
            raise CogframeError(
                f"plugin {plugin.origin} implements '{name}', which is not a cogframe hook"
                f"{f' (did you mean {hint!r}?)' if hint else ''}. Valid hooks: {', '.join(valid)}. "
                f"Rename the @hookimpl function in {plugin.module} (see docs/plugins.md)"
            )
    pm.check_pending()


def load_plugins(builtin_modules: Iterable[str], env: Mapping[str, str] | None = None) -> PluginSet:
    """Creates a plugin manager with the built-in modules and the selected entry points.

    Args:
        builtin_modules: Dotted module names of built-in plugins (always loaded).
        env: Environment to read ``COGFRAME_PLUGINS`` from; defaults to ``os.environ``.

    Returns:
        The loaded :class:`PluginSet`, built-ins first, then entry points sorted by name.

    Raises:
        CogframeError: A module fails to import, ``COGFRAME_PLUGINS`` names an unknown plugin, or a
            plugin implements a hook that does not exist.
    """
    env = os.environ if env is None else env
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    plugins: dict[str, LoadedPlugin] = {}
    for module in builtin_modules:
        plugin = LoadedPlugin(builtin_name(module), builtin_name(module), module, builtin=True)
        _register(pm, _lazy_builtin(module) or _import_builtin(module), plugin)
        plugins[plugin.name] = plugin
    for ep in _selected_entry_points(env):
        origin = _entry_point_origin(ep)
        plugin = LoadedPlugin(ep.name, origin, ep.value, builtin=False)
        _register(pm, _load_entry_point(ep, origin), plugin)
        plugins[plugin.name] = plugin
    _check_hook_names(pm, plugins)
    return PluginSet(pm, plugins.values())
