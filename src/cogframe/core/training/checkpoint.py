"""Training checkpoints: safetensors weights and optimizer state, JSON trainer state, atomically.

Layout of one checkpoint (a folder that appears under its final name only when complete)::

    <run>/checkpoints/step_00000100/
        model.safetensors       every parameter and buffer, by name
        optimizer.safetensors   optimizer tensors, keyed "<param name>/<state key>"
        rng.safetensors         torch RNG states (CPU and every CUDA device)
        trainer.json            step, optimizer hyper-parameters, scheduler, Python/NumPy RNG,
                                metrics and the resolved recipe
    <run>/checkpoints/latest    name of the newest complete checkpoint

The folder is written as ``.step_00000100.tmp`` and renamed when every file is fsynced, so a
crash at any moment leaves either the previous state or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from cogframe.core.io.atomic import atomic_path, atomic_write_text, fsync_dir
from cogframe.core.weights.safe_load import check_finite
from cogframe.errors import DataError

__all__ = [
    "TrainerState",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "list_checkpoints",
    "load_model_weights",
    "save_model_weights",
    "checkpoint_paths",
    "python_rng_state",
    "restore_rng_state",
    "rng_state_tensors",
    "staging_dir",
    "publish_checkpoint",
]

_STEP_DIR = re.compile(r"^step_(\d{8})$")


@dataclass
class TrainerState:
    """Everything besides tensors that a resumed run needs."""

    step: int
    scheduler: dict[str, Any]
    metrics: dict[str, Any]
    recipe: dict[str, Any]


# ----------------------------------------------------------------------------------- weights
def save_model_weights(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor],
                       metadata: Mapping[str, str] | None = None) -> None:
    """Write tensors to one safetensors file atomically (contiguous CPU copies)."""
    plain = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    # A unique temporary name (not a fixed ".name.tmp"): two writers never share one.
    with atomic_path(path) as tmp:
        save_file(plain, str(tmp), metadata=dict(metadata or {}))


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        _refuse_sharded(path.parent)
        raise DataError(f"checkpoint file {path} is missing; the checkpoint is incomplete (a file "
                        f"was removed after it was written). Move {path.parent} aside to resume "
                        "from an earlier checkpoint, or restore the file from a backup.")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(f"weights file {path} is corrupt or truncated ({exc}). Restore it, resume "
                        "from an earlier checkpoint, or retrain.") from None


def _refuse_sharded(folder: Path) -> None:
    """A sharded (FSDP2) checkpoint read as a single-process one: say how to read it instead."""
    try:
        trainer = json.loads((folder / "trainer.json").read_text())
    except (OSError, ValueError):
        return
    if isinstance(trainer, dict) and trainer.get("format") == "dcp":
        world = trainer.get("world_size", "N")
        raise DataError(
            f"{folder} is a sharded checkpoint written by {world} processes (FSDP2); it holds no "
            f"model.safetensors and is not damaged. Resume it with the same number of processes "
            f"(`cogframe run --nproc {world} RECIPE resume=true`), or merge it into one file with "
            f"`cogframe consolidate {folder} OUT.safetensors` and start a new run from that.")


def load_model_weights(model: torch.nn.Module, path: str | os.PathLike, *,
                       strict: bool = True) -> None:
    """Load a safetensors file into ``model``, refusing any key or shape mismatch.

    Raises:
        DataError: naming the file and the first mismatching key with both shapes.
    """
    path = Path(path)
    tensors = _read_safetensors(path)
    own = model.state_dict()
    for name, value in own.items():
        if name not in tensors:
            if strict:
                raise DataError(f"checkpoint {path} has no tensor '{name}' that the model needs "
                                "(was it saved from a different preset or stage?).")
            continue
        if tuple(tensors[name].shape) != tuple(value.shape):
            raise DataError(
                f"checkpoint {path} does not match the model: '{name}' has shape "
                f"{tuple(tensors[name].shape)} in the file but {tuple(value.shape)} in the model. "
                "Use the same preset and overrides as the run that wrote it."
            )
    extra = sorted(set(tensors) - set(own))
    if extra and strict:
        raise DataError(f"checkpoint {path} has tensors the model lacks, first '{extra[0]}' "
                        f"({len(extra)} in all); it was written by a different model.")
    for name in own:
        if name in tensors:
            check_finite(name, tensors[name], what=f"weights file {path}",
                         fix="Use a checkpoint from before the run diverged, or retrain.")
    with torch.no_grad():
        for name, value in own.items():
            if name in tensors:
                value.copy_(tensors[name])


# ----------------------------------------------------------------------------------- RNG
def rng_state_tensors() -> dict[str, torch.Tensor]:
    """This process's torch RNG states (CPU and every CUDA device) as named tensors."""
    states = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            states[f"torch_cuda_{i}"] = s
    return states


def python_rng_state() -> dict[str, Any]:
    """Python and NumPy RNG states as JSON-ready values."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
    }


def restore_rng_state(tensors: Mapping[str, torch.Tensor], state: Mapping[str, Any]) -> None:
    """Inverse of :func:`rng_state_tensors` and :func:`python_rng_state`."""
    torch.set_rng_state(tensors["torch_cpu"])
    if torch.cuda.is_available():
        cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


# ----------------------------------------------------------------------------------- optimizer
def _optimizer_tensors(optimizer: torch.optim.Optimizer, names: list[str]) -> tuple[dict, list]:
    """Split an optimizer state into named tensors and JSON-able param-group settings."""
    sd = optimizer.state_dict()
    tensors = {}
    for index, state in sd["state"].items():
        for key, value in state.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"{names[index]}/{key}"] = t
    groups = [{k: v for k, v in g.items() if k != "params"} | {"params": g["params"]}
              for g in sd["param_groups"]]
    return tensors, groups


def _restore_optimizer(optimizer: torch.optim.Optimizer, names: list[str],
                       tensors: Mapping[str, torch.Tensor], groups: list, path: Path) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    index_of = {n: i for i, n in enumerate(names)}
    for key, value in tensors.items():
        name, _, field = key.rpartition("/")
        if name not in index_of:
            raise DataError(f"optimizer state in {path} is for parameter '{name}', which this "
                            "run does not train (different stage, or freezing changed).")
        state.setdefault(index_of[name], {})[field] = value
    sd = {"state": state, "param_groups": groups}
    try:
        optimizer.load_state_dict(sd)
    except (ValueError, KeyError) as exc:
        raise DataError(f"optimizer state in {path} does not fit this run ({exc}).") from None


# ----------------------------------------------------------------------------------- folders
def list_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """Complete checkpoints in ``directory``, oldest first (temporary folders are ignored)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and _STEP_DIR.match(p.name)]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))


def latest_checkpoint(directory: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    found = list_checkpoints(directory)
    return found[-1] if found else None


def save_checkpoint(
    directory: str | os.PathLike,
    *,
    model_state: Mapping[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    param_names: list[str],
    state: TrainerState,
    keep_last: int | None = None,
) -> Path:
    """Write one checkpoint atomically and prune old ones.

    Args:
        directory: ``<run>/checkpoints``.
        model_state: Tensors to save as the model's weights (usually ``model.state_dict()``).
        optimizer: The optimizer; its per-parameter state is keyed by ``param_names``.
        param_names: Name of each optimizer parameter, in optimizer order.
        state: Step, scheduler, metrics and resolved recipe.
        keep_last: Keep only this many newest checkpoints (None: keep all).

    Returns:
        The final checkpoint folder.
    """
    tmp, final = staging_dir(directory, state.step)
    opt_tensors, groups = _optimizer_tensors(optimizer, param_names)
    save_file({k: v.detach().cpu().contiguous() for k, v in model_state.items()},
              str(tmp / "model.safetensors"))
    save_file({k: v.detach().cpu().contiguous() for k, v in opt_tensors.items()},
              str(tmp / "optimizer.safetensors"))
    save_file(rng_state_tensors(), str(tmp / "rng.safetensors"))
    trainer = {
        "step": state.step,
        "scheduler": state.scheduler,
        "metrics": state.metrics,
        "recipe": state.recipe,
        "optimizer_groups": groups,
        "param_names": param_names,
        "rng": python_rng_state(),
    }
    (tmp / "trainer.json").write_text(json.dumps(trainer, indent=1, default=_json_default))
    return publish_checkpoint(tmp, final, keep_last)


def checkpoint_paths(directory: str | os.PathLike, step: int) -> tuple[Path, Path]:
    """``(staging folder, final folder)`` of checkpoint ``step`` in ``directory``."""
    final = Path(directory) / f"step_{step:08d}"
    return final.with_name(f".{final.name}.tmp"), final


def staging_dir(directory: str | os.PathLike, step: int) -> tuple[Path, Path]:
    """Create a fresh staging folder for checkpoint ``step``; return it and the final name."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    tmp, final = checkpoint_paths(directory, step)
    if tmp.exists():  # a leftover of a crashed save
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp, final


def publish_checkpoint(tmp: Path, final: Path, keep_last: int | None) -> Path:
    """Make a fully written staging folder the checkpoint ``final``, atomically; prune old ones.

    Every file is fsynced before the rename, so the folder appears under its final name only
    when complete; ``latest`` is updated afterwards.
    """
    for f in tmp.rglob("*"):
        if f.is_file():
            _fsync(f)
    fsync_dir(tmp)
    if final.exists():
        # A re-run reaching the same step: move the old folder aside first, so a crash at any
        # moment leaves one complete step_N (old or new) under its name, never none.
        trash = final.with_name(f".{final.name}.old")
        if trash.exists():
            shutil.rmtree(trash)
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)
    fsync_dir(final.parent)
    atomic_write_text(final.parent / "latest", final.name + "\n")
    if keep_last:
        for old in list_checkpoints(final.parent)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    param_names: list[str] | None = None,
    restore_rng: bool = True,
) -> TrainerState:
    """Restore model weights, optimizer state and RNG from a checkpoint folder.

    Raises:
        DataError: a missing or corrupt file, or weights that do not fit the model (the message
            names the file and the first mismatching key and shapes).
    """
    path = Path(path)
    trainer_file = path / "trainer.json"
    try:
        trainer = json.loads(trainer_file.read_text())
    except FileNotFoundError:
        raise DataError(f"{trainer_file} is missing: {path} is not a complete cogframe "
                        "checkpoint.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{trainer_file} is corrupt ({exc}); move {path} aside to resume from an "
                        "earlier checkpoint.") from None
    _refuse_sharded(path)
    if model is not None:
        load_model_weights(model, path / "model.safetensors")
    if optimizer is not None:
        names = param_names or trainer["param_names"]
        if list(names) != list(trainer["param_names"]):
            raise DataError(f"{path} was written for other trainable parameters than this run "
                            "has; resume with the same recipe.")
        _restore_optimizer(optimizer, names, _read_safetensors(path / "optimizer.safetensors"),
                           trainer["optimizer_groups"], path)
    if restore_rng:
        restore_rng_state(_read_safetensors(path / "rng.safetensors"), trainer["rng"])
    return TrainerState(trainer["step"], trainer["scheduler"], trainer["metrics"], trainer["recipe"])


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if torch.is_tensor(obj):
        return obj.tolist()
    raise TypeError(f"cannot store {type(obj).__name__} in trainer.json")
