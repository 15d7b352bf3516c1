"""cogframe's pretrained-weights folder: sharded safetensors + ``config.yaml``.

Layout::

    config.yaml                          format, dtype, model kind, the model preset, provenance, recipe snippet
    model.safetensors.index.json         tensor name -> shard
    model-00001-of-0000N.safetensors     cogframe tensor names (the model's ``state_dict()``)

``config.yaml`` is written last, so a folder that has it is complete. Its ``model_kind``
(:mod:`cogframe.core.weights.model_kinds`) says which network the tensors belong to: ``cogvideo``
(``CogVideoTransformer``; absent in older folders) or ``super_resolution``
(``SuperResolutionTransformer``). :func:`load_pretrained` and :func:`load_super_resolution`
build the model the file describes and load the tensors after checking every name and shape.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import yaml

from cogframe.core.io.atomic import atomic_write_text
from cogframe.core.model.transformer import CogVideoTransformer
from cogframe.core.model.presets import build_model, model_config
from cogframe.core.weights import model_kinds
from cogframe.core.weights.sat_mapping import COGVIDEO, SUPER_RESOLUTION
from cogframe.core.weights.safe_load import check_finite, first_non_finite
from cogframe.core.weights.sharded_safetensors import INDEX_FILE, SHARD_PATTERN, iter_sharded, load_sharded, read_shapes, save_sharded
from cogframe.errors import ConfigError, DataError, ShapeError

__all__ = ["WEIGHTS_FORMAT", "CONFIG_FILE", "DTYPES", "WeightsInfo", "parse_dtype", "dtype_name",
           "expected_shapes", "check_state_dict", "shapes_of", "recipe_snippet", "matching_preset", "write_weights_folder",
           "read_weights_info", "load_weights", "load_pretrained", "load_super_resolution"]

WEIGHTS_FORMAT = "cogframe-weights"
CONFIG_FILE = "config.yaml"
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_dtype(name: str | torch.dtype) -> torch.dtype:
    """``"float32"``/``"bfloat16"``/``"float16"`` (or a torch dtype) -> torch dtype.

    Raises:
        ConfigError: Another name.
    """
    if isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise ConfigError(f"unknown dtype {name!r}; use one of {', '.join(DTYPES)}.")
    return DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float16`` -> ``"float16"``."""
    return str(dtype).removeprefix("torch.")


@dataclass
class WeightsInfo:
    """What ``config.yaml`` of a weights folder says.

    Attributes:
        path: The folder.
        dtype: Stored dtype of the floating-point tensors.
        model: The model preset dict (``core/presets.py`` format).
        preset: Name of the built-in preset the model equals, if any.
        source: Provenance (for a converted SAT checkpoint: its folder, iteration, dtype(s) and
            verbatim ``model_config.json``), or None.
        kind: ``"cogvideo"`` or ``"super_resolution"`` (:mod:`cogframe.core.weights.model_kinds`).
    """

    path: Path
    dtype: str
    model: dict[str, Any]
    preset: str | None = None
    source: dict[str, Any] | None = field(default=None)
    kind: str = COGVIDEO


def expected_shapes(model: Mapping[str, Any], kind: str = COGVIDEO) -> dict[str, tuple[int, ...]]:
    """Every tensor name and shape of the model a preset dict of ``kind`` describes (built on the meta device)."""
    net = model_kinds.build_on(model_kinds.typed_config(model, kind), kind, device="meta")
    return {name: tuple(t.shape) for name, t in net.state_dict().items()}


def check_state_dict(expected: Mapping[str, tuple[int, ...]], shapes: Mapping[str, tuple[int, ...]], *,
                     what: str, fix: str, unknown: list[str] | None = None,
                     name_of: Callable[[str], str] = lambda k: k) -> None:
    """Raises one error listing EVERY missing, unexpected and wrongly shaped tensor.

    Args:
        expected: Name -> shape the model needs.
        shapes: Name -> shape the checkpoint has (names on the model's side).
        what: The checkpoint, for the message.
        fix: What the user should do, put before the list.
        unknown: Checkpoint names that could not even be mapped to model names (reported as
            unexpected, by their checkpoint name).
        name_of: How to show a model-side name (e.g. add the SAT name next to it).

    Raises:
        DataError: Missing or unexpected tensors (shape problems are listed too).
        ShapeError: Only shape mismatches.
    """
    missing = [k for k in expected if k not in shapes]
    unexpected = list(unknown or []) + [name_of(k) for k in shapes if k not in expected]
    wrong = [f"{name_of(k)}: checkpoint {list(s)} vs model {list(expected[k])}"
             for k, s in shapes.items() if k in expected and tuple(s) != tuple(expected[k])]
    if not (missing or unexpected or wrong):
        return
    parts = []
    for title, items in (("missing tensors", [name_of(k) for k in missing]),
                         ("unexpected tensors", unexpected), ("wrong shapes", wrong)):
        if items:
            parts.append(f"{len(items)} {title}:\n" + "\n".join(f"  - {item}" for item in items))
    cls = ShapeError if not (missing or unexpected) else DataError
    raise cls(f"{what} does not match the model it describes. {fix}\n" + "\n".join(parts))


def shapes_of(tensors: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """Name -> shape of a state dict."""
    return {k: tuple(t.shape) for k, t in tensors.items()}


def matching_preset(model: Mapping[str, Any], kind: str = COGVIDEO) -> str | None:
    """Name of the built-in preset (of model kind ``kind``) with the same configuration as ``model``, or None."""
    return model_kinds.matching_preset(model, kind)


def _diff(base: Mapping[str, Any], model: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in model.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), Mapping):
            sub = _diff(base[key], value)
            if sub:
                out[key] = sub
        elif key not in base or base[key] != value:
            out[key] = copy.deepcopy(value)
    return out


def recipe_snippet(model: Mapping[str, Any], folder: str | Path, kind: str = COGVIDEO) -> dict[str, Any]:
    """The recipe ``model:`` section that builds ``model`` and loads the weights in ``folder``:
    a built-in preset (plus the overrides that differ from it) and ``weights``. A super-resolution
    model's section is nested under ``super_resolution:``, where a sample recipe's
    ``super_resolution`` stage reads it."""
    name = matching_preset(model, kind)
    node: dict[str, Any] = {"preset": name}
    if name is None:
        node["preset"] = model_kinds.default_preset(model, kind)
        base = model_kinds.presets_of(kind)[node["preset"]]
        overrides = _diff(base, model)
        if kind == SUPER_RESOLUTION and isinstance(overrides.get("backbone"), Mapping) and \
                model_config(dict(overrides["backbone"])) == model_config(base["backbone"]):
            del overrides["backbone"]  # a full dict of the preset's own backbone: nothing to override
        node["overrides"] = overrides
    node["weights"] = str(Path(folder).resolve())
    return {"super_resolution": {"model": node}} if kind == SUPER_RESOLUTION else {"model": node}


def _prepare_folder(folder: Path, overwrite: bool) -> None:
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{folder} exists and is not a folder; choose a folder for the weights.")
    entries = [p for p in folder.iterdir()] if folder.is_dir() else []
    if entries and not overwrite:
        raise DataError(f"{folder} is not empty; choose a new folder, or pass --overwrite (overwrite=True) "
                        "to replace a previous conversion there.")
    # Invalidate the old checkpoint first: an interrupted overwrite must not look complete.
    for name in (CONFIG_FILE, INDEX_FILE):
        (folder / name).unlink(missing_ok=True)
    folder.mkdir(parents=True, exist_ok=True)


def write_weights_folder(folder: str | Path, tensors: Mapping[str, torch.Tensor], *, model: Mapping[str, Any],
                         dtype: str | torch.dtype, max_shard_bytes: int,
                         source: Mapping[str, Any] | None = None, overwrite: bool = False,
                         kind: str = COGVIDEO) -> WeightsInfo:
    """Writes tensors (cogframe names) + ``config.yaml``; checks names and shapes first.

    ``kind`` is the model kind ``model`` describes (``"cogvideo"`` or ``"super_resolution"``).

    Raises:
        DataError/ShapeError: The tensors do not fit the model (every problem listed), or the
            folder is not empty and ``overwrite`` is False.
    """
    folder = Path(folder)
    dtype = parse_dtype(dtype)
    check_state_dict(expected_shapes(model, kind), shapes_of(tensors), what="the tensors to save",
                     fix="Save the state dict of the model this preset builds.")
    _prepare_folder(folder, overwrite)
    shards = save_sharded(folder, tensors, max_shard_bytes=max_shard_bytes, dtype=dtype,
                          metadata={"format": "pt", "producer": WEIGHTS_FORMAT})
    keep = {p.name for p in shards}
    for stale in folder.iterdir():  # shards of an overwritten conversion with another shard count
        if SHARD_PATTERN.match(stale.name) and stale.name not in keep:
            stale.unlink()
    info = WeightsInfo(folder, dtype_name(dtype), copy.deepcopy(dict(model)), matching_preset(model, kind),
                       copy.deepcopy(dict(source)) if source is not None else None, kind)
    atomic_write_text(folder / CONFIG_FILE, _config_yaml(info))
    return info


def _config_yaml(info: WeightsInfo) -> str:
    body = {
        "format": WEIGHTS_FORMAT,
        "version": 1,
        "dtype": info.dtype,
        "model_kind": info.kind,
        "preset": info.preset,
        "model": info.model,
        "source": info.source,
        # The `model:` section of a recipe that uses these weights (docs/official-weights.md).
        "recipe": recipe_snippet(info.model, info.path, info.kind),
    }
    header = ("# cogframe weights folder (written by `cogframe convert`). The tensors are in the\n"
              "# model-*.safetensors shards; `model` is the preset that builds the matching model.\n")
    return header + yaml.safe_dump(body, sort_keys=False, allow_unicode=True)


def read_weights_info(folder: str | Path) -> WeightsInfo:
    """Reads ``config.yaml`` of a weights folder.

    Raises:
        DataError: Missing/invalid ``config.yaml`` (the message says how to produce one).
    """
    folder = Path(folder)
    path = folder / CONFIG_FILE
    if not path.is_file():
        from cogframe.core.weights.sat_files import is_sat_folder  # only for the hint

        hint = (" It is a SwissArmyTransformer folder: convert it first with `cogframe convert sat "
                f"{folder} <dst>`." if is_sat_folder(folder) else
                " Produce one with `cogframe convert sat SAT_FOLDER DST` (an interrupted conversion "
                "leaves no config.yaml).")
        raise DataError(f"{path} is missing, so {folder} is not a cogframe weights folder.{hint}")
    try:
        body = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DataError(f"{path} is not valid YAML ({exc}); run `cogframe convert` again.") from None
    if not isinstance(body, dict) or body.get("format") != WEIGHTS_FORMAT or not isinstance(body.get("model"), dict):
        raise DataError(f"{path} is not a cogframe weights config (format {WEIGHTS_FORMAT!r} with a 'model' "
                        "section); run `cogframe convert` again.")
    kind = model_kinds.check_kind(str(body.get("model_kind", COGVIDEO)), where=str(path))
    return WeightsInfo(folder, str(body.get("dtype", "float32")), body["model"], body.get("preset"),
                       body.get("source"), kind)


_NON_FINITE_FIX = ("Convert the original checkpoint again (`cogframe convert`), or use weights from "
                   "before the run diverged.")


def load_weights(folder: str | Path) -> tuple[dict[str, torch.Tensor], WeightsInfo]:
    """The tensors (cogframe names, stored dtype, CPU) and the config of a weights folder.

    Raises:
        DataError: A missing/corrupt file, or a tensor holding NaN or infinity (named).
    """
    info = read_weights_info(folder)
    tensors = load_sharded(folder)
    for name, tensor in tensors.items():
        check_finite(name, tensor, what=f"weights folder {folder}", fix=_NON_FINITE_FIX)
    return tensors, info


def load_pretrained(folder: str | Path, *, dtype: str | torch.dtype = "float32",
                    device: str | torch.device = "cpu", overrides: Mapping[str, Any] | None = None,
                    spatial_attention=None, temporal_attention=None) -> CogVideoTransformer:
    """Builds the model a weights folder describes and loads its tensors (eval mode).

    Names and shapes are checked from the shard headers before any tensor is read; tensors are
    then read one at a time and cast/moved to ``dtype``/``device``, so the device only ever holds
    the model in its compute dtype.

    Args:
        folder: A folder written by :func:`write_weights_folder` (``cogframe convert``).
        dtype: Compute dtype; stored tensors are cast to it (float16 only on a GPU).
        device: Where the model lives.
        overrides: Preset fields to change (dropouts, layout fields the tensors allow ...).
        spatial_attention: Backend of the spatial channel (default: dense SDPA).
        temporal_attention: Backend of the temporal channel (default: dense SDPA).

    Raises:
        DataError/ShapeError: Missing, unexpected or wrongly shaped tensors, all listed; a tensor
            holding NaN or infinity (or overflowing ``dtype``), named.
        ConfigError: float16 on a CPU, or an unknown dtype.
    """
    dtype = _compute_dtype(dtype, device)
    info = _info_of_kind(folder, COGVIDEO)
    model = build_model(model_config(info.model, overrides), spatial_attention=spatial_attention,
                        temporal_attention=temporal_attention, device="meta")
    return _load_into(model, folder, dtype, device)


def load_super_resolution(folder: str | Path, *, dtype: str | torch.dtype = "float32",
                          device: str | torch.device = "cpu", overrides: Mapping[str, Any] | None = None,
                          base_attention=None, plus_attention=None):
    """Builds the direct super-resolution model a weights folder describes and loads its tensors (eval mode).

    The folder is one ``cogframe convert sat`` wrote from a ``cogview2-dsr`` SAT folder (or any
    folder of model kind ``super_resolution``). Loading works as :func:`load_pretrained`: names and
    shapes checked from the shard headers first, tensors read one at a time into ``dtype``.

    Args:
        folder: The weights folder.
        dtype: Compute dtype (float16 only on a GPU).
        device: Where the model lives.
        overrides: ``sr_model_config`` overrides (e.g. ``{"windows": {"border": "zero"}}``).
        base_attention: Backend of the text and low-res rows (default dense SDPA).
        plus_attention: Backend of the high-res rows (default dense SDPA; ``sr_local_window`` is
            the sparse one).

    Returns:
        A :class:`~cogframe.core.model.super_resolution.SuperResolutionTransformer` with its
        backbone frozen.

    Raises:
        DataError/ShapeError: Not a super-resolution folder, or missing, unexpected or wrongly
            shaped tensors, all listed; a non-finite tensor, named.
        ConfigError: float16 on a CPU, or an unknown dtype.
    """
    dtype = _compute_dtype(dtype, device)
    info = _info_of_kind(folder, SUPER_RESOLUTION)
    config = model_kinds.typed_config(info.model, SUPER_RESOLUTION, overrides)
    model = model_kinds.build_on(config, SUPER_RESOLUTION, device="meta", base_attention=base_attention,
                                 plus_attention=plus_attention)
    model = _load_into(model, folder, dtype, device)
    model.freeze_backbone()
    return model


def _compute_dtype(dtype: str | torch.dtype, device: str | torch.device) -> torch.dtype:
    dtype = parse_dtype(dtype)
    if dtype == torch.float16 and torch.device(device).type == "cpu":
        raise ConfigError("float16 compute is not supported on a CPU (slow and inaccurate); use "
                          "dtype float32 or bfloat16, or a GPU device.")
    return dtype


def _info_of_kind(folder: str | Path, kind: str) -> WeightsInfo:
    info = read_weights_info(folder)
    if info.kind != kind:
        where = ("a sample recipe's super_resolution.model section" if info.kind == SUPER_RESOLUTION
                 else "a model / stage1 / stage2 section")
        raise DataError(f"weights folder {folder} holds a {info.kind} model (config.yaml model_kind), not a "
                        f"{kind} model: load it with {model_kinds.loader_of(info.kind)}, i.e. from {where}.")
    return info


def _load_into(model: torch.nn.Module, folder: str | Path, dtype: torch.dtype,
               device: str | torch.device) -> torch.nn.Module:
    """Checks names and shapes against a meta-device ``model``, then assigns the folder's tensors."""
    check_state_dict(shapes_of(model.state_dict()), read_shapes(folder), what=f"weights folder {folder}",
                     fix="Re-run `cogframe convert`, or drop the overrides that change sizes.")
    state = {}
    for name, stored in iter_sharded(folder):
        tensor = stored.to(device=device, dtype=dtype if stored.is_floating_point() else stored.dtype)
        if first_non_finite(tensor) is not None:  # checked after the cast: it can overflow float16
            check_finite(name, stored, what=f"weights folder {folder}", fix=_NON_FINITE_FIX)
            raise DataError(f"weights folder {folder}: tensor '{name}' is finite as stored "
                            f"({dtype_name(stored.dtype)}) but overflows {dtype_name(dtype)}; sample "
                            "with dtype bfloat16 or float32.")
        state[name] = tensor
    model.load_state_dict(state, assign=True)
    return model.eval()
