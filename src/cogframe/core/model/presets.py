"""Named model sizes and the one generic builder.

The numbers of the paper live here (and in recipes) only. A preset is a plain nested dict so a
recipe can override any field (``model.overrides.num_layers=2``,
``model.overrides.layout.frames=3``) before :func:`model_config` turns it into a typed
:class:`~cogframe.core.model.transformer.ModelConfig`.
"""

from __future__ import annotations

import copy
import difflib
from typing import Any, Mapping

import torch

from cogframe.core.model.layout import TokenLayout
from cogframe.core.model.masks import TemporalConfig
from cogframe.core.model.transformer import CogVideoTransformer, ModelConfig
from cogframe.errors import ConfigError

__all__ = ["PRESETS", "preset_names", "model_config", "build_model"]

# CogView2 6B as used inside CogVideo (THUDM/CogVideo scripts/*.sh): 48 x 3072, 48 heads, tied 150010 vocab,
# 20000 image ids, 1024 base positions with frames starting at position 512.
_COGVIEW2_6B: dict[str, Any] = {
    "num_layers": 48,
    "hidden_size": 3072,
    "num_heads": 48,
    "vocab_size": 150010,
    "image_vocab_size": 20000,
    "stage": "text_to_image",
    "temporal": {"window": None, "shift": None, "temporal_extent": None},
    "layout": {
        "text_len": 64,
        "frames": 1,
        "frame_height": 20,
        "frame_width": 20,
        "image_position_offset": 512,
        "base_position_rows": 1024,
        "extra_position_rows": 0,
    },
}


def _video(base: dict, **changes: Any) -> dict:
    """A video preset: the backbone of ``base`` plus CogVideo's layout and temporal channel."""
    preset = copy.deepcopy(base)
    preset["layout"].update(changes.pop("layout", {}))
    preset["temporal"].update(changes.pop("temporal", {}))
    preset.update(changes)
    return preset


# Each stage adds 2000 extra positions (5 frames x 400 tokens) and a temporal channel
# (THUDM/CogVideo models/cogvideo_model.py). The released stage-1 model uses full causal temporal attention; stage 2 uses
# 10x10 windows shifted by 5 on odd layers (--window-size -1 / 10 in the release's scripts).
_COGVIDEO_STAGE1 = _video(_COGVIEW2_6B, stage="sequential",
                          layout={"frames": 5, "extra_position_rows": 2000},
                          temporal={"window": None})
_COGVIDEO_STAGE2 = _video(_COGVIEW2_6B, stage="interpolation",
                          layout={"frames": 5, "extra_position_rows": 2000},
                          temporal={"window": [10, 10], "shift": [5, 5]})

# Tiny models for tests and the CPU demo: 32x32 frames tokenised 4x -> 8x8 grids, a 256-code
# image vocabulary and a small sentencepiece vocabulary after it.
_TINY_T2I: dict[str, Any] = {
    "num_layers": 4,
    "hidden_size": 128,
    "num_heads": 4,
    "vocab_size": 256 + 128,
    "image_vocab_size": 256,
    "stage": "text_to_image",
    "hidden_dropout": 0.0,
    "attention_dropout": 0.0,
    "embedding_dropout": 0.0,
    "temporal": {"window": None, "shift": None, "temporal_extent": None},
    "layout": {
        "text_len": 16,
        "frames": 1,
        "frame_height": 8,
        "frame_width": 8,
        "image_position_offset": 32,
        "base_position_rows": 96,
        "extra_position_rows": 0,
    },
}
_TINY_STAGE1 = _video(_TINY_T2I, stage="sequential",
                      layout={"frames": 5, "extra_position_rows": 256},
                      temporal={"window": [4, 4], "shift": [2, 2]})
_TINY_STAGE2 = _video(_TINY_T2I, stage="interpolation",
                      layout={"frames": 5, "extra_position_rows": 256},
                      temporal={"window": [4, 4], "shift": [2, 2]})

PRESETS: dict[str, dict[str, Any]] = {
    "cogview2_6b": _COGVIEW2_6B,
    "cogvideo_9b_stage1": _COGVIDEO_STAGE1,
    "cogvideo_9b_stage2": _COGVIDEO_STAGE2,
    "tiny_t2i": _TINY_T2I,
    "tiny_stage1": _TINY_STAGE1,
    "tiny_stage2": _TINY_STAGE2,
}


def preset_names() -> list[str]:
    """Names of the built-in presets."""
    return sorted(PRESETS)


def _merge(base: dict, overrides: Mapping, path: str = "") -> dict:
    """Recursive dict merge that refuses keys the preset does not have (typo protection)."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        where = f"{path}{key}"
        known = set(out) | {"ffn_hidden_size", "temporal", "hidden_dropout", "attention_dropout",
                            "embedding_dropout", "layernorm_eps", "init_std"}
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown model field '{where}'.{hint} Known fields: {', '.join(sorted(known))}.")
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value, f"{where}.")
        else:
            out[key] = copy.deepcopy(dict(value) if isinstance(value, Mapping) else value)
    return out


def model_config(preset: str | Mapping | None = None, overrides: Mapping | None = None) -> ModelConfig:
    """Resolve a preset name (or a full dict) plus overrides into a :class:`ModelConfig`.

    Raises:
        ConfigError: unknown preset (with the known names) or unknown field.
    """
    if isinstance(preset, str):
        if preset not in PRESETS:
            close = difflib.get_close_matches(preset, PRESETS, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"unknown model preset '{preset}'.{hint} Known presets: {', '.join(preset_names())}."
            )
        fields = PRESETS[preset]
    elif preset is None:
        fields = {}
    else:
        fields = dict(preset)
    fields = _merge(fields, overrides or {}) if overrides else copy.deepcopy(fields)
    layout = TokenLayout(**fields.pop("layout"))
    temporal_fields = fields.pop("temporal", None) or {}
    temporal = TemporalConfig(
        window=_pair(temporal_fields.get("window")),
        shift=_pair(temporal_fields.get("shift")),
        temporal_extent=temporal_fields.get("temporal_extent"),
    )
    try:
        return ModelConfig(layout=layout, temporal=temporal, **fields)
    except TypeError as exc:  # a missing or unexpected field in a full-dict config
        raise ConfigError(f"invalid model configuration: {exc}") from None


def _pair(value) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int):
        return (value, value)
    return tuple(int(v) for v in value)


def build_model(
    config: ModelConfig | str,
    *,
    overrides: Mapping | None = None,
    spatial_attention=None,
    temporal_attention=None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> CogVideoTransformer:
    """The one generic builder: a preset name or config -> a model.

    Use ``device="meta"`` to build the 9B models without allocating memory (parameter
    counting, planning, FSDP2 sharding before loading weights).
    """
    if not isinstance(config, ModelConfig):
        config = model_config(config, overrides)
    with torch.device(device or "cpu"):
        model = CogVideoTransformer(config, spatial_attention, temporal_attention)
    if dtype is not None:
        model = model.to(dtype)
    return model
