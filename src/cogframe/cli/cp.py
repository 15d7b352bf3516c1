"""``cogframe cp RECIPE DEST``: copy a recipe file to edit it."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from cogframe.errors import ConfigError
from cogframe.config.recipes import find_recipe

NAME = "cp"
HELP = "Copy a recipe YAML (e.g. a built-in one) to DEST to edit it; refuses to overwrite without --force."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``RECIPE``, ``DEST`` and ``--force``."""
    parser.add_argument("recipe", metavar="RECIPE", help="a recipe name (see `cogframe ls`) or a .yaml file")
    parser.add_argument("dest", metavar="DEST", help="target file, or an existing folder to copy into")
    parser.add_argument("-f", "--force", action="store_true", help="overwrite DEST if it exists")


def run(args: argparse.Namespace) -> int:
    """Copies the recipe file verbatim (its ``base:`` by name keeps working from anywhere)."""
    source = find_recipe(args.recipe)
    dest = Path(args.dest).expanduser()
    if dest.is_dir():
        dest = dest / source.name
    if dest.exists() and dest.resolve() == source.resolve():
        raise ConfigError(f"{dest} is the recipe itself: choose another destination")
    if dest.exists() and not args.force:
        raise ConfigError(f"{dest} already exists: pass --force to overwrite it, or choose another destination")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, dest)
    print(f"copied {source} -> {dest}")
    return 0
