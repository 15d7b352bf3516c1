"""Configuration of the direct super-resolution model: :class:`SuperResolutionConfig` from a preset.

An SR preset (``SR_PRESETS`` in ``config.py``, beside the other presets) names its frozen
text-to-image backbone preset and adds the DSR layout and windows. Like ``config.py`` this module
imports no torch, so a recipe's SR model section is checked without it.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass, field
from typing import Any, Mapping

from cogframe.core.model.config import SR_PRESETS, ModelConfig, model_config
from cogframe.core.model.layout import Stage
from cogframe.core.model.sr_layout import SuperResolutionLayout
from cogframe.core.model.sr_masks import LocalWindows
from cogframe.errors import ConfigError, ShapeError

__all__ = ["SR_PRESETS", "SuperResolutionConfig", "sr_preset_names", "sr_model_config"]


@dataclass(frozen=True)
class SuperResolutionConfig:
    """Everything that sizes a DSR model.

    Args:
        backbone: The frozen text-to-image model's config (stage ``text_to_image``).
        layout: The DSR token layout; its position fields must match the backbone's table.
        windows: Window shapes, border handling, ``add_scalar`` and the low-res rule.
        position_init: How the high-res position table starts: ``tile`` (the release: cell
            (X, Y) gets the base position of low-res cell (X mod h, Y mod w)) or ``nearest``
            (the low-res cell it lies in, (X // scale, Y // scale)).
    """

    backbone: ModelConfig
    layout: SuperResolutionLayout
    windows: LocalWindows = LocalWindows()
    # Only the fresh initialisation reads it (loaded weights replace the table), so two configs that
    # size the same model compare equal whatever their position_init.
    position_init: str = field(default="tile", compare=False)

    def __post_init__(self) -> None:
        base, layout = self.backbone, self.layout
        if base.stage is not Stage.TEXT_TO_IMAGE:
            raise ShapeError(
                f"the super-resolution backbone must be a text-to-image model, got stage "
                f"{base.stage.value!r}: name a text-to-image preset (e.g. tiny_t2i, cogview2_6b).")
        if self.position_init not in ("tile", "nearest"):
            raise ShapeError(f"position_init must be 'tile' (the release) or 'nearest', got {self.position_init!r}.")
        bl = base.layout
        if (layout.low_height, layout.low_width) != (bl.frame_height, bl.frame_width):
            raise ShapeError(
                f"the low-res grid {layout.low_height}x{layout.low_width} differs from the "
                f"backbone's frame grid {bl.frame_height}x{bl.frame_width}: the extra positions are "
                "tiled from the backbone's frame positions, so the two grids must agree.")
        if (layout.image_position_offset, layout.base_position_rows) != (
                bl.image_position_offset, bl.base_position_rows):
            raise ShapeError(
                "the super-resolution layout's image_position_offset/base_position_rows "
                f"({layout.image_position_offset}, {layout.base_position_rows}) differ from the "
                f"backbone's ({bl.image_position_offset}, {bl.base_position_rows}); build the "
                "layout from the backbone (sr_model_config does).")

    @property
    def hidden_size(self) -> int:
        """Model width."""
        return self.backbone.hidden_size


def sr_preset_names() -> list[str]:
    """Names of the built-in super-resolution presets."""
    return sorted(SR_PRESETS)


_KNOWN = {"backbone": None, "backbone_overrides": None, "layout": None, "windows": None, "position_init": None}


def _merge(base: dict, overrides: Mapping, path: str = "") -> dict:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        where = f"{path}{key}"
        known = set(out) | (set(_KNOWN) if not path else set())
        if path.startswith("backbone_overrides"):
            known = {key}  # checked by the backbone's own model_config
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"unknown super-resolution field '{where}'.{hint} Known fields: {', '.join(sorted(known))}.")
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value, f"{where}.")
        else:
            out[key] = copy.deepcopy(dict(value) if isinstance(value, Mapping) else value)
    return out


def sr_model_config(preset: str | Mapping, overrides: Mapping | None = None) -> SuperResolutionConfig:
    """Resolve an SR preset name (or full dict) plus overrides into a :class:`SuperResolutionConfig`.

    Fields: ``backbone`` (a text-to-image preset name or dict), ``backbone_overrides`` (passed to
    ``model_config``), ``layout`` (``SuperResolutionLayout`` fields other than the backbone's
    position fields) and ``windows`` (``LocalWindows`` fields).

    Raises:
        ConfigError: unknown preset or field, or sizes that do not fit together.
    """
    if isinstance(preset, str):
        if preset not in SR_PRESETS:
            close = difflib.get_close_matches(preset, SR_PRESETS, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown super-resolution preset '{preset}'.{hint} Known presets: "
                              f"{', '.join(sr_preset_names())}.")
        fields: dict[str, Any] = copy.deepcopy(SR_PRESETS[preset])
    else:
        fields = copy.deepcopy(dict(preset))
    if overrides:
        fields = _merge(fields, overrides)
    try:
        backbone = model_config(fields["backbone"], fields.get("backbone_overrides") or None)
        bl = backbone.layout
        layout = SuperResolutionLayout(image_position_offset=bl.image_position_offset,
                                       base_position_rows=bl.base_position_rows, **fields["layout"])
        windows = LocalWindows(**fields.get("windows", {}))
        return SuperResolutionConfig(backbone, layout, windows, fields.get("position_init", "tile"))
    except (TypeError, KeyError) as exc:
        raise ConfigError(f"invalid super-resolution configuration: {exc}") from None
    except ShapeError as exc:
        raise ConfigError(str(exc)) from None
