"""The models a cogframe weights folder can hold, each kind with its config, builder and presets.

* ``"cogvideo"``: a :class:`~cogframe.core.model.transformer.CogVideoTransformer` (CogView2
  text-to-image, CogVideo stage 1 or 2); ``model`` in ``config.yaml`` is a ``model_config``
  preset dict, the presets are ``PRESETS``.
* ``"super_resolution"``: a :class:`~cogframe.core.model.super_resolution.SuperResolutionTransformer`
  (CogView2's direct super-resolution); ``model`` is an ``sr_model_config`` preset dict
  (``backbone``, ``layout``, ``windows``), the presets are ``SR_PRESETS``.

A folder written before super-resolution existed has no ``model_kind`` and is ``"cogvideo"``.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

import torch

from cogframe.core.model.config import PRESETS, SR_PRESETS, model_config
from cogframe.core.model.sr_config import sr_model_config
from cogframe.core.weights.sat_mapping import COGVIDEO, MODEL_KINDS, SUPER_RESOLUTION
from cogframe.errors import CogframeError, DataError

__all__ = ["MODEL_KINDS", "check_kind", "typed_config", "build_on", "presets_of", "matching_preset",
           "default_preset", "loader_of"]

_LOADERS = {COGVIDEO: "cogframe.core.weights.pretrained.load_pretrained",
            SUPER_RESOLUTION: "cogframe.core.weights.pretrained.load_super_resolution"}


def check_kind(kind: str, *, where: str = "config.yaml") -> str:
    """``kind`` itself, or a DataError naming the known kinds."""
    if kind not in MODEL_KINDS:
        raise DataError(f"{where}: model_kind {kind!r} is unknown; cogframe weights folders hold "
                        f"{' or '.join(MODEL_KINDS)}. Run `cogframe convert` again.")
    return kind


def typed_config(model: Mapping[str, Any], kind: str = COGVIDEO, overrides: Mapping[str, Any] | None = None):
    """The typed config of a preset dict: ``ModelConfig`` or ``SuperResolutionConfig``."""
    if check_kind(kind) == SUPER_RESOLUTION:
        return sr_model_config(copy.deepcopy(dict(model)), overrides)
    return model_config(dict(model), overrides)


def build_on(config, kind: str = COGVIDEO, *, device: str | torch.device = "meta", **backends) -> torch.nn.Module:
    """The network of a typed config, on ``device`` (default meta: no memory).

    ``backends``: ``spatial_attention``/``temporal_attention`` (cogvideo) or
    ``base_attention``/``plus_attention`` (super_resolution).
    """
    if check_kind(kind) == SUPER_RESOLUTION:
        from cogframe.core.model.super_resolution import build_super_resolution_model

        return build_super_resolution_model(config, device=device, **backends)
    from cogframe.core.model.presets import build_model

    return build_model(config, device=device, **backends)


def presets_of(kind: str) -> Mapping[str, Mapping[str, Any]]:
    """The built-in presets of a kind."""
    return SR_PRESETS if check_kind(kind) == SUPER_RESOLUTION else PRESETS


def matching_preset(model: Mapping[str, Any], kind: str = COGVIDEO) -> str | None:
    """Name of the built-in preset of ``kind`` with the same configuration as ``model``, or None."""
    try:
        config = typed_config(model, kind)
    except CogframeError:
        return None
    for name in sorted(presets_of(kind)):
        if typed_config(presets_of(kind)[name], kind) == config:
            return name
    return None


def default_preset(model: Mapping[str, Any], kind: str = COGVIDEO) -> str:
    """The built-in preset a recipe names (with overrides) for a model that matches none."""
    if check_kind(kind) == SUPER_RESOLUTION:
        return "cogview2_dsr"
    stage = getattr(model.get("stage"), "value", model.get("stage", "text_to_image"))
    return {"text_to_image": "cogview2_6b", "sequential": "cogvideo_9b_stage1",
            "interpolation": "cogvideo_9b_stage2"}.get(str(stage), "cogview2_6b")


def loader_of(kind: str) -> str:
    """The function that loads a folder of this kind (for messages)."""
    return _LOADERS[check_kind(kind)]
