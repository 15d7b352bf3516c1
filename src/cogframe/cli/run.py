"""``cogframe run RECIPE [k=v ...]``: load, validate, then run the recipe's task in this process."""

from __future__ import annotations

import argparse

from omegaconf import DictConfig

from cogframe.cli.validate import add_recipe_arguments
from cogframe.plugins import get_registries
from cogframe.recipes import load_recipe, validate_recipe
from cogframe.registry import Registries

NAME = "run"
HELP = "Run a recipe: validate it, then hand it to its task (training, sampling, data preparation...)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the recipe positionals."""
    add_recipe_arguments(parser)


def run_task(cfg: DictConfig, registries: Registries) -> None:
    """Builds the recipe's task (no keywords) and calls ``task.run(cfg, registries)`` in this process.

    Launching several processes (torchrun) wraps around this function; the task itself is the same.
    """
    task = registries.build("task", {"name": cfg.task})
    task.run(cfg, registries)


def run(args: argparse.Namespace) -> int:
    """Loads the recipe with its overrides, validates it completely, then runs its task."""
    registries = get_registries()
    cfg = load_recipe(args.recipe, args.overrides)
    validate_recipe(cfg, registries, source=args.recipe)
    run_task(cfg, registries)
    return 0
