"""``cogframe validate RECIPE [k=v ...]``: load a recipe, check it, print it resolved."""

from __future__ import annotations

import argparse

from omegaconf import OmegaConf

from cogframe.plugins import get_registries
from cogframe.config.recipes import load_recipe, validate_recipe

NAME = "validate"
HELP = ("Check a recipe (top-level keys, components, settings, the task's own checks: every problem at once) "
        "and print it resolved; exit 0 if valid, 2 if not.")


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``RECIPE`` and ``OVERRIDE...`` positionals shared by validate and run."""
    parser.add_argument("recipe", metavar="RECIPE", help="a recipe name (see `cogframe ls`) or a .yaml file")
    parser.add_argument("overrides", metavar="KEY=VALUE", nargs="*",
                        help="override a recipe key, e.g. train.lr=3e-4; +key=value adds a new key, ~key "
                             "deletes one, slot=NAME swaps a component (docs/recipes.md)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the recipe positionals and ``--quiet``."""
    add_recipe_arguments(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing; only the exit status tells")


def run(args: argparse.Namespace) -> int:
    """Loads and validates the recipe; prints its YAML unless ``--quiet``."""
    cfg = load_recipe(args.recipe, args.overrides)
    validate_recipe(cfg, get_registries(), source=args.recipe)
    if not args.quiet:
        print(OmegaConf.to_yaml(cfg), end="")
    return 0
