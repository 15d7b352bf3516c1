"""``cogframe mask RECIPE channel=spatial|temporal layer=N out=FILE.npy [png=FILE.png] [k=v ...]``.

Writes the dense attention mask of the recipe's layout as a numpy bool array indexed
``[query slot, key slot]``: all text valid (no padding), frames in natural order, the
input-slot convention of spec §1.6. Other ``key=value`` arguments override the recipe.
"""

from __future__ import annotations

import argparse
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
                        help="channel=spatial|temporal layer=N out=FILE.npy [png=FILE.png], "
                             "then any recipe overrides")


def _split(settings: list[str]) -> tuple[dict[str, str], list[str]]:
    options, overrides = {}, []
    for item in settings:
        key, sep, value = item.partition("=")
        if sep and key in _OPTIONS:
            options[key] = value
        else:
            overrides.append(item)
    return options, overrides


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
    dense = spec.dense()[0].numpy()
    out = Path(options["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, dense)
    print(f"{channel} mask of layer {layer} ({spec.describe()}): {dense.shape[0]}x{dense.shape[1]}, "
          f"{int(dense.sum()):,} allowed pairs -> {out}")
    if "png" in options:
        import imageio.v3 as iio

        png = Path(options["png"])
        png.parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(png, (dense * 255).astype(np.uint8))
        print(f"picture -> {png}")
    return 0
