"""Model configuration without torch: :class:`ModelConfig`, the named presets and :func:`model_config`.

A preset is a plain nested dict so a recipe can override any field
(``model.overrides.num_layers=2``, ``model.overrides.layout.frames=3``) before
:func:`model_config` turns it into a typed :class:`ModelConfig`. The numbers of the paper live
here (and in recipes) only.

This module imports no torch (nor do ``layout.py`` and ``masks.py`` at import time), so checking a
recipe's model section (``cogframe validate``) stays fast; ``presets.py`` builds the network and
``transformer.py`` re-exports :class:`ModelConfig` for the code that imports it from there.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass, field
from typing import Any, Mapping

from cogframe.core.model.layout import Stage, TokenLayout
from cogframe.core.model.masks import TemporalConfig
from cogframe.errors import ConfigError, ShapeError

__all__ = ["ModelConfig", "PRESETS", "preset_names", "model_config"]


@dataclass(frozen=True)
class ModelConfig:
    """All sizes and switches of a CogView2 / CogVideo model.

    Args:
        num_layers: Transformer layers.
        hidden_size: Model width ``d``.
        num_heads: Attention heads (``head_dim = d / num_heads``).
        vocab_size: Rows of the (tied) word embedding: image ids first, then text ids.
        image_vocab_size: Image ids are ``[0, image_vocab_size)``; logits cover only these.
        layout: The token layout of one sample.
        stage: Text-to-image (no temporal channel), sequential or interpolation.
        ffn_hidden_size: MLP inner size (default ``4 * hidden_size``).
        temporal: Window/shift/extent of the temporal channel (video stages only).
        hidden_dropout: Dropout on MLP outputs (and attention outputs of a text-to-image model).
        attention_dropout: Dropout on attention probabilities, both channels.
        embedding_dropout: Dropout on the summed embeddings.
        layernorm_eps: LayerNorm epsilon.
        init_std: Std of the normal init; residual output layers use
            ``init_std / sqrt(2 * num_layers)``.
    """

    num_layers: int
    hidden_size: int
    num_heads: int
    vocab_size: int
    image_vocab_size: int
    layout: TokenLayout
    stage: Stage = Stage.TEXT_TO_IMAGE
    ffn_hidden_size: int | None = None
    temporal: TemporalConfig = field(default_factory=TemporalConfig)
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    embedding_dropout: float = 0.1
    layernorm_eps: float = 1e-5
    init_std: float = 0.02

    def __post_init__(self) -> None:
        object.__setattr__(self, "stage", Stage.parse(self.stage))
        if self.hidden_size % self.num_heads:
            raise ShapeError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}; "
                "pick sizes with hidden_size = num_heads * head_dim."
            )
        if not 0 < self.image_vocab_size <= self.vocab_size:
            raise ShapeError(
                f"image_vocab_size ({self.image_vocab_size}) must be in 1..vocab_size "
                f"({self.vocab_size}): image ids come first in the vocabulary."
            )
        if self.stage is Stage.TEXT_TO_IMAGE and self.layout.frames != 1:
            raise ShapeError(
                f"a text-to-image model has one frame, but the layout has {self.layout.frames}; "
                "set layout.frames=1 or choose stage sequential/interpolation."
            )

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden_size // self.num_heads

    @property
    def ffn_size(self) -> int:
        """Inner size of the MLP."""
        return self.ffn_hidden_size or 4 * self.hidden_size

    @property
    def has_temporal_channel(self) -> bool:
        """Video stages add a temporal channel to every layer."""
        return self.stage is not Stage.TEXT_TO_IMAGE


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

# CogView2's direct super-resolution model (THUDM/CogView2 sr_pipeline/direct_sr.py: layout 96,496,4096,
# kernel_size 5 and kernel_size2 5, new sequence length 4624): the frozen text-to-image backbone named by
# "backbone", the layout of core/model/sr_layout.py and the windows of core/model/sr_masks.py. The high-res
# window is the release's (2k-1) x k = 9 x 5 and the low-res one 5 x 5; core/model/sr_config.py reads these.
# The tiny model's base position table (96 rows = 32 + 8x8) has no row for the release's +1 low-res shift.
SR_PRESETS: dict[str, dict[str, Any]] = {
    "cogview2_dsr": {
        "backbone": "cogview2_6b",
        "layout": {"text_len": 96, "low_height": 20, "low_width": 20, "scale": 3, "lowres_position_shift": 1},
        "windows": {"high": [9, 5], "low": [5, 5], "border": "mask", "add_scalar": 0.0,
                    "lowres": "bidirectional"},
    },
    "tiny_dsr": {
        "backbone": "tiny_t2i",
        "layout": {"text_len": 16, "low_height": 8, "low_width": 8, "scale": 3, "lowres_position_shift": 0},
        "windows": {"high": [9, 5], "low": [5, 5], "border": "mask", "add_scalar": 0.0,
                    "lowres": "bidirectional"},
        # Each high-res cell starts at its own low-res cell's position (not the release's periodic
        # tiling): a model trained for minutes cannot learn where 576 tiled cells sit
        # (docs/sampling.md, "Super-resolution").
        "position_init": "nearest",
    },
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
