"""A recipe's super-resolution ``model:`` section → config and built DSR model (not a plugin).

Shared by the ``train_super_resolution`` task and the ``super_resolution`` generation stage, so
both read one section shape::

    model:
      preset: tiny_dsr                     # SR_PRESETS (core/model/config.py)
      overrides: {}                        # sr_model_config fields (backbone_overrides, windows, ...)
      attention:
        base: {name: sdpa}                 # text and low-res rows (the frozen backbone's channel)
        plus: {name: sr_local_window}      # high-res rows: O(cells x window) (plugins/attention_local_window.py)
      weights: FILE.safetensors            # a trained DSR model (sampling), or
      init: {from: FILE.safetensors}       # a text-to-image model to inherit, frozen (training)

Reading the config imports no torch (``cogframe validate`` stays light); building does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cogframe.errors import ConfigError, Problem
from cogframe.registry import Needs, Registries

__all__ = ["ATTENTION_CHANNELS", "SR_MASK", "attention_problems", "build_sr_model", "sr_config_from_section"]

ATTENTION_CHANNELS = ("base", "plus")
SR_MASK = "super_resolution"  # the mask rule both channels see (SuperResolutionMask)
_DEFAULT_ATTENTION = {"base": {"name": "sdpa"}, "plus": {"name": "sr_local_window"}}


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def sr_config_from_section(section: DictConfig | dict, where: str = "model"):
    """``SuperResolutionConfig`` of a ``model:`` node (``preset`` + ``overrides``), no torch.

    Raises:
        ConfigError: No preset, an unknown preset or field, sizes that do not fit.
    """
    from cogframe.core.model.sr_config import sr_model_config

    node = _plain(section) or {}
    preset = node.get("preset")
    if not preset:
        raise ConfigError(f"{where}.preset is not set: name a super-resolution preset, e.g. "
                          f"{where}.preset=tiny_dsr (presets: tiny_dsr, cogview2_dsr)")
    try:
        return sr_model_config(preset, node.get("overrides") or None)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _attention_node(section: dict, channel: str) -> dict:
    return dict((section.get("attention") or {}).get(channel) or _DEFAULT_ATTENTION[channel])


def attention_problems(section: DictConfig | dict, registries: Registries, *, where: str = "model",
                       device: str | None = None, dtype: str | None = None,
                       training: bool = False) -> list[Problem]:
    """Each attention backend must exist and declare the SR mask, the device, dtype and backward asked."""
    node = _plain(section) or {}
    found = []
    for channel in ATTENTION_CHANNELS:
        name = _attention_node(node, channel).get("name")
        key = f"{where}.attention.{channel}"
        if name not in registries.names("attention"):
            continue  # validation reports unknown names at the slot
        device_type = None if device in (None, "auto") else str(device).split(":")[0]
        unmet = registries.get("attention", name).unmet(
            Needs(device=device_type, dtype=dtype, backward=training, mask=SR_MASK))
        if unmet:
            found.append(Problem(key, f"attention backend '{name}' does not declare {'; '.join(unmet)}",
                                 "use sr_local_window (sparse, plus channel) or sdpa / naive (dense)"))
    return found


def build_sr_model(section: DictConfig | dict, registries: Registries, *, where: str = "model",
                   weights: bool = True, freeze: bool = True):
    """The DSR model of a ``model:`` node, on the CPU in float32.

    With ``weights`` a ``weights:`` file is loaded whole (a trained DSR model); otherwise, or when
    the node has none, ``init.from`` names the text-to-image model to inherit (frozen when
    ``freeze`` and ``init.freeze_inherited`` is not false).

    Raises:
        ConfigError: A missing or unfit weights file (names the key and the fix).
    """
    from safetensors.torch import load_file

    from cogframe.core.model.super_resolution import (
        build_super_resolution_model,
        inherit_text_to_image_backbone,
    )
    from cogframe.errors import ShapeError

    node = _plain(section) or {}
    config = sr_config_from_section(node, where)
    backends = {ch: registries.build("attention", _attention_node(node, ch)) for ch in ATTENTION_CHANNELS}
    model = build_super_resolution_model(config, base_attention=backends["base"],
                                         plus_attention=backends["plus"])
    file = node.get("weights") if weights else None
    if file:
        state = load_file(str(_existing(file, f"{where}.weights")))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ConfigError(
                f"{where}.weights ({file}) does not fit the {node.get('preset')} model (missing "
                f"{', '.join(missing[:4]) or 'none'}; unexpected {', '.join(unexpected[:4]) or 'none'}): "
                "point it at the model.safetensors a train_super_resolution recipe with this preset wrote")
        model.freeze_backbone()
        return model
    init = node.get("init") or {}
    source = init.get("from")
    if not source:
        raise ConfigError(f"{where}: neither weights nor init.from is set: a DSR model inherits its frozen "
                          "backbone from a text-to-image model, e.g. init: {from: runs/tiny/t2i/model.safetensors}")
    try:
        inherit_text_to_image_backbone(model, load_file(str(_existing(source, f"{where}.init.from"))),
                                       freeze=freeze and init.get("freeze_inherited", True))
    except ShapeError as exc:
        raise ConfigError(f"{where}.init.from ({source}): {exc}") from None
    return model


def _existing(path: str, key: str) -> Path:
    file = Path(str(path)).expanduser()
    if not file.is_file():
        raise ConfigError(f"{key} is {file}, which does not exist: train it first "
                          "(`cogframe run tiny/t2i` for the backbone, `cogframe run tiny/sr` for the "
                          "super-resolution model) or fix the path")
    return file
