"""Sharded safetensors files: ``model-0000k-of-0000N.safetensors`` + ``model.safetensors.index.json``.

The layout is the one Hugging Face uses, so other tools can read the files: each shard is a plain
safetensors file; the index maps every tensor name to its shard (``weight_map``) and records the
total byte size. Shards are written one at a time, converting only that shard's tensors to the
target dtype, so converting a 15 GB checkpoint needs about one shard of extra memory.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from cogframe.core.io.atomic import atomic_path, atomic_write_json
from cogframe.errors import ConfigError, DataError

__all__ = ["INDEX_FILE", "SHARD_PATTERN", "parse_size", "plan_shards", "save_sharded", "load_sharded",
           "iter_sharded", "read_shapes", "read_index", "shard_name"]

INDEX_FILE = "model.safetensors.index.json"
SHARD_PATTERN = re.compile(r"^model-(\d{5})-of-(\d{5})\.safetensors$")
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(value: str | int) -> int:
    """Bytes from ``"2GB"``, ``"500MB"``, ``"1.5GiB"`` or an integer (GB = 10^9, GiB = 2^30).

    Raises:
        ConfigError: Not a positive size.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
        unit = match.group(2).lower() if match else None
        if not match or unit not in _UNITS:
            raise ConfigError(f"shard size {value!r} is not a size; write e.g. 2GB, 500MB, 1.5GiB or a "
                              "byte count.")
        size = int(float(match.group(1)) * _UNITS[unit])
    if size <= 0:
        raise ConfigError(f"shard size must be positive, got {value!r}.")
    return size


def shard_name(index: int, total: int) -> str:
    """``model-0000{index}-of-0000{total}.safetensors`` (1-based index)."""
    return f"model-{index:05d}-of-{total:05d}.safetensors"


def plan_shards(sizes: Iterable[tuple[str, int]], max_bytes: int) -> list[list[str]]:
    """Groups tensors, in order, into shards of at most ``max_bytes`` (a bigger tensor gets its own)."""
    shards: list[list[str]] = [[]]
    used = 0
    for name, nbytes in sizes:
        if shards[-1] and used + nbytes > max_bytes:
            shards.append([])
            used = 0
        shards[-1].append(name)
        used += nbytes
    return shards


def save_sharded(folder: str | Path, tensors: Mapping[str, torch.Tensor], *, max_shard_bytes: int,
                 dtype: torch.dtype | None = None, metadata: Mapping[str, str] | None = None) -> list[Path]:
    """Writes ``tensors`` as shards + index into ``folder`` (each file atomically, index last).

    Args:
        folder: Destination folder (created).
        tensors: Names -> tensors (may be memory-mapped; each is read when its shard is written).
        max_shard_bytes: Upper bound of one shard's tensor bytes.
        dtype: Cast floating-point tensors to this dtype; None keeps them.
        metadata: String metadata stored in every shard's header.

    Returns:
        The shard paths.
    """
    folder = Path(folder)

    def target(t: torch.Tensor) -> torch.dtype:
        return dtype if dtype is not None and t.is_floating_point() else t.dtype

    sizes = [(name, t.numel() * target(t).itemsize) for name, t in tensors.items()]
    plan = plan_shards(sizes, max_shard_bytes)
    paths, weight_map = [], {}
    for number, names in enumerate(plan, start=1):
        path = folder / shard_name(number, len(plan))
        # copy=True: safetensors refuses tensors that share memory, and a memory-mapped source
        # must be materialised anyway.
        shard = {n: tensors[n].to(dtype=target(tensors[n]), copy=True).contiguous() for n in names}
        with atomic_path(path) as tmp:
            save_file(shard, str(tmp), metadata=dict(metadata or {}))
        del shard
        weight_map.update({n: path.name for n in names})
        paths.append(path)
    atomic_write_json(folder / INDEX_FILE, {
        "metadata": {"total_size": sum(size for _, size in sizes)},
        "weight_map": weight_map,
    })
    return paths


def read_index(folder: str | Path) -> dict[str, str]:
    """The ``weight_map`` (tensor name -> shard file name) of a sharded folder.

    Raises:
        DataError: The index is missing, unreadable or names a missing shard.
    """
    folder = Path(folder)
    index = folder / INDEX_FILE
    if not index.is_file():
        raise DataError(f"{index} is missing: {folder} is not a complete cogframe weights folder (an "
                        "interrupted conversion leaves none). Run `cogframe convert` again.")
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{index} is unreadable ({type(exc).__name__}: {exc}); run `cogframe convert` "
                        "again.") from None
    missing = sorted({f for f in weight_map.values() if not (folder / f).is_file()})
    if missing:
        raise DataError(f"{folder} lacks shard files {', '.join(missing)} listed in {INDEX_FILE}; copy "
                        "the whole folder or run `cogframe convert` again.")
    return dict(weight_map)


def _corrupt(path: Path, exc: Exception) -> DataError:
    return DataError(f"cannot read {path} ({type(exc).__name__}: {exc}); the shard is corrupt, run "
                     "`cogframe convert` again.")


def _open_shards(folder: Path, weight_map: dict[str, str]) -> Iterator[tuple[Path, list[str], Any]]:
    """Yields ``(path, names, handle)`` per shard after checking it holds the names the index lists."""
    by_file: dict[str, list[str]] = {}
    for name, file in weight_map.items():
        by_file.setdefault(file, []).append(name)
    for file, names in by_file.items():
        path = folder / file
        try:
            handle = safe_open(str(path), framework="pt", device="cpu")
            present = set(handle.keys())
        except Exception as exc:  # safetensors raises several types for truncated/corrupt files
            raise _corrupt(path, exc) from None
        absent = [n for n in names if n not in present]
        if absent:
            raise DataError(f"{path} lacks tensors {', '.join(absent)} that {INDEX_FILE} places there; run "
                            "`cogframe convert` again.")
        yield path, names, handle


def read_shapes(folder: str | Path) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape, read from the shard headers only (no tensor data is loaded)."""
    folder = Path(folder)
    shapes: dict[str, tuple[int, ...]] = {}
    for _, names, handle in _open_shards(folder, read_index(folder)):
        shapes.update({n: tuple(handle.get_slice(n).get_shape()) for n in names})
    return shapes


def iter_sharded(folder: str | Path) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` for every tensor, one at a time on the CPU (callers cast/move each one,
    so a 30 GB checkpoint never sits in memory twice)."""
    folder = Path(folder)
    for path, names, handle in _open_shards(folder, read_index(folder)):
        for name in names:
            try:
                tensor = handle.get_tensor(name)
            except Exception as exc:
                raise _corrupt(path, exc) from None
            yield name, tensor


def load_sharded(folder: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a sharded folder on the CPU, in index order.

    Raises:
        DataError: A missing or corrupt shard, or a shard without a tensor the index lists.
    """
    order = read_index(folder)
    tensors = dict(iter_sharded(folder))
    return {name: tensors[name] for name in order}
