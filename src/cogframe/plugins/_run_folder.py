"""``@locks_run_folder``: a task's ``run`` holds its run folder's lock from start to end.

Not a plugin (it registers nothing). Every task that writes a run folder decorates its ``run``::

    @locks_run_folder("output_dir")
    def run(self, cfg, registries): ...

so a second ``cogframe run`` into the same folder fails at once, naming the first run's PID
(:mod:`cogframe.core.io.run_lock`). Under torchrun only rank 0 takes the lock: the ranks of one
job write one folder together, and the other ranks cannot write anything before rank 0 has
joined the process group, which it does only after locking.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig, OmegaConf

from cogframe.core.io.run_lock import LOCK_FILE, run_lock

__all__ = ["locks_run_folder", "is_main_process", "sample_lock_target"]


def is_main_process() -> bool:
    """False only in a torchrun worker of rank > 0 (``WORLD_SIZE`` > 1 and ``RANK`` > 0)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return True
    return int(os.environ.get("RANK", "0")) == 0


def sample_lock_target(cfg: DictConfig) -> tuple[Path, str, str] | None:
    """``(folder, lock file name, description)`` for a sample run's ``out``.

    A folder ``out`` (trailing ``/`` or an existing folder) locks the folder; a file stem
    ``out=runs/x/red`` locks only that stem (``runs/x/.red.cogframe.lock``), so runs writing
    other names into the same folder are not held up.
    """
    out = OmegaConf.select(cfg, "out", default=None)
    if out is None:
        return None
    text = str(out)
    path = Path(text).expanduser()
    if text.endswith(("/", os.sep)) or path.is_dir():
        return path, LOCK_FILE, f"out folder {path}"
    stem = path.with_suffix("") if path.suffix.lower() in (".mp4", ".gif", ".webm", ".png", ".json") else path
    return stem.parent, f".{stem.name}{LOCK_FILE}", f"out {stem} (its .mp4/.gif/.png/.json)"


def locks_run_folder(key: str | Callable[[DictConfig], tuple[Path, str, str] | None] = "output_dir"):
    """Decorate a task's ``run(self, cfg, registries)`` to hold the lock of its run folder.

    Args:
        key: The recipe key naming the run folder, or a function of the recipe returning
            ``(folder, lock file name, description)`` (None: nothing to lock).
    """

    def decorate(run):
        @functools.wraps(run)
        def locked(self, cfg: DictConfig, registries, *args, **kwargs):
            if callable(key):
                target = key(cfg)
            else:
                folder = OmegaConf.select(cfg, key, default=None)
                target = None if folder is None else (Path(str(folder)), LOCK_FILE, f"{key} {folder}")
            if target is None:  # the task reports the missing key itself
                return run(self, cfg, registries, *args, **kwargs)
            folder, name, what = target
            with run_lock(folder, name=name, what=what, enabled=is_main_process()):
                return run(self, cfg, registries, *args, **kwargs)

        return locked

    return decorate
