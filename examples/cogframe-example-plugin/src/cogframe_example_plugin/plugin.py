"""The plugin module cogframe loads through the ``cogframe`` entry point.

It stays light: ``lazy_components`` reads the ``@component`` declarations of the component
modules from their source, so ``cogframe plugins`` and ``cogframe validate`` list and check them
without importing torch; a module is imported when one of its components is built.
"""

from __future__ import annotations

import importlib

from cogframe.hookspecs import hookimpl
from cogframe.registry import lazy_components

MODULES = ("cogframe_example_plugin.attention_chunked", "cogframe_example_plugin.sampler_min_p")


@hookimpl
def register_components():
    components = []
    for module in MODULES:
        specs = lazy_components(module)
        # None: the source cannot be read statically (e.g. only .pyc shipped): import it instead.
        components += specs if specs is not None else importlib.import_module(module).COMPONENTS
    return components
