"""Loading torch pickle files (``.pt``) without ever running code from them.

``torch.load`` unpickles, and a pickle can call any Python function while it is read (a
``__reduce__`` returning ``os.system``, say). Released checkpoints come from the internet, so
cogframe always loads with ``weights_only=True``: torch's restricted unpickler, which builds tensors
and plain containers only and refuses every other global *before* calling it.

Checkpoints written by DeepSpeed (SwissArmyTransformer's training checkpoints) also store the
random-number-generator state of numpy and sometimes an ``argparse.Namespace``. Those are pure data,
so :data:`DATA_ONLY_GLOBALS` allowlists exactly them; any other global is refused with a
:class:`~cogframe.errors.DataError` that names it.
"""

from __future__ import annotations

import importlib
import pickle
import re
from pathlib import Path
from typing import Any, Callable

import torch

from cogframe.errors import DataError

__all__ = ["DATA_ONLY_GLOBALS", "safe_torch_load"]

# Globals that only rebuild data (numpy arrays/scalars/dtypes, a namespace of values). Each entry is
# "module:attribute" of the object to allow, keyed by the dotted name a pickle may refer to it by
# (numpy 1 pickles say numpy.core, numpy 2 pickles say numpy._core).
DATA_ONLY_GLOBALS: dict[str, str] = {
    "numpy.core.multiarray._reconstruct": "numpy._core.multiarray:_reconstruct",
    "numpy._core.multiarray._reconstruct": "numpy._core.multiarray:_reconstruct",
    "numpy.core.multiarray.scalar": "numpy._core.multiarray:scalar",
    "numpy._core.multiarray.scalar": "numpy._core.multiarray:scalar",
    "numpy.ndarray": "numpy:ndarray",
    "numpy.dtype": "numpy:dtype",
    "argparse.Namespace": "argparse:Namespace",
}
# numpy 2 also pickles the dtype's class (numpy.dtypes.UInt32DType, Float64DType, ...).
_NUMPY_DTYPE_CLASS = re.compile(r"^numpy\.dtypes\.(\w+DType)$")
_GLOBAL_PATTERNS = (re.compile(r"GLOBAL ([\w.]+)"), re.compile(r"but got <class '([\w.]+)'>"))
_MAX_RETRIES = 16


def _resolve_data_global(name: str) -> Any | None:
    """The object a data-only global ``name`` stands for, or None when it is not data-only."""
    target = DATA_ONLY_GLOBALS.get(name)
    if target is None:
        match = _NUMPY_DTYPE_CLASS.match(name)
        if match is None:
            return None
        target = f"numpy.dtypes:{match.group(1)}"
    module_name, attribute = target.split(":")
    try:
        obj = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError):
        return None
    if target.startswith("numpy.dtypes:"):
        import numpy as np

        if not (isinstance(obj, type) and issubclass(obj, np.dtype)):
            return None
    return obj


def _refused_global(message: str) -> str | None:
    for pattern in _GLOBAL_PATTERNS:
        match = pattern.search(message)
        if match:
            return match.group(1)
    return None


def _load(path: Path, mmap: bool, allowed: list[tuple[Callable, str]]) -> Any:
    with torch.serialization.safe_globals(allowed):
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as exc:
            if mmap and "mmap can only be used" in str(exc):
                # Files in torch's legacy (non-zip) format cannot be memory-mapped; read them whole.
                return torch.load(path, map_location="cpu", weights_only=True, mmap=False)
            raise


def safe_torch_load(path: str | Path, *, what: str, mmap: bool = True) -> Any:
    """``torch.load(path, weights_only=True, map_location="cpu")`` with clear errors.

    Args:
        path: The ``.pt`` file.
        what: What the file is, for messages (e.g. ``"SAT checkpoint"``).
        mmap: Memory-map the file's tensors instead of reading them all (zip-format files only;
            legacy files are read whole). Keeps a 15 GB checkpoint from needing 15 GB of RAM at once.

    Returns:
        The unpickled object.

    Raises:
        DataError: The file is missing, corrupt, or references a global that could run code (the
            pickle is refused before anything runs; the message names the global).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} {path} does not exist; check the path.")
    allowed: list[tuple[Callable, str]] = []
    for _ in range(_MAX_RETRIES):
        try:
            return _load(path, mmap, allowed)
        except pickle.UnpicklingError as exc:
            name = _refused_global(str(exc))
            if name is None:
                raise DataError(
                    f"cannot read {what} {path}: it is corrupt or not a file written by torch.save "
                    f"({_last_line(exc)}). Re-download or re-save it.") from None
            obj = _resolve_data_global(name)
            if obj is None or any(allowed_name == name for _, allowed_name in allowed):
                raise DataError(
                    f"refusing to load {what} {path}: its pickle references '{name}', which could run "
                    "code while loading, so cogframe does not unpickle it (it loads with "
                    "torch.load(weights_only=True), tensors and plain data only). Get the file from "
                    "its original source again; if you created it yourself, re-save only its "
                    "tensors, e.g. torch.save({'module': state_dict}, path).") from None
            allowed.append((obj, name))
        except (RuntimeError, EOFError, OSError, ValueError) as exc:
            raise DataError(
                f"cannot read {what} {path}: {type(exc).__name__}: {_last_line(exc)}. The file is "
                "truncated or corrupt; re-download or re-save it.") from None
    raise DataError(f"cannot read {what} {path}: it needs too many non-tensor globals; re-save its "
                    "tensors only, e.g. torch.save({'module': state_dict}, path).")


def _last_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Check the documentation", "Weights only"))]
    return (useful or lines or [type(exc).__name__])[-1][:300]
