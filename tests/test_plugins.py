"""Plugin loading: built-ins, entry points, COGFRAME_PLUGINS, and loud failures."""

from __future__ import annotations

import json
import sys
import types

import pytest

import cogframe.plugins as plugins
from cogframe.errors import CogframeError, DuplicateComponentError
from cogframe.hookspecs import hookimpl
from cogframe.plugin_loader import load_plugins

MYPLUG = '''
from pathlib import Path
from cogframe.hookspecs import hookimpl
from cogframe.registry import component

@component("frame_rate_sampler", "myplug_constant")
class Constant:
    """Always the same frame rate."""
    def __init__(self, fps: int = 8):
        self.fps = fps

@component("task", "myplug_echo")
class Echo:
    """Writes the message and the sampler's fps to `out`."""
    slots = {"sampler": "frame_rate_sampler"}
    def run(self, cfg, registries):
        sampler = registries.build("frame_rate_sampler", cfg.sampler)
        Path(cfg.out).write_text(f"{cfg.message} {sampler.fps}")

class Hello:
    NAME = "hello"
    HELP = "Say hello (from myplug)."
    @staticmethod
    def add_arguments(parser):
        parser.add_argument("who")
    @staticmethod
    def run(args):
        print(f"hello {args.who}")
        return 0

@hookimpl
def register_components():
    return [Constant, Echo]

@hookimpl
def register_commands():
    return [Hello]

@hookimpl
def recipe_dirs():
    return [Path(__file__).parent / "recipes"]
'''

ECHO_RECIPE = '''
description: Echo through the myplug task
task: myplug_echo
message: hi
out: ???
sampler:
  name: myplug_constant
  fps: 4
'''


def _module(name: str, **members) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(members)
    return mod


def _load_with(monkeypatch, mod: types.ModuleType):
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    return load_plugins(("cogframe.plugins.loggers", mod.__name__), env={"COGFRAME_PLUGINS": ""})


def test_builtins_load_with_builtin_origin():
    regs = plugins.get_registries(reload=True)
    assert regs.get("logger", "jsonl").origin == "builtin:loggers"
    assert plugins.get_registries() is regs  # cached
    assert plugins.get_plugin_manager().get_plugin("builtin:loggers") is not None


def test_missing_builtin_module_is_clear():
    with pytest.raises(CogframeError, match="'cogframe.plugins.nosuch' is listed in cogframe.plugins.BUILTIN_PLUGINS"
                                           " but does not exist"):
        load_plugins(("cogframe.plugins.nosuch",), env={})


def test_builtin_with_missing_dependency_names_it(monkeypatch, tmp_path):
    (tmp_path / "needs_dep.py").write_text("import some_missing_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(CogframeError, match="because module 'some_missing_dependency_xyz' is missing"):
        load_plugins(("needs_dep",), env={})


def test_misspelled_hook_fails_loudly(monkeypatch):
    @hookimpl
    def register_component():
        return []

    with pytest.raises(CogframeError) as err:
        _load_with(monkeypatch, _module("typo_plug", register_component=register_component))
    msg = str(err.value)
    assert "builtin:typo_plug implements 'register_component', which is not a cogframe hook" in msg
    assert "did you mean 'register_components'" in msg
    assert "recipe_dirs, register_commands, register_components" in msg


def test_hook_with_arguments_is_rejected(monkeypatch):
    @hookimpl
    def register_components(config):
        return []

    with pytest.raises(CogframeError, match="builtin:args_plug has an invalid hook"):
        _load_with(monkeypatch, _module("args_plug", register_components=register_components))


def test_hook_returning_junk_or_raising_names_plugin(monkeypatch):
    @hookimpl
    def register_components():
        return "Naive"

    with pytest.raises(CogframeError, match="builtin:junk_plug: register_components\\(\\) returned str, not a list"):
        _load_with(monkeypatch, _module("junk_plug", register_components=register_components)).registries()

    @hookimpl
    def recipe_dirs():
        raise RuntimeError("boom")

    with pytest.raises(CogframeError, match="builtin:boom_plug failed in its recipe_dirs\\(\\) hook: RuntimeError"):
        _load_with(monkeypatch, _module("boom_plug", recipe_dirs=recipe_dirs)).recipe_dirs()


def test_undecorated_component_is_rejected(monkeypatch):
    class Plain:
        pass

    @hookimpl
    def register_components():
        return [Plain]

    with pytest.raises(CogframeError, match="builtin:plain_plug: .*is not a component: decorate it"):
        _load_with(monkeypatch, _module("plain_plug", register_components=register_components)).registries()


def test_relative_recipe_dir_is_rejected(monkeypatch):
    @hookimpl
    def recipe_dirs():
        return ["recipes"]

    with pytest.raises(CogframeError, match="not an existing absolute folder"):
        _load_with(monkeypatch, _module("rel_plug", recipe_dirs=recipe_dirs)).recipe_dirs()


def test_duplicate_across_builtin_and_entry_point(make_dist, monkeypatch):
    site = make_dist("dupplug", '''
        from cogframe.hookspecs import hookimpl
        from cogframe.registry import component

        @component("logger", "stdout")
        class Stdout:
            pass

        @hookimpl
        def register_components():
            return [Stdout]
    ''')
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(DuplicateComponentError) as err:
        load_plugins(plugins.BUILTIN_PLUGINS, env={}).registries()
    msg = str(err.value)
    assert "builtin:loggers (module cogframe.plugins.loggers)" in msg
    assert "dupplug (dupplug-dist 0.1) (module dupplug)" in msg


def test_cogframe_plugins_env_filters_entry_points(make_dist, monkeypatch):
    make_dist("plug_a", "")
    site = make_dist("plug_b", "")
    monkeypatch.syspath_prepend(str(site))
    names = lambda env: [p.name for p in load_plugins((), env=env).plugins]  # noqa: E731
    assert {"plug_a", "plug_b"} <= set(names({}))  # unset: every installed plugin
    assert names({"COGFRAME_PLUGINS": "plug_b"}) == ["plug_b"]
    assert names({"COGFRAME_PLUGINS": " plug_a , plug_b "}) == ["plug_a", "plug_b"]
    assert names({"COGFRAME_PLUGINS": ""}) == []
    with pytest.raises(CogframeError) as err:
        load_plugins((), env={"COGFRAME_PLUGINS": "plug_c"})
    assert "names plugin 'plug_c'" in str(err.value) and "plug_a" in str(err.value)
    origin = load_plugins((), env={"COGFRAME_PLUGINS": "plug_a"}).plugins[0].origin
    assert origin == "plug_a (plug_a-dist 0.1)"


def test_entry_point_import_failure_names_plugin_and_fix(make_dist, monkeypatch):
    site = make_dist("badplug", "import not_installed_dependency_q\n")
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(CogframeError) as err:
        load_plugins((), env={"COGFRAME_PLUGINS": "badplug"})
    msg = str(err.value)
    assert "badplug (badplug-dist 0.1)" in msg and "not_installed_dependency_q" in msg and "COGFRAME_PLUGINS" in msg


def test_third_party_plugin_end_to_end_in_subprocess(make_dist, tmp_path, run_cogframe):
    """Real discovery: a distribution on PYTHONPATH provides a component, a task, a command and recipes."""
    site = make_dist("myplug", MYPLUG, files={"recipes/myplug/echo.yaml": ECHO_RECIPE})

    listing = run_cogframe("plugins", "--json", pythonpath=site)
    assert listing.returncode == 0, listing.stderr
    data = json.loads(listing.stdout)
    (sampler,) = [c for c in data["components"]["frame_rate_sampler"] if c["name"] == "myplug_constant"]
    assert sampler["origin"] == "myplug (myplug-dist 0.1)" and sampler["available"]
    assert {"name": "myplug", "origin": "myplug (myplug-dist 0.1)", "module": "myplug", "builtin": False} \
        in data["plugins"]

    out = tmp_path / "echo.txt"
    ran = run_cogframe("run", "myplug/echo", f"out={out}", "sampler.fps=12", pythonpath=site)
    assert ran.returncode == 0, ran.stderr
    assert out.read_text() == "hi 12"

    hello = run_cogframe("hello", "world", pythonpath=site)
    assert (hello.returncode, hello.stdout) == (0, "hello world\n")

    typo = run_cogframe("run", "myplug/echo", f"out={out}", "sampler.name=myplug_constnt", pythonpath=site)
    assert typo.returncode == 2 and "Traceback" not in typo.stderr
    assert "Did you mean 'myplug_constant'?" in typo.stderr

    hidden = run_cogframe("plugins", pythonpath=site, env={"COGFRAME_PLUGINS": ""})
    assert hidden.returncode == 0 and "myplug_constant" not in hidden.stdout


LIGHT_ON_LOAD = '''
import not_installed_heavy_dependency_k  # what torch is to the built-ins: needed only to build

from cogframe.hookspecs import hookimpl
from cogframe.registry import Capabilities, component


@component("logger", "heavy_log", capabilities=Capabilities(devices=("cuda",)))
class HeavyLogger:
    """Needs the heavy dependency."""

    def __init__(self, path: str):
        self.path = path


@hookimpl
def register_components():
    return [HeavyLogger]
'''


def test_builtin_module_is_registered_without_importing_it(monkeypatch, tmp_path):
    from cogframe.plugin_loader import LazyModulePlugin

    (tmp_path / "heavy_builtin.py").write_text(LIGHT_ON_LOAD)
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = load_plugins(("heavy_builtin",), env={"COGFRAME_PLUGINS": ""})
    assert isinstance(loaded.manager.get_plugin("builtin:heavy_builtin"), LazyModulePlugin)
    regs = loaded.registries()
    spec = regs.get("logger", "heavy_log")
    assert (spec.origin, spec.module, spec.description, spec.lazy) == (
        "builtin:heavy_builtin", "heavy_builtin", "Needs the heavy dependency.", True)
    assert "heavy_builtin" not in sys.modules
    with pytest.raises(CogframeError) as err:  # keyword checks pass; the import fails, named
        regs.build("logger", {"name": "heavy_log", "path": "x"})
    assert "logger 'heavy_log' (from builtin:heavy_builtin) cannot be loaded" in str(err.value)
    assert "module 'not_installed_heavy_dependency_k', which is not installed" in str(err.value)


def test_builtin_module_already_imported_is_registered_as_is():
    import cogframe.plugins.loggers  # noqa: F401  (imported: nothing to save)

    loaded = load_plugins(("cogframe.plugins.loggers",), env={"COGFRAME_PLUGINS": ""})
    assert loaded.manager.get_plugin("builtin:loggers") is sys.modules["cogframe.plugins.loggers"]
    assert not loaded.registries().get("logger", "jsonl").lazy
