"""Small helpers shared by the data tasks (not a plugin: it registers nothing).

Recipe conventions used by these tasks:

* ``output_dir`` — where the task writes (relative paths are relative to the current folder).
* ``dataset`` — one dataset node; ``splits`` maps a split name to keywords merged over it, e.g.
  ``splits: {train: {split: train}, val: {split: val, num_clips: 64}}``.
* ``seed`` — the run's seed.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from cogframe.errors import ConfigError, problems_error
from cogframe.registry import Registries
from cogframe.signatures import keyword_problems

__all__ = ["build_split", "output_dir", "require", "section", "seed_everything", "split_names", "validate_splits"]


def require(cfg: DictConfig, key: str, example: str) -> Any:
    """``cfg.<key>`` or a ConfigError saying which key to add (with an example value)."""
    value = OmegaConf.select(cfg, key, default=None)
    if value is None:
        raise ConfigError(f"task '{cfg.get('task')}' needs '{key}' in the recipe; add e.g. `{key}: {example}`.")
    return value


def section(cfg: DictConfig, key: str) -> dict:
    """``cfg.<key>`` as a plain dict (empty when absent); ConfigError when it is not a mapping."""
    node = OmegaConf.select(cfg, key, default=None)
    if node is None:
        return {}
    if not isinstance(node, DictConfig):
        raise ConfigError(f"'{key}' must be a mapping of settings, got {node!r}.")
    return OmegaConf.to_container(node, resolve=True)


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


def validate_splits(cfg: DictConfig, registries: Registries) -> None:
    """Checks each split's merged dataset keywords against the dataset's signature.

    Raises:
        ConfigError: Listing every unknown or ill-typed keyword, by split.
    """
    problems = []
    for split in split_names(cfg):
        node = _split_node(cfg, split)
        spec = registries.get("dataset", node.pop("name", None))
        problems += keyword_problems(spec.obj, node, where=f"splits.{split}", label=spec.label)
    if problems:
        raise problems_error("the dataset splits are invalid", problems)


def seed_everything(seed: int) -> None:
    """Seeds Python, numpy and torch (CPU and CUDA) so a run repeats exactly."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
