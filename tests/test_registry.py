"""Registry: declaring, registering, looking up and building components."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Literal, Optional

import pytest

from cogframe.errors import ConfigError, DuplicateComponentError, UnavailableError, UnknownComponentError
from cogframe.registry import KINDS, Capabilities, Registries, component, spec_of


@component("attention", "naive", capabilities=Capabilities(devices=("cpu",), dtypes=("float32",), backward=True))
class Naive:
    """Explicit softmax attention.

    More text that is not the description.
    """

    def __init__(self, scale: float = 1.0, heads: int = 2, mode: Literal["a", "b"] = "a",
                 path: Optional[Path] = None) -> None:
        if scale < 0:
            raise ValueError("scale must be >= 0")
        self.scale, self.heads, self.mode, self.path = scale, heads, mode, path


@component("dataset", "frames", runtime_kwargs=("layout",))
def frames(root: str, layout, limit: int | None = None):
    """A factory component."""
    return {"root": root, "layout": layout, "limit": limit}


@pytest.fixture
def regs():
    r = Registries()
    r.register(Naive, origin="builtin:attention_naive")
    r.register(frames, origin="builtin:datasets")
    return r


def test_decorator_attaches_spec_without_registering():
    spec = spec_of(Naive)
    assert (spec.kind, spec.name, spec.obj) == ("attention", "naive", Naive)
    assert spec.description == "Explicit softmax attention."
    assert spec.capabilities.backward and spec.capabilities.masks is None
    assert spec.origin == "unregistered"
    assert "naive" not in Registries().names("attention")


def test_register_fills_origin_and_lists(regs):
    assert regs.get("attention", "naive").origin == "builtin:attention_naive"
    assert regs.names("attention") == ["naive"]
    assert [s.name for s in regs.specs("dataset")] == ["frames"]
    assert regs.available("attention", "naive") is None


def test_duplicate_names_both_origins_and_modules(regs):
    @component("attention", "naive")
    class Other:
        pass

    with pytest.raises(DuplicateComponentError) as err:
        regs.register(Other, origin="myplug (myplug-dist 0.1)")
    msg = str(err.value)
    assert "builtin:attention_naive" in msg and "myplug (myplug-dist 0.1)" in msg
    assert Naive.__module__ in msg and Other.__module__ in msg


def test_subclass_is_not_a_component():
    class Sub(Naive):
        pass

    with pytest.raises(Exception, match="not a component"):
        spec_of(Sub)


def test_unknown_kind_lists_kinds(regs):
    with pytest.raises(ConfigError) as err:
        regs.names("attn")
    assert all(kind in str(err.value) for kind in KINDS)
    with pytest.raises(ConfigError):
        component("attn", "x")


def test_unknown_name_suggests_closest(regs):
    with pytest.raises(UnknownComponentError) as err:
        regs.get("attention", "naiv")
    assert "Did you mean 'naive'?" in str(err.value) and "Known attention components: naive" in str(err.value)
    with pytest.raises(UnknownComponentError, match="No logger components are registered"):
        regs.get("logger", "stdout")


def test_build_with_keywords_from_dict_and_omegaconf(regs):
    from omegaconf import OmegaConf

    obj = regs.build("attention", {"name": "naive", "scale": 2, "mode": "b"})
    assert (obj.scale, obj.mode) == (2, "b")
    node = OmegaConf.create({"x": 3, "att": {"name": "naive", "heads": "${x}", "path": "a/b"}})
    assert regs.build("attention", node.att).heads == 3


def test_build_unknown_keyword_names_it_and_accepted(regs):
    with pytest.raises(ConfigError) as err:
        regs.build("attention", {"name": "naive", "sacle": 2})
    assert "sacle" in str(err.value) and "heads, mode, path, scale" in str(err.value)


def test_build_type_checks_simple_annotations(regs):
    with pytest.raises(ConfigError, match="expects int for 'heads', got str 'two'"):
        regs.build("attention", {"name": "naive", "heads": "two"})
    with pytest.raises(ConfigError, match="expects Literal"):
        regs.build("attention", {"name": "naive", "mode": "c"})
    with pytest.raises(ConfigError, match="expects int"):
        regs.build("attention", {"name": "naive", "heads": True})  # bool is not an int here
    assert regs.build("attention", {"name": "naive", "scale": 1}).scale == 1  # int is a fine float


def test_build_missing_name_and_required_keyword(regs):
    with pytest.raises(ConfigError, match="no 'name:' key"):
        regs.build("attention", {"scale": 1})
    with pytest.raises(ConfigError, match="needs the keyword 'root'"):
        regs.build("dataset", {"name": "frames"}, layout="L")
    with pytest.raises(ConfigError, match="must be a mapping"):
        regs.build("dataset", "frames")


def test_build_runtime_kwargs(regs):
    built = regs.build("dataset", {"name": "frames", "root": "/d"}, layout="L")
    assert built == {"root": "/d", "layout": "L", "limit": None}
    with pytest.raises(ConfigError, match="needs the keyword 'layout'"):
        regs.build("dataset", {"name": "frames", "root": "/d"})
    with pytest.raises(ConfigError, match="supplied by the task at run time"):
        regs.build("dataset", {"name": "frames", "root": "/d", "layout": "X"}, layout="L")


def test_build_wraps_value_error_from_constructor(regs):
    with pytest.raises(ConfigError, match="building attention 'naive' failed: ValueError: scale must be >= 0"):
        regs.build("attention", {"name": "naive", "scale": -1})


def test_unavailable_component_reason_and_build(regs):
    @regs.component("logger", "gpu_meter", origin="test", available=lambda: "needs nvidia-smi: install the driver")
    class GpuMeter:
        pass

    @regs.component("logger", "broken_check", origin="test", available=lambda: 1 / 0)
    class Broken:
        pass

    assert regs.available("logger", "gpu_meter") == "needs nvidia-smi: install the driver"
    assert "ZeroDivisionError" in regs.available("logger", "broken_check")
    with pytest.raises(UnavailableError, match="not available here: needs nvidia-smi"):
        regs.build("logger", {"name": "gpu_meter"})


def test_registry_imports_no_torch_or_core():
    code = ("import sys, cogframe.registry, cogframe.config.recipes; "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith('cogframe.core')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ----------------------------------------------------------------------------- capabilities


def test_capabilities_name_each_unmet_constraint():
    from cogframe.registry import Needs

    flex_like = Capabilities(devices=("cpu", "cuda"), dtypes=("float32",), backward=("cuda",),
                             masks=("sequential",))
    assert flex_like.unmet(Needs(device="cuda:1", dtype="float32", backward=True, mask="sequential")) == []
    unmet = flex_like.unmet(Needs(device="mps", dtype="torch.bfloat16", backward=True, mask="interpolation"))
    assert unmet == ["device mps (it runs on cpu, cuda)", "dtype bfloat16 (it supports float32)",
                     "backward on mps, i.e. training (backward only on cuda)",
                     "mask interpolation (it handles sequential)"]
    assert "forward only" in Capabilities(devices=("cpu",)).unmet(Needs(backward=True))[0]
    # Unknown device ("auto", None) and undeclared fields are never held against a component.
    assert flex_like.unmet(Needs(device="auto", backward=True)) == []
    assert Capabilities().unmet(Needs(device="cuda", dtype="float16", mask="sequential")) == []


def test_capability_problem_names_constraint_asked_and_alternatives(regs):
    from cogframe.registry import Needs

    @regs.component("attention", "gpu_fast", origin="test",
                    capabilities=Capabilities(devices=("cuda",), dtypes=("float16",), backward=True))
    class GpuFast:
        pass

    @regs.component("attention", "absent", origin="test", available=lambda: "needs a driver",
                    capabilities=Capabilities(devices=("cpu",), dtypes=("float32",), backward=True))
    class Absent:
        pass

    needs = Needs(device="cpu", dtype="float32", backward=True)
    (problem,) = regs.capability_problems("attention", "gpu_fast", needs, where="model.attention.temporal")
    text = str(problem)
    assert text.startswith("model.attention.temporal: attention 'gpu_fast' (from test) does not support "
                           "device cpu (it runs on cuda); dtype float32 (it supports float16)")
    assert "meet device cpu, dtype float32, backward (training): absent (not available here), naive" in text
    assert "e.g. model.attention.temporal.name=naive" in text
    assert regs.capability_problems("attention", "naive", needs, where="x") == []
    with pytest.raises(ConfigError, match="does not support device cpu"):
        regs.build("attention", {"name": "gpu_fast"}, needs=needs, where="model.attention.temporal")
    assert regs.satisfying("attention", Needs(device="cuda", dtype="float16")) == ["gpu_fast"]


# ----------------------------------------------------------------------------- lazy components


LAZY_MODULE = '''
"""A component module that must never be imported by listing or validating."""
from pathlib import Path
from typing import Literal, Optional

from cogframe.hookspecs import hookimpl
from cogframe.registry import Capabilities, component

IMPORTED = True
HINT = "install lazyplug-extras"


def _reason(what: str) -> str:
    return f"needs {what}: {HINT}"


def lazy_check():
    return None


class Base:
    runtime_kwargs = ("layout",)

    def __init__(self, layout, size: int, mode: Literal["a", "b"] = "a", root: Optional[Path] = None):
        self.layout, self.size, self.mode, self.root = layout, size, mode, root


@component("attention", "lazy_attn", available=lazy_check,
           capabilities=Capabilities(devices=("cpu",), dtypes=("float32",), backward=True,
                                     extra={"hint": _reason("nothing")}))
class LazyAttention(Base):
    """Attention from a module imported on first build."""


@component("logger", "lazy_log", description="A " + "logger")
def lazy_logger(path: str, *, every: int = 1):
    return {"path": path, "every": every}


@hookimpl
def register_components():
    """Both components."""
    return [LazyAttention, lazy_logger]
'''


@pytest.fixture
def lazy_module(tmp_path, monkeypatch):
    (tmp_path / "lazyplug_components.py").write_text(LAZY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "lazyplug_components"
    sys.modules.pop("lazyplug_components", None)


def test_lazy_components_read_declarations_without_importing(lazy_module):
    from cogframe.registry import lazy_components

    specs = lazy_components(lazy_module)
    assert lazy_module not in sys.modules
    attn, log = specs
    assert (attn.kind, attn.name, attn.target, attn.lazy, attn.loaded) == (
        "attention", "lazy_attn", "lazyplug_components:LazyAttention", True, False)
    assert attn.description == "Attention from a module imported on first build."
    assert attn.capabilities == Capabilities(devices=("cpu",), dtypes=("float32",), backward=True,
                                             extra={"hint": "needs nothing: install lazyplug-extras"})
    assert attn.runtime_kwargs == ("layout",)  # inherited from Base, read from Base's body
    assert attn.available == "lazyplug_components:lazy_check"
    assert log.description == "A logger" and list(log.signature.parameters) == ["path", "every"]
    regs = Registries()
    for spec in specs:
        regs.register(spec, origin="lazyplug")
    # Keyword and type checks use the signature read from source: still not imported.
    with pytest.raises(ConfigError) as err:
        regs.build("attention", {"name": "lazy_attn", "size": "big", "mode": "c", "sise": 1}, layout="L")
    text = str(err.value)
    assert "expects int for 'size'" in text and "expects Literal" in text and "did you mean 'size'" in text
    assert regs.get("attention", "lazy_attn").module == lazy_module
    assert lazy_module not in sys.modules
    # The availability check lives in the component's module here, so asking imports it (keep
    # checks in a light module, as cogframe/plugins/_availability.py does, to avoid that).
    assert regs.available("attention", "lazy_attn") is None and lazy_module in sys.modules
    built = regs.build("attention", {"name": "lazy_attn", "size": 2, "root": "r"}, layout="L")
    assert lazy_module in sys.modules and (built.size, built.layout) == (2, "L")
    assert regs.get("attention", "lazy_attn").loaded


def test_lazy_module_that_cannot_be_read_statically_is_refused(tmp_path, monkeypatch):
    from cogframe.registry import lazy_components

    (tmp_path / "dynamic_plug.py").write_text(
        "from cogframe.hookspecs import hookimpl\nfrom cogframe.registry import component\n"
        "import os\nNAME = os.environ.get('X', 'dyn')\n"
        "@component('logger', NAME)\nclass Dyn:\n    pass\n"
        "@hookimpl\ndef register_components():\n    return [Dyn]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert lazy_components("dynamic_plug") is None  # the caller imports it instead
    assert lazy_components("no_such_module_here") is None


def test_lazy_component_import_failure_names_component_and_fix(tmp_path, monkeypatch):
    from cogframe.errors import CogframeError
    from cogframe.registry import lazy_component

    (tmp_path / "broken_impl.py").write_text("import not_installed_dep_zz\nclass Impl:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    regs = Registries()
    regs.register(lazy_component("logger", "broken", "broken_impl:Impl"), origin="brokenplug")
    regs.register(lazy_component("logger", "typo", "broken_impl:Nope"), origin="brokenplug")
    with pytest.raises(CogframeError) as err:
        regs.build("logger", {"name": "broken"})
    assert "logger 'broken' (from brokenplug) cannot be loaded" in str(err.value)
    assert "'not_installed_dep_zz', which is not installed" in str(err.value)
    with pytest.raises(ConfigError, match="must be 'package.module:Attribute'"):
        lazy_component("logger", "x", "no_colon")


def test_lazy_component_declared_as_another_is_refused(lazy_module):
    from cogframe.errors import CogframeError
    from cogframe.registry import lazy_component

    regs = Registries()
    regs.register(lazy_component("logger", "wrong", f"{lazy_module}:lazy_logger"), origin="p")
    with pytest.raises(CogframeError, match="declared as logger 'lazy_log': make the registration"):
        regs.build("logger", {"name": "wrong", "path": "p"})


def test_every_builtin_module_is_read_statically_exactly_as_imported():
    """Drift guard: the declarations read from source equal the imported @component specs."""
    import importlib
    import inspect
    import typing

    import cogframe.plugins as plugins
    from cogframe.component_source import StaticDefault
    from cogframe.registry import lazy_components

    for module in plugins.BUILTIN_PLUGINS:
        static = lazy_components(module)
        assert static is not None, f"{module} can no longer be registered lazily (see cogframe/component_source.py)"
        real = [spec_of(obj) for obj in importlib.import_module(module).register_components()]
        assert [(s.kind, s.name) for s in static] == [(r.kind, r.name) for r in real], module
        for s, r in zip(static, real):
            where = f"{module} {s.label}"
            assert (s.description, s.capabilities, s.runtime_kwargs) == (
                r.description, r.capabilities, r.runtime_kwargs), where
            expected = None if r.available is None else f"{r.available.__module__}:{r.available.__qualname__}"
            assert s.available == expected, where
            real_sig = inspect.signature(r.obj)
            target = r.obj.__init__ if inspect.isclass(r.obj) else r.obj
            try:
                hints = typing.get_type_hints(target)
            except Exception:
                hints = {}
            assert list(s.signature.parameters) == list(real_sig.parameters), where
            for name, p in s.signature.parameters.items():
                q = real_sig.parameters[name]
                assert p.kind == q.kind, f"{where}: {name}"
                assert (p.default is p.empty) == (q.default is q.empty), f"{where}: {name}"
                if p.default is not p.empty and not isinstance(p.default, StaticDefault):
                    assert p.default == q.default, f"{where}: {name}"
                if p.annotation is not p.empty:
                    assert p.annotation == hints.get(name, q.annotation), f"{where}: {name}"
