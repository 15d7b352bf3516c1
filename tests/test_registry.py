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
