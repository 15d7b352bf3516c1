"""``cogframe run RECIPE [k=v ...]``: load, validate, then run the recipe's task in this process."""

from __future__ import annotations

import argparse
from typing import Any

from omegaconf import DictConfig

from cogframe.cli.validate import add_recipe_arguments
from cogframe.plugins import get_registries
from cogframe.config.recipes import load_recipe, validate_recipe
from cogframe.registry import Registries

NAME = "run"
HELP = "Run a recipe: validate it, then hand it to its task (training, sampling, data preparation...)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the recipe positionals and ``--nproc``."""
    add_recipe_arguments(parser)
    parser.add_argument("--nproc", type=int, default=1, metavar="N",
                        help="run N processes on this machine under torchrun (FSDP2 training)")


def launch_torchrun(args: argparse.Namespace) -> int:
    """Re-run this command as N torchrun workers and return their exit status.

    Each worker is a plain ``cogframe run`` that finds RANK/WORLD_SIZE in its environment; CPU
    workers default to one thread each so N processes do not oversubscribe the cores.
    """
    import os
    import subprocess
    import sys

    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={args.nproc}", "-m", "cogframe", "run", args.recipe,
               *args.overrides]
    return subprocess.call(command, env=env)


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
    from cogframe.errors import ConfigError

    registries = get_registries()
    cfg = load_recipe(args.recipe, args.overrides)
    task = validate_recipe(cfg, registries, source=args.recipe)
    if args.nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {args.nproc}.")
    if args.nproc > 1:
        import os

        if "WORLD_SIZE" in os.environ:
            raise ConfigError("--nproc inside a torchrun worker: launch either with torchrun or "
                              "with `cogframe run --nproc N`, not both.")
        return launch_torchrun(args)
    run_task(cfg, registries, task=task)
    return 0
