"""``video_folder``: captioned clips from a folder of mp4/gif/webm files plus ``captions.jsonl``.

Folder layout::

    root/
      captions.jsonl        # one JSON object per line: {"video": "<path relative to root>", "caption": "..."}
      clips/0001.mp4 ...

A line may also carry ``"split": "train"`` or ``"val"`` (``export_dataset`` writes it); lines
without one are assigned by a stable hash of the file name and ``val_fraction``.

Clips are decoded with imageio (v3 API) when accessed and resized/centre-cropped to ``size``.
Unusable entries are skipped and recorded in :attr:`VideoFolder.skip_log`: caption lines whose file
is missing or whose JSON is malformed (found when the dataset is built), and files that cannot be
decoded or have fewer than ``min_frames`` frames (found when accessed). :meth:`VideoFolder.report`
lists them by file name. With ``strict=True`` the first such entry raises
:class:`~cogframe.errors.DataError` naming the file instead.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Iterator, Literal

from cogframe.core.io.datasets import SkipLog
from cogframe.core.io.video import VIDEO_EXTENSIONS, VideoClip, read_video, resize_center_crop
from cogframe.errors import ConfigError, DataError
from cogframe.hookspecs import hookimpl
from cogframe.registry import component

__all__ = ["VideoFolder"]


def _in_val_split(rel_path: str, val_fraction: float) -> bool:
    # A stable hash of the file name (not Python's salted hash()) so the split never changes
    # between runs or machines, and adding files does not move existing ones across splits.
    return zlib.crc32(rel_path.encode("utf-8")) / 2**32 < val_fraction


@component("dataset", "video_folder",
           description="mp4/gif/webm files + captions.jsonl; bad clips are skipped and reported.")
class VideoFolder:
    """Clips listed in ``<root>/captions.jsonl``.

    Args:
        root: The dataset folder.
        size: Output frame side; frames are resized to cover it and centre-cropped (square).
        min_frames: Clips with fewer decoded frames are skipped (or raise when ``strict``).
        strict: Raise DataError on the first missing, malformed, unreadable or too-short entry.
        captions: Name of the captions file inside ``root``.
        split: ``all``, or ``train``/``val``: a line's own ``"split"`` field, else a stable hash
            of its file name.
        val_fraction: Share of files in ``val`` when splitting.

    Raises:
        DataError: ``captions.jsonl`` is missing, or (``strict``) an entry is bad.
    """

    def __init__(self, root: str, size: int = 32, min_frames: int = 5, strict: bool = False,
                 captions: str = "captions.jsonl", split: Literal["all", "train", "val"] = "all",
                 val_fraction: float = 0.1) -> None:
        if split not in ("all", "train", "val"):
            raise ConfigError(f"video_folder split must be 'all', 'train' or 'val', got {split!r}.")
        if not 0.0 <= val_fraction <= 1.0:
            raise ConfigError(f"video_folder val_fraction must be in [0, 1], got {val_fraction}.")
        if int(min_frames) < 1:
            raise ConfigError(f"video_folder min_frames must be >= 1, got {min_frames}.")
        self.root = Path(root)
        self.size = int(size)
        self.min_frames = int(min_frames)
        self.strict = bool(strict)
        self.split = split
        self.skip_log = SkipLog()
        self._skipped_indices: set[int] = set()
        self.entries: list[tuple[str, str]] = self._read_captions(self.root / captions, split, val_fraction)
        # Entry count before any decode-time skip; the denominator of the report.
        self.total_entries = len(self.entries) + len(self.skip_log)

    def _skip(self, item: str, reason: str, detail: str) -> None:
        if self.strict:
            raise DataError(f"video_folder {self.root}: {reason}: {item} ({detail}). Fix or remove that "
                            "entry, or set strict: false to skip bad entries and get a report instead.")
        self.skip_log.add(item, reason, detail)

    def _read_captions(self, path: Path, split: str, val_fraction: float) -> list[tuple[str, str]]:
        if not path.is_file():
            raise DataError(
                f"video_folder: no captions file at {path}. Create it with one JSON object per line, "
                '{"video": "<path relative to the folder>", "caption": "<text>"}; the export_dataset task '
                "(cogframe run tiny/export_moving_shapes) writes one.")
        entries = []
        for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{path.name}:{line_no}"
            try:
                record = json.loads(line)
                rel, caption = str(record["video"]), str(record["caption"]).strip()
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                self._skip(where, "malformed caption line",
                           f"expected {{\"video\": ..., \"caption\": ...}}: {type(exc).__name__}: {exc}")
                continue
            if split != "all":
                own = record.get("split") if isinstance(record, dict) else None
                entry_split = own if own in ("train", "val") else (
                    "val" if _in_val_split(rel, val_fraction) else "train")
                if entry_split != split:
                    continue
            if not caption:
                self._skip(rel, "empty caption", where)
            elif Path(rel).suffix.lower() not in VIDEO_EXTENSIONS:
                self._skip(rel, "unsupported file type", f"use one of {', '.join(VIDEO_EXTENSIONS)}")
            elif not (self.root / rel).is_file():
                self._skip(rel, "missing file", f"listed in {where}")
            else:
                entries.append((rel, caption))
        return entries

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> VideoClip | None:
        """Decodes entry ``index``; returns None (and records why) when it is unusable."""
        rel, caption = self.entries[index]
        try:
            frames, fps = read_video(self.root / rel)
        except DataError as exc:
            return self._skip_once(index, rel, "unreadable", str(exc).split(": ", 1)[-1][:200])
        if frames.shape[0] < self.min_frames:
            return self._skip_once(index, rel, "too short", f"{frames.shape[0]} frames < min_frames {self.min_frames}")
        return VideoClip(frames=resize_center_crop(frames, self.size), fps=fps, caption=caption,
                         source=str(self.root / rel), metadata={"path": rel})

    def _skip_once(self, index: int, rel: str, reason: str, detail: str) -> None:
        # Re-reading a bad entry (a second epoch, a retry) must not count it twice in the report.
        if index not in self._skipped_indices:
            self._skip(rel, reason, detail)
            self._skipped_indices.add(index)
        return None

    def __iter__(self) -> Iterator[VideoClip]:
        for index in range(len(self.entries)):
            clip = self[index]
            if clip is not None:
                yield clip

    def report(self) -> str:
        """Summary of skipped entries by reason, with file names."""
        return self.skip_log.summary(f"video_folder {self.root} ({self.split})", self.total_entries)


@hookimpl
def register_components():
    return [VideoFolder]
