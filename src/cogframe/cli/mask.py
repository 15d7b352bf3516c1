"""``cogframe mask RECIPE channel=spatial|temporal layer=N out=FILE.npy [png=FILE.png] [--force] [k=v ...]``.

Writes the dense attention mask of the recipe's layout as a numpy bool array indexed
``[query slot, key slot]``: all text valid (no padding), frames in natural order, the
input-slot convention of the release (slot ``(t, 0)`` holds [BOI], slot ``(t, j)`` the token
``f_t[j-1]``; THUDM/CogVideo pretrain_cogvideo.py ``get_batch``). Other ``key=value`` arguments override the recipe.

``out``/``png`` may name a folder (an existing one, or any path ending in ``/``): the files go
inside it as ``<channel>_layer<N>.npy`` / ``.png``. A file name without ``.npy`` gets it (numpy
would add it anyway; the printed path is the real one). Existing files are kept unless
``--force``, and both targets are checked before anything is written; each file is written
atomically.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from cogframe.errors import ConfigError
from cogframe.config.recipes import load_recipe

NAME = "mask"
HELP = ("Write the dense [query slot, key slot] mask of a recipe's model for one channel and layer "
        "(.npy, optional .png picture).")

_OPTIONS = ("channel", "layer", "out", "png")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """RECIPE then channel=, layer=, out=, png= and recipe overrides, all as key=value."""
    parser.add_argument("recipe", metavar="RECIPE", help="a recipe name or .yaml file")
    parser.add_argument("settings", metavar="KEY=VALUE", nargs="*",
                        help="channel=spatial|temporal layer=N out=FILE.npy|FOLDER/ [png=FILE.png|FOLDER/], "
                             "then any recipe overrides")
    parser.add_argument("--force", action="store_true", help="replace existing output files")


def _split(settings: list[str]) -> tuple[dict[str, str], list[str]]:
    options, overrides = {}, []
    for item in settings:
        key, sep, value = item.partition("=")
        if sep and key in _OPTIONS:
            options[key] = value
        else:
            overrides.append(item)
    return options, overrides


def _target(value: str, key: str, default_name: str, suffix: str, force: bool) -> Path:
    """Where ``key=value`` writes: inside a folder, with ``suffix``; refused if it exists."""
    if not value:
        raise ConfigError(f"{key}= is empty; give a file (e.g. {key}=mask{suffix}) or a folder ending in /.")
    path = Path(value).expanduser()
    if value.endswith(("/", os.sep)) or path.is_dir():
        path = path / default_name
    elif path.suffix.lower() != suffix:
        path = path.with_name(path.name + suffix)
    if path.is_dir():
        raise ConfigError(f"{key}: {path} is a folder; give a file name ending in {suffix}.")
    if path.exists() and not force:
        raise ConfigError(f"{path} already exists; pass --force to replace it, or choose another {key}=.")
    return path


def run(args: argparse.Namespace) -> int:
    """Materialise and save the mask."""
    import numpy as np

    from cogframe.core.model.masks import spatial_mask, temporal_mask
    from cogframe.config.model import model_config_from_recipe

    options, overrides = _split(args.settings)
    if "out" not in options:
        raise ConfigError("cogframe mask needs out=FILE.npy (where to write the mask).")
    channel = options.get("channel", "temporal")
    if channel not in ("spatial", "temporal"):
        raise ConfigError(f"channel must be spatial or temporal, got '{channel}'.")
    try:
        layer = int(options.get("layer", "0"))
    except ValueError:
        raise ConfigError(f"layer must be an integer, got '{options['layer']}'.") from None
    config = model_config_from_recipe(load_recipe(args.recipe, overrides))
    if not 0 <= layer < config.num_layers:
        raise ConfigError(f"layer {layer} is outside 0..{config.num_layers - 1} for this model.")
    if channel == "spatial":
        spec = spatial_mask(config.layout, config.stage)
    else:
        if not config.has_temporal_channel:
            raise ConfigError("this recipe's model is text-to-image: it has no temporal channel; "
                              "use channel=spatial or a video recipe.")
        spec = temporal_mask(config.layout, config.stage, layer, config.temporal)
    from cogframe.core.io.atomic import atomic_path

    stem = f"{channel}_layer{layer}"
    force = bool(getattr(args, "force", False))
    # Both targets are checked before either is written: a refusal leaves nothing half-done.
    out = _target(options["out"], "out", f"{stem}.npy", ".npy", force)
    png = _target(options["png"], "png", f"{stem}.png", ".png", force) if "png" in options else None
    dense = spec.dense()[0].numpy()
    with atomic_path(out) as tmp, open(tmp, "wb") as handle:
        np.save(handle, dense)  # a file object: np.save does not append another .npy
    print(f"{channel} mask of layer {layer} ({spec.describe()}): {dense.shape[0]}x{dense.shape[1]}, "
          f"{int(dense.sum()):,} allowed pairs -> {out}")
    if png is not None:
        import imageio.v3 as iio

        with atomic_path(png) as tmp:
            iio.imwrite(tmp, (dense * 255).astype(np.uint8))
        print(f"picture -> {png}")
    return 0
