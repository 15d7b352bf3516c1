"""Token shards on disk: the format written by the ``prepare`` task and the dataset that reads it.

Layout of a shard folder::

    manifest.json                    # written last; lists every split's shards (see below)
    train-00000.safetensors          # one shard: up to shard_size samples
    train-00000.safetensors.done     # completion marker, written after the shard (JSON)
    val-00000.safetensors ...

Tensors of a shard (``N`` samples):

* ``text`` int32 ``[N, text_len]`` — global text ids, left-padded with the pad id;
* ``text_valid`` bool ``[N, text_len]`` — True on real text tokens;
* ``frames`` int32 ``[N, num_frames, h, w]`` — image-token grids (ids ``< image_vocab_size``);
* ``fps`` float32 ``[N]`` — the sampled frame rate;
* ``index`` int64 ``[N]`` — the dataset entry each sample came from.

The safetensors header metadata holds ``captions`` and ``prefixes`` (JSON lists, one entry per
sample): for inspection, and for choosing samples by caption (``ShardDataset(..., keep=...)``)
from the headers alone, without reading any frames. int32 halves the disk size of int64;
:class:`ShardDataset` returns int64 (``Long``) tensors.

A shard counts as finished only when its ``.done`` marker exists, and the marker is written after
the shard has been fsynced and renamed into place, so a crash at any moment leaves either a
finished shard or one that the next run rebuilds; never a half-written file that looks complete.
"""

from __future__ import annotations

import bisect
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from cogframe.core.io.atomic import atomic_path, atomic_write_json
from cogframe.errors import ConfigError, DataError

__all__ = [
    "DONE_SUFFIX",
    "MANIFEST_FILE",
    "SHARD_FORMAT",
    "ShardDataset",
    "read_manifest",
    "read_marker",
    "shard_loader",
    "shard_name",
    "write_shard",
]

SHARD_FORMAT = "cogframe-token-shards"
SHARD_VERSION = 1
MANIFEST_FILE = "manifest.json"
DONE_SUFFIX = ".done"
TENSOR_KEYS = ("text", "text_valid", "frames", "fps", "index")
_LOAD_DTYPES = {"text": torch.long, "text_valid": torch.bool, "frames": torch.long, "fps": torch.float32,
                "index": torch.long}


def shard_name(split: str, number: int) -> str:
    """File name of shard ``number`` of ``split``, e.g. ``train-00003.safetensors``."""
    return f"{split}-{number:05d}.safetensors"


def _marker_path(shard: Path) -> Path:
    return shard.with_name(shard.name + DONE_SUFFIX)


def write_shard(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str],
                marker: dict[str, Any]) -> None:
    """Writes one shard atomically, then its ``.done`` marker (also atomically).

    Args:
        path: Destination ``.safetensors`` file.
        tensors: The shard tensors (see the module docstring).
        metadata: String metadata for the safetensors header.
        marker: JSON-ready facts stored in the marker (fingerprint, sample count, skips).
    """
    path = Path(path)
    marker_file = _marker_path(path)
    # Remove a stale marker first: if we crash after replacing the shard but before writing the new
    # marker, the old marker must not vouch for the new file.
    marker_file.unlink(missing_ok=True)
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    atomic_write_json(marker_file, marker)


def read_marker(path: str | os.PathLike) -> dict[str, Any] | None:
    """The marker of a finished shard, or None when the shard or its marker is missing or unreadable."""
    path = Path(path)
    marker_file = _marker_path(path)
    if not path.is_file() or not marker_file.is_file():
        return None
    try:
        marker = json.loads(marker_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return marker if isinstance(marker, dict) else None


def read_manifest(root: str | os.PathLike) -> dict[str, Any]:
    """Reads and checks ``<root>/manifest.json``.

    Raises:
        DataError: Missing, unreadable or not a cogframe shard manifest.
    """
    path = Path(root) / MANIFEST_FILE
    if not path.is_file():
        raise DataError(f"no token shards at {root} ({MANIFEST_FILE} is missing); create them with the prepare "
                        "task, e.g. `cogframe run tiny/prepare`, or point at its output_dir.")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is unreadable ({exc}); re-run the prepare task to rewrite it.") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != SHARD_FORMAT:
        raise DataError(f"{path} is not a cogframe token-shard manifest; point at a folder written by the "
                        "prepare task.")
    if manifest.get("version") != SHARD_VERSION:
        raise DataError(f"{path} has shard format version {manifest.get('version')}, this cogframe reads "
                        f"version {SHARD_VERSION}; re-run the prepare task.")
    return manifest


class ShardDataset(torch.utils.data.Dataset):
    """Map-style dataset over the token shards of one split (memory-mapped, nothing preloaded).

    Items are dicts ``{"text": Long[L], "text_valid": Bool[L], "frames": Long[T, h, w], "fps": Float[],
    "index": Long[]}``; :meth:`batches` and :func:`shard_loader` stack them with a leading batch dim.

    Args:
        root: The prepare task's ``output_dir``.
        split: Which split to read.
        keep: A caption predicate (e.g. :class:`cogframe.core.training.settings.CaptionFilter`):
            only the samples whose caption it accepts are items, in shard order. The captions
            come from the shard headers; no frames are read. ``str(keep)`` names it in errors.

    Attributes:
        manifest: The parsed ``manifest.json`` (``text_len``, ``num_frames``, ``grid``,
            ``image_vocab_size``, ``text_vocab_size``, ``special_ids``, ...).
        total: Samples of the split before ``keep`` (``len(self)`` is after it).

    Raises:
        DataError: No manifest, unknown split, a listed shard is missing, or (with ``keep``) a
            shard without one caption per sample in its header.
        ConfigError: ``keep`` accepts no sample of the split (naming the count and example captions).
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", *,
                 keep: Callable[[str], bool] | None = None) -> None:
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        splits = self.manifest.get("splits", {})
        if split not in splits:
            raise DataError(f"token shards at {root} have no split {split!r} (they have: "
                            f"{', '.join(sorted(splits)) or 'none'}); pick one of those or re-run prepare with it.")
        self.split = split
        self._files = [self.root / s["file"] for s in splits[split]["shards"]]
        missing = [f.name for f in self._files if not f.is_file()]
        if missing:
            raise DataError(f"token shards listed in {self.root / MANIFEST_FILE} are missing: "
                            f"{', '.join(missing[:5])}; "
                            "re-run the prepare task (finished shards are kept) to rebuild them.")
        self._starts = [0]
        for s in splits[split]["shards"]:
            self._starts.append(self._starts[-1] + int(s["num_samples"]))
        self._handles: dict[int, Any] = {}
        self.total = self._starts[-1]
        # Rows of the unfiltered split that are items (None: all of them).
        self._rows: list[int] | None = None
        if keep is not None:
            captions = self._split_captions()
            self._rows = [row for row, caption in enumerate(captions) if keep(caption)]
            if not self._rows:
                examples = ", ".join(repr(c) for c in list(dict.fromkeys(captions))[:3])
                seen = f" (their captions look like {examples})" if captions else ""
                raise ConfigError(
                    f"{keep} keeps none of the {len(captions)} samples of split {split!r} in {self.root}"
                    f"{seen}; loosen the filter (matching is case-sensitive) or point data.shards at "
                    "shards that hold such captions.")

    @property
    def text_len(self) -> int:
        """Text slots per sample."""
        return int(self.manifest["text_len"])

    @property
    def num_frames(self) -> int:
        """Frames per sample."""
        return int(self.manifest["num_frames"])

    @property
    def grid(self) -> tuple[int, int]:
        """Token grid ``(h, w)`` of each frame."""
        h, w = self.manifest["grid"]
        return int(h), int(w)

    def __len__(self) -> int:
        return self.total if self._rows is None else len(self._rows)

    def _split_captions(self) -> list[str]:
        """Every caption of the split in row order, from the shard headers (no tensor is read)."""
        captions: list[str] = []
        for shard, file in enumerate(self._files):
            expected = self._starts[shard + 1] - self._starts[shard]
            raw = (self._handle(shard).metadata() or {}).get("captions")
            try:
                found = json.loads(raw) if raw is not None else None
            except json.JSONDecodeError:
                found = None
            if not isinstance(found, list) or len(found) != expected or \
                    not all(isinstance(c, str) for c in found):
                what = "no captions" if raw is None else f"no list of {expected} captions"
                raise DataError(
                    f"token shard {file} has {what} in its header, so its samples cannot be chosen by "
                    "caption; re-run the prepare task (it stores one caption per sample), or set "
                    "data.captions=null to use every sample.")
            captions += found
        return captions

    def captions(self) -> list[str]:
        """The caption of every item, in item order (read from the shard headers)."""
        captions = self._split_captions()
        return captions if self._rows is None else [captions[row] for row in self._rows]

    def __getstate__(self) -> dict:
        # Open safetensors handles cannot be pickled; DataLoader workers reopen their own.
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state

    def _handle(self, shard: int) -> Any:
        if shard not in self._handles:
            try:
                self._handles[shard] = safe_open(str(self._files[shard]), framework="pt")
            except Exception as exc:  # safetensors raises its own error types for corrupt files
                raise DataError(f"token shard {self._files[shard]} is corrupt ({exc}); delete it and its .done "
                                "marker and re-run the prepare task.") from exc
        return self._handles[shard]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples of split {self.split!r}")
        if self._rows is not None:
            index = self._rows[index]
        shard = bisect.bisect_right(self._starts, index) - 1
        local = index - self._starts[shard]
        handle = self._handle(shard)
        return {key: handle.get_slice(key)[local].to(_LOAD_DTYPES[key]) for key in TENSOR_KEYS}

    def batches(self, batch_size: int, *, shuffle: bool = True, seed: int = 0, epoch: int = 0,
                drop_last: bool = False) -> Iterator[dict[str, torch.Tensor]]:
        """Yields stacked batches; with ``shuffle`` the order is a permutation seeded by ``(seed, epoch)``.

        Args:
            batch_size: Samples per batch.
            shuffle: Shuffle sample order.
            seed: Base seed (same seed and epoch, same order).
            epoch: Mixed into the seed so every epoch has its own order.
            drop_last: Drop the final batch when it is smaller than ``batch_size``.
        """
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
        if shuffle:
            order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        else:
            order = torch.arange(len(self))
        for start in range(0, len(self), batch_size):
            chunk = order[start:start + batch_size]
            if drop_last and len(chunk) < batch_size:
                break
            items = [self[int(i)] for i in chunk]
            yield {key: torch.stack([item[key] for item in items]) for key in TENSOR_KEYS}


def shard_loader(root: str | os.PathLike, split: str = "train", batch_size: int = 8, *, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False, num_workers: int = 0) -> torch.utils.data.DataLoader:
    """A ``torch.utils.data.DataLoader`` over :class:`ShardDataset` with a seeded shuffle.

    Batches are dicts ``{"text": Long[B, L], "text_valid": Bool[B, L], "frames": Long[B, T, h, w],
    "fps": Float[B], "index": Long[B]}``.
    """
    dataset = ShardDataset(root, split)
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                                       num_workers=num_workers, generator=generator)
