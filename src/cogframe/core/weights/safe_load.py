"""Loading torch pickle files (``.pt``) without ever running code from them.

``torch.load`` unpickles, and a pickle can call any Python function while it is read (a
``__reduce__`` returning ``os.system``, say). Released checkpoints come from the internet, so
cogframe always loads with ``weights_only=True``: torch's restricted unpickler, which builds tensors
and plain containers only and refuses every other global *before* calling it.

Checkpoints written by DeepSpeed (SwissArmyTransformer's training checkpoints) also store the
random-number-generator state of numpy and sometimes an ``argparse.Namespace``. Those are pure data,
so :data:`DATA_ONLY_GLOBALS` allowlists exactly them; any other global is refused with a
:class:`~cogframe.errors.DataError` that names it.

Safetensors files cannot run code, but they can be truncated or not safetensors at all:
:func:`read_safetensors` turns every such failure into a ``DataError`` naming the file. Weights
can also be NaN or infinite (a diverged run, a broken conversion); a model built from them
generates garbage without any error, so :func:`check_finite` refuses them, naming the tensor.
"""

from __future__ import annotations

import importlib
import pickle
import re
from pathlib import Path
from typing import Any, Callable

import torch

from cogframe.errors import DataError

__all__ = ["DATA_ONLY_GLOBALS", "safe_torch_load", "read_safetensors", "check_finite", "first_non_finite"]

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


def read_safetensors(path: str | Path, *, what: str, fix: str = "Re-create or re-download it.") -> dict:
    """All tensors of one safetensors file, on the CPU, with clear errors.

    Args:
        path: The ``.safetensors`` file.
        what: What the file is, for messages (e.g. ``"model.init.from"``).
        fix: What to do about a missing, truncated or foreign file.

    Raises:
        DataError: The file is missing, a folder without weights, truncated, or not safetensors.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} {path} is not a file. {fix}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise DataError(f"cannot read {what} {path}: it is truncated or not a safetensors file "
                        f"({type(exc).__name__}: {_last_line(exc)}). {fix}") from None


_CHUNK = 1 << 24  # elements per isfinite pass: bounds the temporary bool tensor (16 MB)


def first_non_finite(tensor: torch.Tensor) -> tuple[int, float] | None:
    """``(flat index, value)`` of the first NaN/inf element of a floating tensor, else None."""
    if not tensor.is_floating_point() or tensor.numel() == 0:
        return None
    flat = tensor.detach().reshape(-1)
    for start in range(0, flat.numel(), _CHUNK):
        bad = ~torch.isfinite(flat[start:start + _CHUNK])
        if bool(bad.any()):
            index = int(bad.nonzero()[0, 0]) + start
            return index, float(flat[index])
    return None


def check_finite(name: str, tensor: torch.Tensor, *, what: str, fix: str) -> None:
    """Raise when ``tensor`` holds a NaN or an infinity.

    Args:
        name: The tensor's name, for the message.
        tensor: The tensor (any device; only floating dtypes can be non-finite).
        what: Where it came from (a file), for the message.
        fix: What the user should do.

    Raises:
        DataError: Naming the tensor, the first bad element and its value.
    """
    bad = first_non_finite(tensor)
    if bad is not None:
        count = int((~torch.isfinite(tensor.detach())).sum())
        raise DataError(f"{what}: tensor '{name}' holds non-finite values ({count} of {tensor.numel()}, "
                        f"first {bad[1]} at flat index {bad[0]}); a model with these weights computes "
                        f"garbage. {fix}")


def _last_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("Check the documentation", "Weights only"))]
    return (useful or lines or [type(exc).__name__])[-1][:300]
