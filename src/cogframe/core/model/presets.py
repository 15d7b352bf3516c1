"""Named model sizes and the one generic builder.

The presets and :func:`model_config` live in ``config.py`` (torch-free, so validating a recipe
imports no torch) and are re-exported here; this module adds :func:`build_model`, which imports
torch only when it is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from cogframe.core.model.config import PRESETS, ModelConfig, model_config, preset_names

if TYPE_CHECKING:
    import torch

    from cogframe.core.model.transformer import CogVideoTransformer

__all__ = ["PRESETS", "preset_names", "model_config", "build_model"]


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
    import torch

    from cogframe.core.model.transformer import CogVideoTransformer

    if not isinstance(config, ModelConfig):
        config = model_config(config, overrides)
    with torch.device(device or "cpu"):
        model = CogVideoTransformer(config, spatial_attention, temporal_attention)
    if dtype is not None:
        model = model.to(dtype)
    return model
