"""SwissArmyTransformer ``DsrModel`` configs <-> cogframe super-resolution presets, and which model a
SAT folder holds (:func:`sat_model_kind`).

The released ``cogview2-dsr`` folder is a SAT checkpoint of CogView2's direct super-resolution model
(arXiv 2204.14217; THUDM/CogView2 and THUDM/CogVideo ``sr_pipeline/dsr_model.py``): the CogView2
backbone (``transformer.*``) plus two mixins, ``extra_position_embedding`` and ``attention_plus``
(per-layer QKV + dense, no ``attn_distribution``). What its config means:

* ``layout`` = ``text_len, text_len + low-res tokens, text_len + low-res + high-res tokens``
  (``96,496,4096``: 96 text slots, a 20x20 grid and a 60x60 grid, so scale 3).
* ``kernel_size`` ``k``: the high-res window is ``(2k - 1) x k`` (``f_similar(q1, k1,
  kernel_size*2-1, kernel_size, False)``); ``kernel_size2`` ``k2``: the low-res window ``k2 x k2``.
* ``new_sequence_length - max_sequence_length`` sizes the extra position table: one row per
  high-res cell (4624 - 1024 = 3600).

The release's inference class (``DirectSuperResolution`` in ``sr_pipeline/direct_sr.py``) sets
``kernel_size``, ``kernel_size2``, ``new_sequence_length`` and ``layout`` in code, whatever
``model_config.json`` holds: :class:`DsrSatFacts` keeps those values, and the reader uses them
where the config lacks a key (a config cogframe writes always has them). ``new_sequence_length``
is not read at all: the extra table has one row per high-res cell of ``layout``, and the tensor
shape check names any checkpoint whose table disagrees. Other release constants live in its
sampling code (``dsr_sampling.py``: low-res cell ``p`` at position ``513 + p``, high-res cell ``j``
at ``1024 + j``) and are cogframe-only config keys when a model differs from them.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from cogframe.core.model.config import ModelConfig
from cogframe.core.model.sr_config import sr_model_config
from cogframe.core.weights.sat_mapping import (
    COGVIDEO,
    SUPER_RESOLUTION,
    preset_from_sat_config,
    sat_config_from_preset,
)
from cogframe.errors import CogframeError, DataError

__all__ = ["DsrSatFacts", "DSR_MODEL_CLASS", "sat_model_kind", "sr_preset_from_sat_config",
           "sat_config_from_sr_preset", "preset_dict"]

DSR_MODEL_CLASS = "DsrModel"
"""SAT's class of the direct super-resolution model (``sr_pipeline/dsr_model.py``)."""


@dataclass(frozen=True)
class DsrSatFacts:
    """Values the release's DSR code sets in code instead of reading ``model_config.json``."""

    layout: tuple[int, int, int] = (96, 496, 4096)  # direct_sr.py: args.layout = [96,496,4096]
    kernel_size: int = 5  # direct_sr.py: args.kernel_size = 5
    kernel_size2: int = 5  # direct_sr.py: args.kernel_size2 = 5
    lowres_position_shift: int = 1  # dsr_sampling.py: low-res positions arange(513, ...), frames at 512
    backbone_text_len: int = 64  # CogView2's text-to-image layout (the backbone's own; no DSR tensor depends on it)
    border: str = "mask"  # the local-attention CUDA kernel scores out-of-grid keys -10000
    add_scalar: float = 0.0  # DsrModel.attention_forward: kw_args.get('add_scalar', 0); the pipeline passes none
    lowres: str = "bidirectional"  # dsr_sampling.py: attention_mask[:layout[0], layout[0]:] = 0 is the only cut


_FACTS = DsrSatFacts()
# Keys of a DSR model_config.json that describe the DSR part, not the backbone.
_DSR_KEYS = ("layout", "kernel_size", "kernel_size2", "new_sequence_length", "backbone_text_len",
             "lowres_position_shift", "local_border", "add_scalar", "lowres_attention")


# ================================================================================== kind
def sat_model_kind(sat_cfg: Mapping[str, Any], keys: Iterable[str], *,
                   source: str = "model_config.json") -> str:
    """Which cogframe model a SAT checkpoint holds: ``"super_resolution"`` or ``"cogvideo"``.

    DSR when ``model_class`` names ``DsrModel``, or, for a config without a class or stage, when
    the config has DSR arguments (``kernel_size2``) or the tensors have ``attention_plus`` /
    ``extra_position_embedding`` mixins but no ``attn_distribution`` (CogVideo's mixing weights).

    Raises:
        DataError: The config says both DSR (``model_class``) and CogVideo (``cogvideo_stage``).
    """
    model_class = str(sat_cfg.get("model_class") or "")
    dsr_class = "dsr" in model_class.lower()
    stage = sat_cfg.get("cogvideo_stage")
    if dsr_class and stage is not None:
        raise DataError(f"{source} says model_class {model_class!r} (CogView2 direct super-resolution) but "
                        f"also cogvideo_stage {stage!r} (a CogVideo stage); one checkpoint is one model. "
                        "Use the model_config.json shipped with this checkpoint.")
    if dsr_class:
        return SUPER_RESOLUTION
    if stage is not None:
        return COGVIDEO
    if sat_cfg.get("kernel_size2") is not None:
        return SUPER_RESOLUTION
    keys = list(keys)
    plus = any(k.startswith(("mixins.attention_plus.", "mixins.extra_position_embedding.")) for k in keys)
    alpha = any(k.startswith("mixins.attention_plus.attn_distribution.") for k in keys)
    return SUPER_RESOLUTION if plus and not alpha else COGVIDEO


# ================================================================================== SAT -> cogframe
def _layout(value: Any, source: str) -> tuple[int, int, int]:
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        text_len, low_end, high_end = (int(str(p).strip()) for p in parts)
    except ValueError:
        raise DataError(f"{source}: DSR layout {value!r} is not three integers 'text_len, text_len + "
                        "low-res tokens, text_len + low-res + high-res tokens' (the release: "
                        "'96,496,4096'); fix model_config.json.") from None
    low, high = low_end - text_len, high_end - low_end
    low_side, high_side = math.isqrt(max(low, 0)), math.isqrt(max(high, 0))
    if (text_len < 0 or low <= 0 or high <= 0 or low_side ** 2 != low or high_side ** 2 != high
            or high_side % low_side):
        raise DataError(f"{source}: DSR layout {value!r} does not describe a square low-res grid and a "
                        "square high-res grid a whole number of times larger (the release: 96 text "
                        "slots, 20x20 -> 60x60 = '96,496,4096'); fix model_config.json.")
    return text_len, low_side, high_side // low_side


def _positive(sat_cfg: Mapping[str, Any], key: str, default: int, source: str) -> int:
    value = sat_cfg.get(key, default)
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1:
        raise DataError(f"{source}: {key} is {value!r}; it must be a positive integer (the release: "
                        f"{default}). Fix model_config.json.")
    return number


def sr_preset_from_sat_config(sat_cfg: Mapping[str, Any], *, image_vocab_size: int | None = None,
                              source: str = "model_config.json") -> dict[str, Any]:
    """A cogframe super-resolution preset dict (``sr_model_config`` format) from a ``DsrModel`` config.

    The backbone (the architecture keys: layers, hidden size, heads, vocabulary, position table,
    dropouts) is read as a CogView2 text-to-image config by
    :func:`~cogframe.core.weights.sat_mapping.preset_from_sat_config`, on the low-res grid; the
    DSR layout and windows come from ``layout``/``kernel_size``/``kernel_size2`` (the release's
    values where absent, see :class:`DsrSatFacts`).

    Raises:
        DataError: A missing architecture key, an unreadable layout, non-positive kernels, a
            ``cogvideo_stage`` key, or sizes that do not fit together.
    """
    if sat_cfg.get("cogvideo_stage") is not None:
        raise DataError(f"{source} has cogvideo_stage: it is a CogVideo stage, not a DSR model.")
    text_len, side, scale = _layout(sat_cfg.get("layout", list(_FACTS.layout)), source)
    k = _positive(sat_cfg, "kernel_size", _FACTS.kernel_size, source)
    k2 = _positive(sat_cfg, "kernel_size2", _FACTS.kernel_size2, source)
    bt = int(sat_cfg.get("backbone_text_len", _FACTS.backbone_text_len))
    backbone_cfg = {key: v for key, v in sat_cfg.items() if key not in _DSR_KEYS}
    # The backbone's own layout: one frame of the low-res grid (the extra positions tile it).
    backbone_cfg["layout"] = f"{bt}, {bt + side * side}, {bt + side * side}"
    backbone = preset_from_sat_config(backbone_cfg, image_vocab_size=image_vocab_size, source=source)
    preset = {
        "backbone": backbone,
        "layout": {"text_len": text_len, "low_height": side, "low_width": side, "scale": scale,
                   "lowres_position_shift": int(sat_cfg.get("lowres_position_shift",
                                                            _FACTS.lowres_position_shift))},
        "windows": {"high": [2 * k - 1, k], "low": [k2, k2],
                    "border": str(sat_cfg.get("local_border", _FACTS.border)),
                    "add_scalar": float(sat_cfg.get("add_scalar", _FACTS.add_scalar)),
                    "lowres": str(sat_cfg.get("lowres_attention", _FACTS.lowres))},
    }
    try:
        sr_model_config(preset)
    except CogframeError as exc:
        raise DataError(f"{source}: the DSR configuration does not fit together ({exc}); fix "
                        "model_config.json.") from None
    return preset


# ================================================================================== cogframe -> SAT
def preset_dict(config: ModelConfig) -> dict[str, Any]:
    """The preset dict (``model_config`` format) of a typed :class:`ModelConfig`."""
    out = dataclasses.asdict(config)
    out["stage"] = config.stage.value
    out["temporal"] = {key: (list(v) if isinstance(v, tuple) else v) for key, v in out["temporal"].items()}
    return out


def _full_sr_preset(preset: Mapping[str, Any]) -> tuple[dict[str, Any], Any]:
    config = sr_model_config(copy.deepcopy(dict(preset)))
    return preset_dict(config.backbone), config


def sat_config_from_sr_preset(preset: Mapping[str, Any]) -> dict[str, Any]:
    """A SAT ``DsrModel`` ``model_config.json`` for a super-resolution preset dict (the inverse of
    :func:`sr_preset_from_sat_config`).

    Raises:
        DataError: Windows SAT's DSR code cannot express: a high-res window that is not
            ``(2k - 1) x k``, or a low-res window that is not square.
    """
    backbone, config = _full_sr_preset(preset)
    layout, windows = config.layout, config.windows
    rows, cols = windows.high
    if rows != 2 * cols - 1:
        raise DataError(f"SAT's DsrModel has a (2k-1) x k high-res window (kernel_size k); this model's is "
                        f"{rows}x{cols}, so it cannot be written as a SAT checkpoint.")
    if windows.low[0] != windows.low[1]:
        raise DataError(f"SAT's DsrModel has a square low-res window (kernel_size2); this model's is "
                        f"{windows.low[0]}x{windows.low[1]}, so it cannot be written as a SAT checkpoint.")
    if layout.low_height != layout.low_width:
        raise DataError("SAT's DsrModel needs a square low-res grid; this model cannot be written as a SAT "
                        "checkpoint.")
    out = sat_config_from_preset(backbone)
    bt = int(backbone["layout"]["text_len"])
    out["model_class"] = DSR_MODEL_CLASS
    out["layout"] = f"{layout.text_len}, {layout.high_start}, {layout.seq_len}"
    out["kernel_size"], out["kernel_size2"] = int(cols), int(windows.low[0])
    out["new_sequence_length"] = layout.base_position_rows + layout.high_tokens
    # cogframe-only keys where the model differs from the release (SAT copies unknown keys onto its args).
    if bt != _FACTS.backbone_text_len:
        out["backbone_text_len"] = bt
    if layout.lowres_position_shift != _FACTS.lowres_position_shift:
        out["lowres_position_shift"] = layout.lowres_position_shift
    if windows.border.value != _FACTS.border:
        out["local_border"] = windows.border.value
    if windows.add_scalar != _FACTS.add_scalar:
        out["add_scalar"] = windows.add_scalar
    if windows.lowres != _FACTS.lowres:
        out["lowres_attention"] = windows.lowres
    return out
