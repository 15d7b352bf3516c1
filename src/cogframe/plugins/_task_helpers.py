"""Small helpers shared by the data tasks (not a plugin: it registers nothing).

Recipe conventions used by these tasks:

* ``output_dir`` — where the task writes (relative paths are relative to the current folder).
* ``dataset`` — one dataset node; ``splits`` maps a split name to keywords merged over it, e.g.
  ``splits: {train: {split: train}, val: {split: val, num_clips: 64}}``.
* ``seed`` — the run's seed.

Settings: a task declares ``sections`` (recipe key -> settings dataclass, ``""`` for the scalar
top-level keys); :func:`task_settings` builds them once per recipe, so the checks of validation
and the run read the same objects.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cogframe.config.settings import recipe_sections
from cogframe.errors import ConfigError, Problem, problems_error
from cogframe.registry import Registries
from cogframe.signatures import keyword_problems

__all__ = ["build_split", "check_recipe", "output_dir", "require", "seed_everything", "split_names",
           "split_problems", "task_settings"]


def check_recipe(task: Any, cfg: DictConfig, registries: Registries) -> None:
    """A task's ``validate``: the whole of recipe validation with this task instance.

    Tasks list their own problems in ``problems(cfg, registries)`` (which validation calls); this
    keeps ``task.validate(cfg, registries)`` meaning "check the recipe for me, raise if invalid".

    Raises:
        ConfigError: Listing every problem of the recipe.
    """
    from cogframe.config.validation import validate_recipe

    validate_recipe(cfg, registries, source=f"the {cfg.get('task')} recipe", task=task)


def task_settings(task: Any, cfg: DictConfig, *, strict: bool = False) -> dict[str, Any] | None:
    """The task's declared sections built from ``cfg``, once per recipe (cached on the task).

    Args:
        task: The task instance; its class declares ``sections``.
        cfg: The resolved recipe.
        strict: Raise when a section is invalid (the run); otherwise return None (the checks,
            where validation already lists the section's problems).

    Raises:
        ConfigError: ``strict`` and a section is invalid, listing every problem.
    """
    cached = getattr(task, "_settings_of", None)
    if cached is not None and cached[0] is cfg:
        built, problems = cached[1], cached[2]
    else:
        built, problems = recipe_sections(type(task).sections, cfg)
        task._settings_of = (cfg, built, problems)
    if problems:
        if strict:
            raise problems_error(f"the settings of task '{cfg.get('task')}' are invalid", problems)
        return None
    return built


def require(cfg: DictConfig, key: str, example: str) -> Any:
    """``cfg.<key>`` or a ConfigError saying which key to add (with an example value)."""
    value = OmegaConf.select(cfg, key, default=None)
    if value is None:
        raise ConfigError(f"task '{cfg.get('task')}' needs '{key}' in the recipe; add e.g. `{key}: {example}`.")
    return value


def output_dir(cfg: DictConfig) -> Path:
    """The recipe's ``output_dir`` as a Path (created)."""
    path = Path(str(require(cfg, "output_dir", "runs/tiny/<name>")))
    path.mkdir(parents=True, exist_ok=True)
    return path


def split_names(cfg: DictConfig) -> list[str]:
    """Split names from ``splits`` (in recipe order), or ``["train"]`` when there is none."""
    splits = OmegaConf.select(cfg, "splits", default=None)
    if splits is None:
        return ["train"]
    if not isinstance(splits, DictConfig) or not splits:
        raise ConfigError("'splits' must map split names to dataset keywords, e.g. "
                          "`splits: {train: {split: train}, val: {split: val}}`.")
    return [str(name) for name in splits]


def _split_node(cfg: DictConfig, split: str) -> dict:
    node = OmegaConf.to_container(require(cfg, "dataset", "{name: moving_shapes}"), resolve=True)
    extra = OmegaConf.select(cfg, f"splits.{split}", default=None)
    if extra is not None:
        if not isinstance(extra, DictConfig):
            raise ConfigError(f"splits.{split} must be a mapping of dataset keywords, got {extra!r}.")
        node.update(OmegaConf.to_container(extra, resolve=True))
    return node


def build_split(cfg: DictConfig, registries: Registries, split: str) -> Any:
    """Builds ``dataset`` with the keywords of ``splits.<split>`` merged over it."""
    return registries.build("dataset", _split_node(cfg, split))


def split_problems(cfg: DictConfig, registries: Registries) -> list[Problem]:
    """Every problem of ``dataset`` being absent and of ``splits``: its shape, each split's keywords.

    A split's keywords are merged over ``dataset`` and checked against the dataset's signature,
    like the ``dataset`` node itself (whose own problems validation reports at ``dataset``).
    """
    splits = OmegaConf.select(cfg, "splits", default=None)
    if splits is not None and (not isinstance(splits, DictConfig) or not splits):
        return [Problem("splits", f"must map split names to dataset keywords, got {OmegaConf.to_container(splits) if OmegaConf.is_config(splits) else splits!r}",
                        "write e.g. `splits: {train: {split: train}, val: {split: val}}`")]
    dataset = OmegaConf.select(cfg, "dataset", default=None)
    if dataset is None:
        return [Problem("dataset", f"is missing: task '{cfg.get('task')}' reads its clips from a dataset",
                        "add e.g. `dataset: {name: moving_shapes}` (`cogframe plugins --kind dataset` lists them)")]
    if not isinstance(dataset, DictConfig) or not isinstance(dataset.get("name"), str) \
            or dataset.name not in registries.names("dataset"):
        return []  # validation reports the dataset node itself
    spec = registries.get("dataset", dataset.name)
    base = {k: v for k, v in OmegaConf.to_container(dataset, resolve=True).items() if k != "name"}
    problems: list[Problem] = []
    for split in split_names(cfg):
        extra = OmegaConf.select(cfg, f"splits.{split}", default=None)
        if extra is None:
            continue
        if not isinstance(extra, DictConfig):
            problems.append(Problem(f"splits.{split}", f"must be a mapping of dataset keywords, got {extra!r}",
                                    f"write e.g. `splits: {{{split}: {{split: {split}}}}}`"))
            continue
        own = OmegaConf.to_container(extra, resolve=True)
        # Only the split's own keys are reported here; the dataset node's are reported at `dataset`.
        found = spec.keyword_problems({**base, **own}, where=f"splits.{split}")
        problems += [p for p in found if p.where.rpartition(".")[2] in own or "needs the keyword" in p.what]
    return problems


def seed_everything(seed: int) -> None:
    """Seeds Python, numpy and torch (CPU and CUDA) so a run repeats exactly."""
    random.seed(seed)
    import numpy as np  # here, not at the top: validating a recipe imports no torch
    import torch

    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
