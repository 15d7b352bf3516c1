"""Turning a recipe's ``model:`` section into a model config and a built model.

The section every training and sampling recipe shares::

    model:
      preset: tiny_stage1            # a name from core/presets.py
      overrides: {num_layers: 2}     # any preset field, nested for layout/temporal
      attention:
        spatial: {name: sdpa}        # registry kind `attention`
        temporal: {name: swin3d}
      init:
        from: runs/tiny/t2i/model.safetensors   # inherit a text-to-image model (or null)
        freeze_inherited: true                  # train only the new video parameters
      weights: null                  # or a full model.safetensors to load as is (sampling)

This module sits between recipes (omegaconf) and core (typed objects): core never reads YAML.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cogframe.errors import ConfigError

__all__ = ["MODEL_SLOTS", "model_config_from_recipe", "build_model_from_recipe", "model_section",
           "read_state_dict"]

# Recipe keys holding attention components (for validation through the registry).
MODEL_SLOTS = {"model.attention.spatial": "attention", "model.attention.temporal": "attention"}


def model_section(cfg: DictConfig) -> DictConfig:
    """The ``model:`` node, with a clear error when it is missing."""
    node = cfg.get("model")
    if node is None or node.get("preset") is None:
        raise ConfigError("the recipe has no model.preset: add a `model:` section naming a preset "
                          "(see `cogframe plan --presets` or docs/recipes.md).")
    return node


def model_config_from_recipe(cfg: DictConfig):
    """The typed ModelConfig of the recipe (preset + overrides)."""
    from cogframe.core.model.presets import model_config

    node = model_section(cfg)
    overrides = node.get("overrides") or {}
    if not isinstance(overrides, dict):
        overrides = OmegaConf.to_container(overrides, resolve=True)
    return model_config(str(node.preset), overrides)


def _attention(cfg: DictConfig, registries, channel: str):
    node = OmegaConf.select(cfg, f"model.attention.{channel}")
    if node is None:
        return None
    return registries.build("attention", node)


def build_model_from_recipe(cfg: DictConfig, registries, *, device: str | None = None,
                            load_weights: bool = True) -> Any:
    """Build the recipe's model: preset, attention backends, inheritance or weights, freezing.

    Args:
        cfg: The resolved recipe.
        registries: Component registries (for the attention backends).
        device: ``"meta"`` to build without memory (planning, FSDP2); default CPU.
        load_weights: Apply ``model.init`` / ``model.weights`` (ignored on the meta device).
    """
    from cogframe.core.training.checkpoint import load_model_weights
    from cogframe.core.model.inherit import inherit_text_to_image
    from cogframe.core.model.presets import build_model

    node = model_section(cfg)
    config = model_config_from_recipe(cfg)
    model = build_model(config, spatial_attention=_attention(cfg, registries, "spatial"),
                        temporal_attention=_attention(cfg, registries, "temporal"), device=device)
    init = node.get("init") or {}
    freeze = bool(init.get("freeze_inherited", config.has_temporal_channel))
    if device != "meta" and load_weights:
        weights = node.get("weights")
        source = init.get("from")
        if weights:
            path = _existing(weights, "model.weights")
            if path.is_dir():
                model.load_state_dict(read_state_dict(path))
            else:
                load_model_weights(model, path)
        elif source:
            state = read_state_dict(_existing(source, "model.init.from"))
            inherit_text_to_image(model, state, freeze=freeze)
            return model
    if config.has_temporal_channel and freeze:
        model.freeze_inherited()
    return model


def read_state_dict(path: Path) -> dict:
    """Tensors of a ``model.safetensors`` file or of a weights folder from ``cogframe convert``."""
    if path.is_dir():
        from cogframe.core.weights.pretrained import load_weights

        return load_weights(path)[0]
    from safetensors.torch import load_file

    return load_file(str(path))


def _existing(path: Any, key: str) -> Path:
    p = Path(str(path))
    if not p.exists():
        raise ConfigError(f"{key} points at {p}, which does not exist. {MISSING_WEIGHTS_FIX}")
    return p


MISSING_WEIGHTS_FIX = (
    "Produce it first: for the tiny recipes train it (`cogframe run tiny/t2i`, see `cogframe ls`); "
    "for the 9B recipes convert the released CogView2 checkpoint with `cogframe convert sat` "
    "(docs/official-weights.md) and point the key (or COGVIEW2_WEIGHTS) at the folder."
)
