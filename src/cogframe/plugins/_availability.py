"""Availability checks of built-in components, answered without importing torch where possible.

``cogframe plugins`` and ``cogframe validate`` run these for the components they list or check;
the components' own modules import torch, this one does not. Each check says what is missing and
how to fix it. Only a question that torch alone can answer (is a CUDA device there?) imports it,
and only once the cheaper questions have been answered yes.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import sys

__all__ = ["flex_unavailable_reason", "torch_version", "xformers_unavailable_reason"]

# The first torch release with torch.nn.attention.flex_attention.
FLEX_MIN_TORCH = (2, 5)


def torch_version() -> tuple[int, int] | None:
    """``(major, minor)`` of the installed torch, read from its metadata (no import); None if absent."""
    torch = sys.modules.get("torch")
    text = getattr(torch, "__version__", None) if torch is not None else None
    if text is None:
        try:
            text = importlib.metadata.version("torch")
        except importlib.metadata.PackageNotFoundError:
            return None
    match = re.match(r"(\d+)\.(\d+)", str(text))
    return (int(match.group(1)), int(match.group(2))) if match else None


def flex_unavailable_reason() -> str | None:
    """None when this torch has flex_attention (torch >= 2.5), else why not and how to fix it."""
    version = torch_version()
    if version is None:
        return "torch is not installed: pip install 'torch>=2.5'"
    if version < FLEX_MIN_TORCH:
        return (f"torch {version[0]}.{version[1]} has no torch.nn.attention.flex_attention (it needs "
                "torch >= 2.5): upgrade torch, or use the sdpa or swin3d attention")
    return None


def xformers_unavailable_reason() -> str | None:
    """None when xformers can run here, else why not and how to fix it.

    Imports torch (for ``torch.cuda.is_available()``) and xformers only when xformers is installed.
    """
    if importlib.util.find_spec("xformers") is None:
        return "xformers is not installed (pip install 'cogframe[xformers]')"
    import torch

    if not torch.cuda.is_available():
        return "xformers needs a CUDA device; none is available"
    try:
        import xformers
        import xformers.ops  # noqa: F401
    except Exception as exc:  # a broken install must show up as a reason, not a crash
        return (f"xformers is installed but failed to import ({type(exc).__name__}: {exc}): "
                "reinstall the xformers build that matches your torch")
    if not getattr(xformers, "_has_cpp_library", True):
        return (f"xformers {xformers.__version__} has no compiled kernels for torch "
                f"{torch.__version__}: install the xformers build that matches your torch")
    return None
