"""Task ``pipeline``: run several recipes in order, each in its own process, with progress output.

One command rebuilds everything a set of recipes makes, e.g. every shipped tiny model
(``cogframe run tiny/rebuild``): text tokenizer, VQ-VAE, token shards, text-to-image model, the two
video stages and the rest. Each step is one ``cogframe run RECIPE [overrides]`` in a child process
(so threads, memory and a crash stay inside the step) and names a ``done`` file that the step
writes last. A step whose ``done`` file exists is skipped, so an interrupted rebuild continues
where it stopped; ``force=true`` reruns every step (each recipe's own overwrite rules still apply,
so pass the overrides a fresh run needs). ``install`` copies the finished files (for instance into
the package's assets) only after every step has succeeded, each copy written atomically.

Recipe keys::

    task: pipeline
    output_dir: runs/tiny              # holds the lock and pipeline_log.jsonl
    steps:
      - {recipe: tiny/vqvae, done: runs/tiny/vqvae/model/model.safetensors}
      - {recipe: tiny/t2i, overrides: ["train.steps=2000"], done: runs/tiny/t2i/model.safetensors}
    install:                           # optional: [{from: FILE_OR_FOLDER, to: FILE_OR_FOLDER}]
      - {from: runs/tiny/t2i/model.safetensors, to: my_assets/t2i.safetensors}
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cogframe.errors import ConfigError, Problem
from cogframe.hookspecs import hookimpl
from cogframe.plugins._run_folder import locks_run_folder
from cogframe.plugins._task_helpers import check_recipe, task_settings
from cogframe.registry import Registries, component

__all__ = ["PipelineTask", "PipelineSettings"]


@dataclass(frozen=True)
class PipelineSettings:
    """The top-level keys of a pipeline recipe.

    Attributes:
        output_dir: Folder of the pipeline's lock and ``pipeline_log.jsonl``.
        steps: ``{recipe, overrides (list of "key=value"), done}`` per step, run in order.
        install: ``{from, to}`` copies made after the last step succeeded.
        force: Rerun steps whose ``done`` file exists.
    """

    output_dir: str
    steps: list[dict[str, Any]] = field(default_factory=list)
    install: list[dict[str, Any]] = field(default_factory=list)
    force: bool = False

    def problems(self) -> list[Problem]:
        """Each step names a recipe and a done file; overrides are a list; installs name both ends."""
        found = []
        if not self.steps:
            found.append(Problem("steps", "is empty: a pipeline needs at least one step",
                                 "add steps: [{recipe: NAME, done: FILE}]"))
        for i, step in enumerate(self.steps):
            unknown = sorted(set(step) - {"recipe", "overrides", "done"})
            if unknown:
                found.append(Problem(f"steps.{i}", f"has unknown keys {unknown}",
                                     "a step takes recipe, overrides and done"))
            for key in ("recipe", "done"):
                if not isinstance(step.get(key), str) or not step.get(key):
                    found.append(Problem(f"steps.{i}.{key}", "is missing",
                                         f"name the {'recipe to run' if key == 'recipe' else 'file the step writes last'}"))
            overrides = step.get("overrides", [])
            if not isinstance(overrides, list) or not all(isinstance(o, str) and "=" in o for o in overrides):
                found.append(Problem(f"steps.{i}.overrides", f"must be a list of 'key=value' strings, got {overrides!r}",
                                     'e.g. overrides: ["train.steps=100"]'))
        for i, item in enumerate(self.install):
            if sorted(item) != ["from", "to"] or not all(isinstance(v, str) and v for v in item.values()):
                found.append(Problem(f"install.{i}", f"must be {{from: PATH, to: PATH}}, got {item!r}",
                                     "name the file or folder to copy and its destination"))
        return found


def _copy_atomically(source: Path, target: Path) -> None:
    """Copies a file or folder to ``target`` through a temporary sibling, then renames it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
    if source.is_dir():
        shutil.copytree(source, tmp)
        if target.exists():
            shutil.rmtree(target)  # a folder cannot be renamed over a non-empty one
    else:
        shutil.copy2(source, tmp)
    os.replace(tmp, target)


def _format_seconds(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s"


@component("task", "pipeline", description="Run several recipes in order (skipping finished steps), then install their outputs.")
class PipelineTask:
    """Runs each step's recipe in a child ``cogframe run`` and reports progress and timings."""

    slots: dict[str, str] = {}
    list_slots = ()
    sections = {"": PipelineSettings}

    def validate(self, cfg: DictConfig, registries: Registries) -> None:
        """Checks the whole recipe for this task; raises one ConfigError listing every problem."""
        check_recipe(self, cfg, registries)

    def problems(self, cfg: DictConfig, registries: Registries) -> list[Problem]:
        """Every step's recipe must exist (loading it is cheap; running it is what the step does)."""
        from cogframe.config.recipes import load_recipe

        settings = task_settings(self, cfg)
        if settings is None:
            return []
        found = []
        for i, step in enumerate(settings[""].steps):
            if not isinstance(step.get("recipe"), str):
                continue
            try:
                load_recipe(step["recipe"], list(step.get("overrides", [])))
            except ConfigError as exc:
                found.append(Problem(f"steps.{i}.recipe", f"cannot be loaded: {exc}", "fix the recipe name or its overrides"))
        return found

    @locks_run_folder("output_dir")
    def run(self, cfg: DictConfig, registries: Registries) -> None:
        """Runs the steps in order; stops at the first failing step with its exit status."""
        s: PipelineSettings = task_settings(self, cfg, strict=True)[""]
        out = Path(s.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        log_path = out / "pipeline_log.jsonl"
        total = len(s.steps)
        started = time.perf_counter()
        for index, step in enumerate(s.steps, start=1):
            recipe, done = step["recipe"], Path(step["done"])
            overrides = list(step.get("overrides", []))
            label = f"[{index}/{total}] {recipe}" + (f" {' '.join(overrides)}" if overrides else "")
            if done.exists() and not s.force:
                print(f"{label}: done already ({done} exists), skipped", flush=True)
                continue
            print(f"{label}: running ...", flush=True)
            step_start = time.perf_counter()
            command = [sys.executable, "-m", "cogframe", "run", recipe, *overrides]
            status = subprocess.call(command)
            seconds = time.perf_counter() - step_start
            record = {"step": index, "recipe": recipe, "overrides": overrides, "status": status,
                      "seconds": round(seconds, 1), "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
            with open(log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            if status != 0:
                raise ConfigError(f"pipeline step {label} failed with exit status {status} after "
                                  f"{_format_seconds(seconds)}; fix it and run the pipeline again (finished steps "
                                  "are skipped).")
            if not done.exists():
                raise ConfigError(f"pipeline step {label} finished but did not write its done file {done}; "
                                  "fix the step's `done:` path in the pipeline recipe.")
            print(f"{label}: finished in {_format_seconds(seconds)} "
                  f"(total {_format_seconds(time.perf_counter() - started)})", flush=True)
        for item in s.install:
            source, target = Path(item["from"]), Path(item["to"])
            if not source.exists():
                raise ConfigError(f"pipeline install: {source} does not exist; the step that writes it did not run.")
            _copy_atomically(source, target)
            print(f"installed {source} -> {target}", flush=True)
        print(f"pipeline finished in {_format_seconds(time.perf_counter() - started)}", flush=True)


@hookimpl
def register_components():
    """The ``pipeline`` task."""
    return [PipelineTask]
