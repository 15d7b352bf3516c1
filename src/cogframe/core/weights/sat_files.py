"""Reading and writing SwissArmyTransformer checkpoint folders (SAT training/model_io.py).

A SAT folder (as unzipped from the release, e.g. ``cogvideo-stage1/``)::

    model_config.json                  architecture (argparse values)
    latest                             an iteration number or "release"
    <latest>/mp_rank_00_model_states.pt   torch pickle; its key 'module' is the state dict

Other keys of the pickle (DeepSpeed's iteration counter, RNG states ...) are ignored. Pickles are
loaded with :func:`~cogframe.core.weights.safe_load.safe_torch_load`, so a file that would run code is
refused, never executed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from cogframe.core.io.atomic import atomic_path, atomic_write_json, atomic_write_text
from cogframe.core.weights.safe_load import safe_torch_load
from cogframe.errors import DataError

__all__ = ["SatCheckpoint", "LATEST_FILE", "CONFIG_FILE", "STATES_FILE", "read_sat_folder",
           "write_sat_folder", "is_sat_folder"]

LATEST_FILE = "latest"
CONFIG_FILE = "model_config.json"
STATES_FILE = "mp_rank_00_model_states.pt"
_LAYOUT_HELP = (f"A SwissArmyTransformer checkpoint folder holds {LATEST_FILE} (an iteration number or "
                f"'release'), <iteration>/{STATES_FILE} and {CONFIG_FILE}, as unzipped from the release "
                "(cogvideo-stage1.zip -> cogvideo-stage1/).")


@dataclass
class SatCheckpoint:
    """The contents of a SAT folder.

    Attributes:
        path: The folder.
        iteration: The text of ``latest`` (e.g. ``"1"`` or ``"release"``).
        config: The parsed ``model_config.json``.
        state_dict: SAT tensor names -> tensors (memory-mapped when the file allows it).
    """

    path: Path
    iteration: str
    config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]


def is_sat_folder(path: str | Path) -> bool:
    """Whether ``path`` looks like a SAT checkpoint folder (has a ``latest`` file)."""
    return (Path(path) / LATEST_FILE).is_file()


def _read_latest(folder: Path) -> str:
    latest = folder / LATEST_FILE
    if not latest.is_file():
        inside = sorted(p.name for p in folder.iterdir() if p.is_dir() and is_sat_folder(p)) if folder.is_dir() else []
        hint = f" It contains SAT folders {', '.join(inside)}: point at one of them." if inside else ""
        raise DataError(f"{folder} is not a SwissArmyTransformer checkpoint: there is no '{LATEST_FILE}' file "
                        f"in it.{hint} {_LAYOUT_HELP}")
    try:
        text = latest.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        raw = latest.read_bytes()[:40]
        raise DataError(f"{latest} is not text (it starts with bytes {raw!r}); it must hold an iteration "
                        f"number > 0 or 'release'. Write the name of the subfolder that holds {STATES_FILE} "
                        "into it, or unzip the release again.") from None
    if text != "release" and not (text.isdigit() and int(text) > 0):
        raise DataError(f"{latest} holds {text!r}; it must be an iteration number > 0 or 'release'. "
                        f"Write the name of the subfolder that holds {STATES_FILE} into it.")
    return text


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise DataError(f"{path} is missing; cogframe needs it to know the architecture. {_LAYOUT_HELP}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON ({exc}); restore it from the release zip.") from None
    if not isinstance(config, dict):
        raise DataError(f"{path} must hold a JSON object of model arguments; restore it from the release zip.")
    return config


def read_sat_folder(folder: str | Path, *, mmap: bool = True) -> SatCheckpoint:
    """Reads a SAT checkpoint folder (tensors memory-mapped when possible).

    Raises:
        DataError: A missing ``latest``/``model_config.json``/states file, an unreadable, corrupt or
            code-running pickle, or a pickle without a ``'module'`` state dict of tensors.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"SAT checkpoint folder {folder} does not exist; check the path. {_LAYOUT_HELP}")
    iteration = _read_latest(folder)
    states = folder / iteration / STATES_FILE
    if not states.is_file():
        others = sorted(p.name for p in (folder / iteration).glob("mp_rank_*_model_states.pt")) \
            if (folder / iteration).is_dir() else []
        hint = (f" Found {', '.join(others)}: model-parallel shards, which cogframe does not merge; merge "
                "them with SwissArmyTransformer first." if others else "")
        raise DataError(f"{states} is missing ('{LATEST_FILE}' says {iteration!r}).{hint} {_LAYOUT_HELP}")
    config = _read_config(folder)
    payload = safe_torch_load(states, what="SAT checkpoint", mmap=mmap)
    module = payload.get("module") if isinstance(payload, Mapping) else None
    if not isinstance(module, Mapping):
        keys = sorted(map(str, payload)) if isinstance(payload, Mapping) else type(payload).__name__
        raise DataError(f"{states} has no 'module' state dict (found {keys}); SAT stores the model's "
                        "tensors under 'module'. Is this a SwissArmyTransformer checkpoint?")
    not_tensors = sorted(k for k, v in module.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise DataError(f"{states}: 'module' entries {', '.join(not_tensors)} are not tensors; the "
                        "checkpoint is corrupt. Re-download it.")
    return SatCheckpoint(folder, iteration, config, dict(module))


def write_sat_folder(folder: str | Path, state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any],
                     *, iteration: str = "1") -> Path:
    """Writes a SAT checkpoint folder readable by SwissArmyTransformer's ``load_checkpoint``.

    Files are written atomically; ``latest`` goes last, so a folder with ``latest`` is complete.

    Returns:
        The path of the written states file.
    """
    folder = Path(folder)
    states = folder / iteration / STATES_FILE
    with atomic_path(states) as tmp:
        torch.save({"module": dict(state_dict)}, tmp)
    atomic_write_json(folder / CONFIG_FILE, dict(config))
    atomic_write_text(folder / LATEST_FILE, iteration)
    return states
