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
      lora: {rank: 8, alpha: 16, dropout: 0.0, targets: [temporal], adapter: null}   # optional

This module sits between recipes (omegaconf) and core (typed objects): core never reads YAML.

Capabilities: building refuses an attention backend that does not declare what this model will
ask of it (the mask rule of its channel, and, when the caller says, the device, the dtype and a
backward pass for training), before any tensor exists. :func:`attention_needs` and
:func:`capability_problems` do the device/dtype/backward part without torch, for
``cogframe validate`` (tasks return them from ``capability_needs(cfg)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cogframe.errors import ConfigError, Problem, problems_error
from cogframe.registry import Needs

__all__ = ["MODEL_SLOTS", "LoraSettings", "attention_needs", "build_model_from_recipe", "capability_problems",
           "channel_masks", "lora_settings", "model_config_from_recipe", "model_section", "read_state_dict"]

# Recipe keys holding attention components (for validation through the registry).
MODEL_SLOTS = {"model.attention.spatial": "attention", "model.attention.temporal": "attention"}


@dataclass(frozen=True)
class LoraSettings:
    """The optional ``model.lora:`` section: LoRA adapters on the model's Linear layers.

    Attributes:
        rank: Inner dimension of the low-rank update (>= 1).
        alpha: The update is scaled by ``alpha / rank``.
        dropout: Dropout on the adapters' input while training, in [0, 1).
        targets: Aliases ``temporal`` (the temporal channel's QKV and dense), ``spatial``, ``mlp``,
            or module-name patterns (``layers.*.temporal.dense``); core/model/lora.py.
        adapter: A ``lora.safetensors`` to load into the adapters (sampling a fine-tune on the
            base weights); null: fresh adapters (training).
    """

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: list[str] = ("temporal",)  # type: ignore[assignment]  # read as a list from YAML
    adapter: str | None = None

    def problems(self) -> list[Problem]:
        """Value checks (torch-free: validation imports no torch)."""
        found = []
        if self.rank < 1:
            found.append(Problem("rank", f"must be >= 1, got {self.rank}", "e.g. rank=8"))
        if not self.alpha > 0:
            found.append(Problem("alpha", f"must be positive, got {self.alpha}", "e.g. alpha=16 (scale alpha/rank)"))
        if not 0.0 <= self.dropout < 1.0:
            found.append(Problem("dropout", f"must be in [0, 1), got {self.dropout}", "e.g. dropout=0.0"))
        if not self.targets:
            found.append(Problem("targets", "is empty", "name some, e.g. targets=[temporal]"))
        return found

    def spec(self):
        """The core :class:`~cogframe.core.model.lora.LoraSpec` (imports torch)."""
        from cogframe.core.model.lora import LoraSpec

        return LoraSpec(rank=self.rank, alpha=float(self.alpha), dropout=float(self.dropout),
                        targets=tuple(self.targets))


def lora_settings(cfg: DictConfig) -> LoraSettings | None:
    """The recipe's ``model.lora`` settings, or None when the model has no adapters.

    Raises:
        ConfigError: Unknown keys or bad values, all at once.
    """
    from cogframe.config.settings import read_section

    node = OmegaConf.select(cfg, "model.lora", default=None)
    if node is None or node is False:
        return None
    return read_section(LoraSettings, node, where="model.lora")


def _with_lora(model, cfg: DictConfig, *, device: str | None, load_weights: bool, training: bool):
    """Injects the recipe's adapters (after the base weights); loads and, for inference, merges them."""
    settings = lora_settings(cfg)
    if settings is None:
        return model
    from cogframe.core.model.lora import inject_lora, load_adapter, merge_lora

    inject_lora(model, settings.spec())
    if settings.adapter and device != "meta" and load_weights:
        load_adapter(model, _existing(settings.adapter, "model.lora.adapter"))
        if not training:
            merge_lora(model)  # sampling runs at the plain model's speed
    return model


def model_section(cfg: DictConfig) -> DictConfig:
    """The ``model:`` node, with a clear error when it is missing."""
    node = cfg.get("model")
    if node is None or node.get("preset") is None:
        raise ConfigError("the recipe has no model.preset: add a `model:` section naming a preset "
                          "(see `cogframe plan --presets` or docs/recipes.md).")
    return node


def model_config_from_recipe(cfg: DictConfig):
    """The typed ModelConfig of the recipe (preset + overrides)."""
    from cogframe.core.model.config import model_config

    node = model_section(cfg)
    overrides = node.get("overrides") or {}
    if not isinstance(overrides, dict):
        overrides = OmegaConf.to_container(overrides, resolve=True)
    return model_config(str(node.preset), overrides)


def attention_needs(*, device: str | None = None, dtype: str | None = None, training: bool = False,
                    prefix: str = "") -> dict[str, Needs]:
    """What a run asks of both attention slots of a ``model:`` section (no torch needed).

    Args:
        device: Device the model runs on (``"cpu"``, ``"cuda:0"``; ``"auto"``/None: not known yet).
        dtype: Dtype of the attention inputs by name; None: not known yet.
        training: Whether gradients flow (both channels: later layers' losses reach earlier
            layers through every attention call).
        prefix: Key prefix of the section, e.g. ``"stage1."``.

    Returns:
        ``{"<prefix>model.attention.spatial": Needs, "<prefix>model.attention.temporal": Needs}``,
        the shape a task's ``capability_needs(cfg)`` returns.
    """
    needs = Needs(device=device, dtype=dtype, backward=training)
    return {f"{prefix}{path}": needs for path in MODEL_SLOTS}


def capability_problems(cfg: DictConfig, registries, needs: dict[str, Needs], *, kind: str = "attention",
                        key_prefix: str = "") -> list[Problem]:
    """One problem per slot whose component does not declare what ``needs`` asks of it.

    Args:
        cfg: The resolved recipe (or the section the keys of ``needs`` are relative to).
        registries: Component registries.
        needs: Recipe key of a component node -> what the run asks of it; absent or nameless
            nodes are skipped (the name checks report those).
        kind: The component kind of those slots.
        key_prefix: Prepended to the keys in messages (``"stage1."`` when ``cfg`` is a section).
    """
    problems: list[Problem] = []
    for path, need in needs.items():
        node = OmegaConf.select(cfg, path, default=None)
        name = node.get("name") if isinstance(node, DictConfig) else None
        if isinstance(name, str):
            problems += registries.capability_problems(kind, name, need, where=f"{key_prefix}{path}")
    return problems


def channel_masks(config) -> dict[str, str]:
    """The mask rule each attention channel of ``config`` uses, by channel (core's own masks)."""
    from cogframe.core.model.masks import spatial_mask, temporal_mask

    masks = {"spatial": spatial_mask(config.layout, config.stage).rule.value}
    if config.has_temporal_channel:
        masks["temporal"] = temporal_mask(config.layout, config.stage, 0, config.temporal).rule.value
    return masks


def _attention(cfg: DictConfig, registries, channel: str):
    node = OmegaConf.select(cfg, f"model.attention.{channel}")
    if node is None:
        return None
    return registries.build("attention", node)


def build_model_from_recipe(cfg: DictConfig, registries, *, device: str | None = None,
                            load_weights: bool = True, run_device: str | None = None,
                            dtype: str | None = None, training: bool = False,
                            key_prefix: str = "") -> Any:
    """Build the recipe's model: preset, attention backends, inheritance or weights, freezing.

    Before anything is built, each attention backend's declared capabilities are checked against
    the mask rule of its channel and against ``run_device``/``dtype``/``training``; a mismatch is
    a ConfigError naming the constraint, what was asked and the backends that would do.

    Args:
        cfg: The resolved recipe.
        registries: Component registries (for the attention backends).
        device: ``"meta"`` to build without memory (planning, FSDP2); default CPU.
        load_weights: Apply ``model.init`` / ``model.weights`` (ignored on the meta device).
        run_device: Device the model will run on, when it differs from ``device`` (a model built
            on CPU or meta and moved later); default: ``device`` unless that is meta or None
            (then the device is not checked).
        dtype: Dtype the model will run in (``"bfloat16"``); None: not checked.
        training: The model will be trained (backends must support backward on ``run_device``).
        key_prefix: Prefix of the recipe keys in messages (``"stage1."`` for a sample section).

    Raises:
        ConfigError: A missing preset, a capability mismatch, or bad weights paths.
    """
    from cogframe.core.training.checkpoint import load_model_weights
    from cogframe.core.model.inherit import inherit_text_to_image
    from cogframe.core.model.presets import build_model

    if run_device is None and device not in (None, "meta"):
        run_device = device
    node = model_section(cfg)
    config = model_config_from_recipe(cfg)
    asked = attention_needs(device=run_device, dtype=dtype, training=training)
    masks = channel_masks(config)
    needs = {path: Needs(device=need.device, dtype=need.dtype, backward=need.backward,
                         mask=masks.get(path.rsplit(".", 1)[-1]))
             for path, need in asked.items()}
    problems = capability_problems(cfg, registries, needs, key_prefix=key_prefix)
    if problems:
        raise problems_error("the recipe's model cannot be built with these attention backends", problems)
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
                model.load_state_dict(read_state_dict(path, "model.weights"))
            else:
                load_model_weights(model, path)
        elif source:
            state = read_state_dict(_existing(source, "model.init.from"), "model.init.from")
            inherit_text_to_image(model, state, freeze=freeze)
            return _with_lora(model, cfg, device=device, load_weights=load_weights, training=training)
    if config.has_temporal_channel and freeze:
        model.freeze_inherited()
    return _with_lora(model, cfg, device=device, load_weights=load_weights, training=training)


def read_state_dict(path: Path, key: str = "model weights") -> dict:
    """Tensors of a ``model.safetensors`` file or of a weights folder from ``cogframe convert``.

    Raises:
        DataError: A truncated or foreign file, or a tensor holding NaN/inf (named).
    """
    if path.is_dir():
        from cogframe.core.weights.pretrained import load_weights

        return load_weights(path)[0]
    from cogframe.core.weights.safe_load import check_finite, read_safetensors

    tensors = read_safetensors(path, what=key, fix=(
        "Copy or download it again (an interrupted copy truncates it), or re-create it: for the "
        "tiny recipes train it (`cogframe run tiny/t2i`), for released weights run `cogframe convert`."))
    for name, tensor in tensors.items():
        check_finite(name, tensor, what=f"{key} {path}",
                     fix="Use weights from before the run diverged, or retrain them.")
    return tensors


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
