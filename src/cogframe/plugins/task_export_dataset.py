"""Task ``export_dataset``: write any dataset to disk as video files + ``captions.jsonl``.

The result is exactly what the ``video_folder`` dataset reads, so the synthetic domain can be
inspected with a video player and pushed through the same path as real footage::

    output_dir/
      captions.jsonl              {"video": "videos/train_000000.mp4", "caption": "a red circle moving up", ...}
      videos/train_000000.mp4 ...

Every file is written atomically; files already present are kept (unless ``overwrite: true``),
so an interrupted export resumes where it stopped. ``captions.jsonl`` is written last and records
each clip's split, which ``video_folder`` honours.

Recipe keys::

    output_dir: runs/tiny/moving_shapes_videos
    format: mp4            # or gif, webm
    overwrite: false       # true: re-encode files that already exist (e.g. after changing the dataset)
    dataset: {name: moving_shapes}
    splits: {train: {split: train, num_clips: 64}, val: {split: val, num_clips: 16}}
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

from omegaconf import DictConfig
from tqdm import tqdm

from cogframe.core.io.atomic import atomic_write_text
from cogframe.core.io.datasets import iter_clips
from cogframe.core.io.video import write_video
from cogframe.errors import Problem
from cogframe.hookspecs import hookimpl
from cogframe.plugins._task_helpers import (
    build_split,
    check_recipe,
    output_dir,
    split_names,
    split_problems,
    task_settings,
)
from cogframe.registry import Registries, component
from cogframe.plugins._run_folder import locks_run_folder

__all__ = ["ExportDatasetTask"]

_FORMATS = ("mp4", "gif", "webm")


@dataclass(frozen=True)
class ExportSettings:
    """The top-level scalar keys of an export_dataset recipe.

    Attributes:
        output_dir: The folder of ``videos/`` and ``captions.jsonl``.
        format: Video container: mp4, gif or webm.
        overwrite: Re-encode files that already exist.
    """

    output_dir: str
    format: str = "mp4"
    overwrite: bool = False

    @property
    def extension(self) -> str:
        """``format`` without case or a leading dot (``.MP4`` -> ``mp4``)."""
        return self.format.lower().lstrip(".")

    def problems(self) -> list[Problem]:
        """A supported format."""
        if self.extension not in _FORMATS:
            return [Problem("format", f"{self.format!r} is not supported", f"use one of {', '.join(_FORMATS)}")]
        return []


@component("task", "export_dataset",
           description="Write a dataset as video files + captions.jsonl (video_folder layout).")
class ExportDatasetTask:
    """Exports every split of ``dataset`` into one folder readable by ``video_folder``."""

    slots = {"dataset": "dataset"}

    list_slots = ()
    sections = {"": ExportSettings}
    recipe_keys = ("splits",)

    def validate(self, cfg: DictConfig, registries: Registries) -> None:
        """Checks the whole recipe for this task; raises one ConfigError listing every problem."""
        check_recipe(self, cfg, registries)

    def problems(self, cfg: DictConfig, registries: Registries) -> list[Problem]:
        """The split keywords (sections and slots: validation)."""
        return split_problems(cfg, registries)

    @locks_run_folder("output_dir")
    def run(self, cfg: DictConfig, registries: Registries) -> None:
        """Writes the videos, then ``captions.jsonl``."""
        settings = task_settings(self, cfg, strict=True)[""]  # checked once, by validation
        fmt, overwrite = settings.extension, settings.overwrite
        out = output_dir(cfg)
        records, written, kept = [], 0, 0
        for split in split_names(cfg):
            dataset = build_split(cfg, registries, split)
            for index, clip in tqdm(iter_clips(dataset), total=len(dataset), desc=f"export {split}",
                                    unit="clip", file=sys.stderr):
                rel = f"videos/{split}_{index:06d}.{fmt}"
                if (out / rel).is_file() and not overwrite:
                    kept += 1  # atomic writes: an existing file is always complete
                else:
                    write_video(out / rel, clip.frames, clip.fps)
                    written += 1
                meta = {k: v for k, v in clip.metadata.items() if isinstance(v, (str, int, float))}
                records.append({"video": rel, "caption": clip.caption, "split": split, "fps": clip.fps, **meta})
        atomic_write_text(out / "captions.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
        print(f"exported {len(records)} clips to {out} ({written} written, {kept} already present); "
              f"read them back with dataset: {{name: video_folder, root: {out}}}")


@hookimpl
def register_components():
    return [ExportDatasetTask]
