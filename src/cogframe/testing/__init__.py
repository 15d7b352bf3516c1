"""The plugin-author kit: conformance checks that a plugin's own test suite calls.

cogframe's guarantees hold only if every component keeps its side of the contract; these checks
let a third-party package prove that its components do, with the same properties cogframe's own
tests hold the built-ins to (docs/plugins.md, "Testing your plugin")::

    from cogframe.testing import check_attention_backend, check_token_sampler

    def test_my_backend():
        check_attention_backend("my_backend")       # every declared mask, fwd + bwd vs naive

    def test_my_sampler():
        check_token_sampler("my_sampler", kwargs={"p": 0.1})   # position-keyed randomness

Modules:

* ``attention.py``: :func:`check_attention_backend` and the hypothesis strategy of backend calls;
* ``samplers.py``: :func:`check_token_sampler` (valid ids, same (seed, stream, slot) -> same token);
* ``stages.py``: :func:`check_stage`, :func:`check_stage_component` (given frames unchanged, shapes);
* ``datasets.py``: :func:`check_dataset` (the clip contract, skip reporting);
* ``tokenizers.py``: :func:`check_text_tokenizer`, :func:`check_image_tokenizer` (round trip, id ranges);
* ``pytest_plugin.py``: fixtures (``cogframe_registries``, ``cogframe_cli``), the
  ``cogframe_plugins`` marker and :func:`component_params`, loaded by pytest through the
  ``pytest11`` entry point;
* ``_common.py``: the report, :class:`ConformanceError`, resolving a name/class/instance.

Each check returns a :class:`ConformanceReport` and raises :class:`ConformanceError` (an
``AssertionError``) naming the broken guarantee and the case. Names are imported on first use,
so ``import cogframe.testing`` (which pytest does through the entry point) stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "ConformanceError",
    "ConformanceReport",
    "attention_cases",
    "check_attention_backend",
    "check_dataset",
    "check_image_tokenizer",
    "check_stage",
    "check_stage_component",
    "check_text_tokenizer",
    "check_token_sampler",
    "component_params",
    "random_batch",
    "sampler_cases",
]

_WHERE = {
    "ConformanceError": "_common", "ConformanceReport": "_common",
    "attention_cases": "attention", "check_attention_backend": "attention",
    "check_token_sampler": "samplers", "sampler_cases": "samplers",
    "check_stage": "stages", "check_stage_component": "stages", "random_batch": "stages",
    "check_dataset": "datasets",
    "check_text_tokenizer": "tokenizers", "check_image_tokenizer": "tokenizers",
    "component_params": "pytest_plugin",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'cogframe.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"cogframe.testing.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
