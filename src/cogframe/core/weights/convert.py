"""Converting the released SwissArmyTransformer checkpoints to cogframe weights and back.

``SAT folder -> cogframe`` (:func:`sat_to_cogframe`):

1. read ``latest``, ``<it>/mp_rank_00_model_states.pt`` (safely, memory-mapped) and
   ``model_config.json`` (:mod:`cogframe.core.weights.sat_files`);
2. tell which model it is (:func:`~cogframe.core.weights.sat_sr_config.sat_model_kind`: CogView2 /
   CogVideo stage, or CogView2's direct super-resolution model ``cogview2-dsr``), turn the config
   into a preset dict (:mod:`cogframe.core.weights.sat_mapping`,
   :mod:`cogframe.core.weights.sat_sr_config`) and the names through the one table
   :data:`~cogframe.core.weights.sat_mapping.SAT_KEY_TABLE`, in that model's column;
3. check every name and shape against the model that preset builds, listing all problems;
4. write sharded safetensors in the requested dtype + ``config.yaml`` recording the source dtype(s)
   and the verbatim ``model_config.json`` (:mod:`cogframe.core.weights.pretrained`).

``cogframe -> SAT folder`` (:func:`cogframe_to_sat`) inverts it. Values are never changed except
by the dtype cast, and float16/bfloat16 -> float32 -> back is exact, so SAT -> cogframe -> SAT
reproduces every tensor bit for bit.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cogframe.core.weights.sat_mapping import (
    SUPER_RESOLUTION,
    cogframe_to_sat_key,
    preset_from_sat_config,
    rename_keys,
    sat_config_from_preset,
)
from cogframe.core.weights.sat_sr_config import sat_config_from_sr_preset, sat_model_kind, sr_preset_from_sat_config
from cogframe.core.weights.sat_files import read_sat_folder, write_sat_folder
from cogframe.core.weights.sharded_safetensors import iter_sharded, parse_size, read_shapes
from cogframe.core.weights.pretrained import (
    WeightsInfo,
    check_state_dict,
    dtype_name,
    expected_shapes,
    parse_dtype,
    read_weights_info,
    shapes_of,
    write_weights_folder,
)
from cogframe.errors import ConfigError, DataError

__all__ = ["ConversionResult", "sat_to_cogframe", "cogframe_to_sat", "DEFAULT_SHARD_SIZE"]

DEFAULT_SHARD_SIZE = "2GB"
_OUTPUT_DTYPES = ("float32", "bfloat16")


@dataclass
class ConversionResult:
    """What a conversion wrote.

    Attributes:
        destination: The written folder.
        tensors: Number of tensors.
        parameters: Number of values over all tensors.
        dtype: Dtype of the written floating-point tensors (``"mixed"`` if they differ).
        preset: Built-in preset the model equals, if any.
        kind: The model kind (``"cogvideo"`` or ``"super_resolution"``).
    """

    destination: Path
    tensors: int
    parameters: int
    dtype: str
    preset: str | None = None
    kind: str = "cogvideo"


def _source_dtypes(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    counts = Counter(dtype_name(t.dtype) for t in state.values())
    if len(counts) == 1:
        return {"dtype": next(iter(counts))}
    return {"dtype": "mixed", "tensor_dtypes": {k: dtype_name(t.dtype) for k, t in state.items()}}


def sat_to_cogframe(src: str | Path, dst: str | Path, *, dtype: str = "float32",
                    shard_size: str | int = DEFAULT_SHARD_SIZE, image_vocab_size: int | None = None,
                    overwrite: bool = False) -> ConversionResult:
    """Converts a SAT checkpoint folder (CogView2 text-to-image, CogVideo stage 1 or 2, CogView2-DSR).

    Args:
        src: The SAT folder (``latest``, ``<it>/mp_rank_00_model_states.pt``, ``model_config.json``).
        dst: The cogframe weights folder to write (must be empty unless ``overwrite``).
        dtype: ``float32`` (default; fp16 checkpoints are widened exactly) or ``bfloat16``.
        shard_size: Maximum bytes per safetensors shard (``"2GB"``, ``"500MB"``, an int).
        image_vocab_size: Image ids in the vocabulary (default: icetk's 20000).
        overwrite: Replace a previous conversion in ``dst``.

    Raises:
        DataError: Unreadable/unsafe/corrupt files, missing or unexpected tensors (all listed).
        ShapeError: Tensors whose shapes disagree with ``model_config.json`` (all listed).
        ConfigError: Bad ``dtype`` or ``shard_size``.
    """
    if dtype not in _OUTPUT_DTYPES:
        raise ConfigError(f"--dtype {dtype!r} is not supported for converted weights; use float32 (exact) "
                          "or bfloat16 (half the size). float16 is not offered because cogframe never "
                          "computes in float16 on a CPU.")
    max_bytes = parse_size(shard_size)
    src, dst = Path(src), Path(dst)
    sat = read_sat_folder(src)
    config_path = str(src / "model_config.json")
    kind = sat_model_kind(sat.config, sat.state_dict, source=config_path)
    read_preset = sr_preset_from_sat_config if kind == SUPER_RESOLUTION else preset_from_sat_config
    preset = read_preset(sat.config, image_vocab_size=image_vocab_size, source=config_path)
    names, unknown = rename_keys(sat.state_dict, to="cogframe", kind=kind)
    tensors = {names[k]: t for k, t in sat.state_dict.items() if k in names}
    model = ("a CogView2 direct super-resolution model (DsrModel)" if kind == SUPER_RESOLUTION
             else "a CogView2 / CogVideo model")
    fields = ("layers, hidden size, layout, kernel_size, kernel_size2" if kind == SUPER_RESOLUTION
              else "layers, hidden size, stage, layout, additional_seqlen")
    check_state_dict(
        expected_shapes(preset, kind), shapes_of(tensors),
        unknown=[f"{k} (no row of SAT_KEY_TABLE matches {model})" for k in unknown],
        name_of=lambda k: f"{cogframe_to_sat_key(k, kind) or k} (cogframe {k})",
        what=f"SAT checkpoint {src} ({model}, read from model_config.json and the tensor names)",
        fix=f"Check that model_config.json belongs to this checkpoint ({fields}) and that the folder is one "
            "of cogview2 / cogvideo-stage1 / cogvideo-stage2 / cogview2-dsr, unzipped whole.",
    )
    source = {"kind": "sat", "path": str(src.resolve()), "iteration": sat.iteration,
              **_source_dtypes(sat.state_dict), "model_config": sat.config}
    info = write_weights_folder(dst, tensors, model=preset, dtype=dtype, max_shard_bytes=max_bytes,
                                source=source, overwrite=overwrite, kind=kind)
    return _result(dst, tensors, dtype, info, kind)


def _result(dst: Path, tensors: dict[str, torch.Tensor], dtype: str, info: WeightsInfo | None,
            kind: str) -> ConversionResult:
    return ConversionResult(dst, len(tensors), sum(t.numel() for t in tensors.values()), dtype,
                            info.preset if info is not None else None, kind)


def cogframe_to_sat(src: str | Path, dst: str | Path, *, dtype: str | None = None,
                    overwrite: bool = False) -> ConversionResult:
    """Writes a cogframe weights folder as a SAT folder (``latest`` = ``1``).

    Args:
        src: A cogframe weights folder.
        dst: The SAT folder to write (must be empty unless ``overwrite``).
        dtype: Dtype of the SAT tensors; default: the dtype(s) of the SAT checkpoint this folder was
            converted from (bit-exact round trip), else the stored dtype.
        overwrite: Replace an existing SAT checkpoint in ``dst``.

    Raises:
        DataError: Unreadable folder, or ``dst`` not empty without ``overwrite``.
        ConfigError: Unknown ``dtype``; the model cannot be expressed as a SAT config.
    """
    src, dst = Path(src), Path(dst)
    info = read_weights_info(src)
    kind = info.kind
    check_state_dict(expected_shapes(info.model, kind), read_shapes(src), what=f"weights folder {src}",
                     fix="Re-run `cogframe convert sat` to rebuild it.")
    source = info.source if (info.source or {}).get("kind") == "sat" else None
    to_sat_config = sat_config_from_sr_preset if kind == SUPER_RESOLUTION else sat_config_from_preset
    config = source["model_config"] if source else to_sat_config(info.model)
    if dst.is_dir() and any(dst.iterdir()) and not overwrite:
        raise DataError(f"{dst} is not empty; choose a new folder, or pass --overwrite to replace it.")
    state: dict[str, torch.Tensor] = {}
    for name, tensor in iter_sharded(src):  # one tensor at a time: only the SAT copy is kept
        key = cogframe_to_sat_key(name, kind)
        target = parse_dtype(dtype) if dtype is not None else _original_dtype(source, key, tensor)
        state[key] = tensor.to(target) if tensor.is_floating_point() else tensor
    write_sat_folder(dst, state, config)
    names = {dtype_name(t.dtype) for t in state.values()}
    return _result(dst, state, names.pop() if len(names) == 1 else "mixed", None, kind)


def _original_dtype(source: dict[str, Any] | None, key: str, tensor: torch.Tensor) -> torch.dtype:
    if source is None:
        return tensor.dtype
    if source.get("dtype") == "mixed":
        return parse_dtype(source["tensor_dtypes"].get(key, dtype_name(tensor.dtype)))
    return parse_dtype(source["dtype"])
