"""cogframe: a plugin-based toolkit for CogVideo-style text-to-video transformers.

The Python API (docs/python-api.md) is loaded on first use, so ``import cogframe`` stays cheap
(no torch, no plugins)::

    import cogframe
    pipe = cogframe.load_pipeline("tiny/sample")
    pipe("a red circle moving left", seed=0).save("x.mp4")
"""

__version__ = "0.1.0"

# The API's names live in cogframe/api.py; module __getattr__ (PEP 562) imports it when one is used.
_API = ("Pipeline", "SampleOutput", "build_model", "list_components", "load_pipeline", "run")

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        value = getattr(importlib.import_module("cogframe.api"), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'cogframe' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_API])
