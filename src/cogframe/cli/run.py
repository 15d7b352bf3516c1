"""``cogframe run RECIPE [k=v ...]``: load, validate, then run the recipe's task in this process."""

from __future__ import annotations

import argparse
from typing import Any

from omegaconf import DictConfig

from cogframe.cli import launch
from cogframe.cli.validate import add_recipe_arguments
from cogframe.plugins import get_registries
from cogframe.config.recipes import load_recipe, validate_recipe
from cogframe.registry import Registries

NAME = "run"
HELP = "Run a recipe: validate it, then hand it to its task (training, sampling, data preparation...)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the recipe positionals and the launch options (``--nproc``, ``--nnodes``, ...)."""
    add_recipe_arguments(parser)
    launch.add_launch_arguments(parser)


def launch_torchrun(args: argparse.Namespace, cfg: DictConfig | None = None) -> int:
    """Re-run this command as torchrun workers (this node's) and return their exit status.

    Each worker is a plain ``cogframe run`` that finds RANK/WORLD_SIZE in its environment; CPU
    workers default to one thread each so N processes do not oversubscribe the cores. One node
    or several: :mod:`cogframe.cli.launch`.
    """
    return launch.launch(args, cfg)


def run_task(cfg: DictConfig, registries: Registries, *, task: Any = None) -> None:
    """Calls ``task.run(cfg, registries)`` in this process.

    Launching several processes (torchrun) wraps around this function; the task itself is the same.

    Args:
        cfg: The validated recipe.
        registries: Component registries.
        task: The task instance that validated ``cfg`` (:func:`~cogframe.config.recipes.validate_recipe`
            returns it), so the run reuses what its checks read; built from ``cfg.task`` (no
            keywords) when None.
    """
    if task is None:
        task = registries.build("task", {"name": cfg.task})
    task.run(cfg, registries)


def run(args: argparse.Namespace) -> int:
    """Loads the recipe with its overrides, validates it completely, then runs its task."""
    # Launch options first: a wrong combination costs nothing to report.
    launch.check_launch_arguments(args)
    registries = get_registries()
    cfg = load_recipe(args.recipe, args.overrides)
    task = validate_recipe(cfg, registries, source=args.recipe)
    if launch.needs_launch(args):
        return launch_torchrun(args, cfg)
    run_task(cfg, registries, task=task)
    return 0
