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

from omegaconf import DictConfig
from tqdm import tqdm

from cogframe.core.io.atomic import atomic_write_text
from cogframe.core.io.datasets import iter_clips
from cogframe.core.io.video import write_video
from cogframe.errors import ConfigError
from cogframe.hookspecs import hookimpl
from cogframe.plugins._task_helpers import build_split, output_dir, split_names, validate_splits
from cogframe.registry import Registries, component

__all__ = ["ExportDatasetTask"]

_FORMATS = ("mp4", "gif", "webm")


@component("task", "export_dataset",
           description="Write a dataset as video files + captions.jsonl (video_folder layout).")
class ExportDatasetTask:
    """Exports every split of ``dataset`` into one folder readable by ``video_folder``."""

    slots = {"dataset": "dataset"}

    def validate(self, cfg: DictConfig, registries: Registries) -> None:
        """Checks the split keywords and ``format``."""
        validate_splits(cfg, registries)
        self._format(cfg)

    @staticmethod
    def _format(cfg: DictConfig) -> str:
        fmt = str(cfg.get("format", "mp4")).lower().lstrip(".")
        if fmt not in _FORMATS:
            raise ConfigError(f"export format {fmt!r} is not supported; use one of {', '.join(_FORMATS)}.")
        return fmt

    def run(self, cfg: DictConfig, registries: Registries) -> None:
        """Writes the videos, then ``captions.jsonl``."""
        fmt = self._format(cfg)
        overwrite = bool(cfg.get("overwrite", False))
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
