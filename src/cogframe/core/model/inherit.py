"""Inheriting a pretrained text-to-image model as the frozen spatial channel (THUDM/CogVideo
models/cogvideo_model.py, ``reinit`` and ``disable_untrainable_params``).

CogVideo starts each stage from CogView2: every CogView2 tensor is loaded unchanged and frozen,
then the new parameters are initialised from it (plus-channel QKV copied from the base QKV, plus
dense N(0, 0.02), ``a = 0``, extra positions tiled from the first frame's rows). Only the new
parameters train.
"""

from __future__ import annotations

from typing import Mapping

import torch

from cogframe.core.model.transformer import CogVideoTransformer, ModelConfig
from cogframe.errors import ShapeError

__all__ = ["inherit_text_to_image", "video_model_from_text_to_image"]


@torch.no_grad()
def inherit_text_to_image(
    model: CogVideoTransformer, state_dict: Mapping[str, torch.Tensor], *, freeze: bool = True
) -> list[str]:
    """Load a text-to-image state dict into a video model's inherited parameters.

    Args:
        model: A video-stage model (its new parameters are re-initialised from the loaded ones).
        state_dict: Tensors of a text-to-image model with the same backbone sizes.
        freeze: Freeze every inherited parameter (the CogVideo recipe).

    Returns:
        Names of the inherited parameters.

    Raises:
        ShapeError: a missing/unexpected key or a shape mismatch; every problem is listed.
    """
    if not model.config.has_temporal_channel:
        raise ShapeError("inheritance targets a video model; this model is text-to-image.")
    own = {n: p for n, p in model.named_parameters() if not model.is_new_parameter(n)}
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong = [
        f"{n}: checkpoint {tuple(state_dict[n].shape)} vs model {tuple(p.shape)}"
        for n, p in own.items() if n in state_dict and tuple(state_dict[n].shape) != tuple(p.shape)
    ]
    if missing or unexpected or wrong:
        lines = []
        if missing:
            lines.append("missing keys: " + ", ".join(missing))
        if unexpected:
            lines.append("unexpected keys: " + ", ".join(unexpected))
        if wrong:
            lines.append("shape mismatches: " + "; ".join(wrong))
        raise ShapeError(
            "the text-to-image checkpoint does not fit this video model's backbone ("
            + " | ".join(lines)
            + "). Use the text-to-image model the video preset was sized from (same layers, "
            "hidden size, vocabulary and position table)."
        )
    for name, param in own.items():
        param.copy_(state_dict[name].to(param.dtype))
    model.init_temporal_from_base()
    if freeze:
        model.freeze_inherited()
    return sorted(own)


def video_model_from_text_to_image(
    config: ModelConfig,
    state_dict: Mapping[str, torch.Tensor],
    *,
    spatial_attention=None,
    temporal_attention=None,
    freeze: bool = True,
) -> CogVideoTransformer:
    """Build a CogVideo stage model from a CogView2-style state dict, inherited part frozen."""
    model = CogVideoTransformer(config, spatial_attention, temporal_attention)
    inherit_text_to_image(model, state_dict, freeze=freeze)
    return model
