"""``video_folder``: captioned clips from a folder of video files plus a captions file.

Folder layout::

    root/
      captions.jsonl        # one JSON object per line: {"video": "<path relative to root>", "caption": "..."}
      clips/0001.mp4 ...

or, instead of ``captions.jsonl``, a CSV file with a header row (``captions: captions.csv``), the
layout most public video-caption datasets ship::

    path,caption
    clips/0001.mp4,a red circle moving left

The path and caption fields are found by name: ``video_key`` / ``caption_key`` when given, else the
first of :data:`VIDEO_KEYS` / :data:`CAPTION_KEYS` present. A line or row may also carry
``split`` (``train`` or ``val``; ``export_dataset`` writes it); entries without one are assigned
by a stable hash of the file name and ``val_fraction``.

Reading: ``dataset[i]`` decodes the whole clip (imageio's v3 API) for consumers that need every
frame. Consumers that only need a few frames (the ``prepare`` task) call :meth:`VideoFolder.probe`
(frame count and rate, from the container without decoding pixels) and then
:meth:`VideoFolder.read_frames`, which seeks to the keyframe before each wanted frame and decodes
forward only to it (PyAV, :mod:`cogframe.plugins._video_decode`); the frames equal those of the
whole-file decode. Frames are resized/centre-cropped to ``size``.

Unusable entries are skipped and recorded in :attr:`VideoFolder.skip_log`: caption lines whose file
is missing or whose JSON is malformed (found when the dataset is built), and files that cannot be
decoded or have fewer than ``min_frames`` frames (found when accessed). :meth:`VideoFolder.report`
lists them by file name. With ``strict=True`` the first such entry raises
:class:`~cogframe.errors.DataError` naming the file instead.
"""

from __future__ import annotations

import csv
import io
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

import numpy as np

from cogframe.core.io.datasets import SkipLog
from cogframe.core.io.video import VIDEO_EXTENSIONS, VideoClip, read_video, resize_center_crop
from cogframe.errors import ConfigError, DataError
from cogframe.hookspecs import hookimpl
from cogframe.registry import component

__all__ = ["CAPTION_KEYS", "ClipInfo", "VIDEO_KEYS", "VideoFolder"]

VIDEO_KEYS = ("video", "path", "file", "filename", "video_path", "videopath")
"""Field names tried, in order, for a clip's file when ``video_key`` is not given."""

CAPTION_KEYS = ("caption", "text", "prompt", "name", "description")
"""Field names tried, in order, for a clip's caption when ``caption_key`` is not given."""

_CAPTION_FORMATS = (".jsonl", ".csv", ".tsv")


@dataclass(frozen=True)
class ClipInfo:
    """What :meth:`VideoFolder.probe` knows of a clip before decoding any frame.

    Attributes:
        num_frames: Frames in the file.
        fps: Its native frame rate.
        caption: The caption.
        source: The file's full path.
        metadata: ``{"path": <path relative to the root>}``.
    """

    num_frames: int
    fps: float
    caption: str
    source: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _in_val_split(rel_path: str, val_fraction: float) -> bool:
    # A stable hash of the file name (not Python's salted hash()) so the split never changes
    # between runs or machines, and adding files does not move existing ones across splits.
    return zlib.crc32(rel_path.encode("utf-8")) / 2**32 < val_fraction


def _pick_key(given: str | None, fields: Sequence[str], candidates: Sequence[str]) -> str | None:
    if given:
        return given if given in fields else None
    return next((k for k in candidates if k in fields), None)


@component("dataset", "video_folder",
           description="video files + captions.jsonl or a CSV; reads only the frames it needs; bad clips reported.")
class VideoFolder:
    """Clips listed in ``<root>/captions.jsonl`` (or a CSV of paths and captions).

    Args:
        root: The dataset folder.
        size: Output frame side; frames are resized to cover it and centre-cropped (square).
        min_frames: Clips with fewer frames are skipped (or raise when ``strict``).
        strict: Raise DataError on the first missing, malformed, unreadable or too-short entry.
        captions: The captions file inside ``root`` (or an absolute path): ``.jsonl`` (one JSON
            object per line) or ``.csv`` / ``.tsv`` with a header row.
        video_key: Name of the field holding the video path; default: the first of
            :data:`VIDEO_KEYS` present.
        caption_key: Name of the field holding the caption; default: the first of
            :data:`CAPTION_KEYS` present.
        split: ``all``, or ``train``/``val``: an entry's own ``split`` field, else a stable hash
            of its file name.
        val_fraction: Share of files in ``val`` when splitting.
        seek: Decode only the frames asked for in :meth:`read_frames` (PyAV); False decodes whole
            files (also the behaviour when PyAV is not installed, and for GIFs).

    Raises:
        DataError: The captions file is missing, or its header lacks the path or caption column,
            or (``strict``) an entry is bad.
        ConfigError: A bad keyword value.
    """

    def __init__(self, root: str, size: int = 32, min_frames: int = 5, strict: bool = False,
                 captions: str = "captions.jsonl", video_key: str | None = None, caption_key: str | None = None,
                 split: Literal["all", "train", "val"] = "all", val_fraction: float = 0.1,
                 seek: bool = True) -> None:
        if split not in ("all", "train", "val"):
            raise ConfigError(f"video_folder split must be 'all', 'train' or 'val', got {split!r}.")
        if not 0.0 <= val_fraction <= 1.0:
            raise ConfigError(f"video_folder val_fraction must be in [0, 1], got {val_fraction}.")
        if int(min_frames) < 1:
            raise ConfigError(f"video_folder min_frames must be >= 1, got {min_frames}.")
        if Path(captions).suffix.lower() not in _CAPTION_FORMATS:
            raise ConfigError(f"video_folder captions must be a .jsonl, .csv or .tsv file, got {captions!r}; "
                              "e.g. captions: captions.csv.")
        self.root = Path(root)
        self.size = int(size)
        self.min_frames = int(min_frames)
        self.strict = bool(strict)
        self.split = split
        self.seek = bool(seek)
        self.video_key, self.caption_key = video_key, caption_key
        self.skip_log = SkipLog()
        self._skipped_indices: set[int] = set()
        self._reader: tuple[int, Any] | None = None  # the file probe() opened, kept for read_frames()
        path = self.root / captions
        self.entries: list[tuple[str, str]] = self._read_captions(path, split, val_fraction)
        # Entry count before any decode-time skip; the denominator of the report.
        self.total_entries = len(self.entries) + len(self.skip_log)

    def _skip(self, item: str, reason: str, detail: str) -> None:
        if self.strict:
            raise DataError(f"video_folder {self.root}: {reason}: {item} ({detail}). Fix or remove that "
                            "entry, or set strict: false to skip bad entries and get a report instead.")
        self.skip_log.add(item, reason, detail)

    # ---- the captions file -------------------------------------------------------------------------
    def _read_captions(self, path: Path, split: str, val_fraction: float) -> list[tuple[str, str]]:
        if not path.is_file():
            raise DataError(
                f"video_folder: no captions file at {path}. Create it with one JSON object per line, "
                '{"video": "<path relative to the folder>", "caption": "<text>"}, or a CSV with a header row '
                "(path,caption) and set captions: <file>.csv; the export_dataset task "
                "(cogframe run tiny/export_moving_shapes) writes a captions.jsonl.")
        text = path.read_text(encoding="utf-8-sig")  # -sig: spreadsheet programs often write a BOM
        records = self._csv_records(path, text) if path.suffix.lower() in (".csv", ".tsv") \
            else self._jsonl_records(path, text)
        entries = []
        for where, record in records:
            if record is None:
                continue
            rel, caption = record["video"], record["caption"]
            if split != "all":
                own = record.get("split")
                entry_split = own if own in ("train", "val") else (
                    "val" if _in_val_split(rel, val_fraction) else "train")
                if entry_split != split:
                    continue
            if not rel:
                self._skip(where, "empty video path", "the path field is empty")
            elif not caption:
                self._skip(rel, "empty caption", where)
            elif Path(rel).suffix.lower() not in VIDEO_EXTENSIONS:
                self._skip(rel, "unsupported file type", f"use one of {', '.join(VIDEO_EXTENSIONS)}")
            elif not (self.root / rel).is_file():
                self._skip(rel, "missing file", f"listed in {where}")
            else:
                entries.append((rel, caption))
        return entries

    def _jsonl_records(self, path: Path, text: str) -> Iterator[tuple[str, dict | None]]:
        for line_no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{path.name}:{line_no}"
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise TypeError(f"a line must be a JSON object, got {type(record).__name__}")
                video_key = _pick_key(self.video_key, list(record), VIDEO_KEYS)
                caption_key = _pick_key(self.caption_key, list(record), CAPTION_KEYS)
                if video_key is None or caption_key is None:
                    missing = (self.video_key or "video") if video_key is None else (self.caption_key or "caption")
                    raise KeyError(missing)
                yield where, {"video": str(record[video_key]).strip(), "caption": str(record[caption_key]).strip(),
                              "split": record.get("split")}
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                self._skip(where, "malformed caption line",
                           f"expected {{\"{self.video_key or 'video'}\": ..., \"{self.caption_key or 'caption'}\": ...}}: "
                           f"{type(exc).__name__}: {exc}")
                yield where, None

    def _csv_records(self, path: Path, text: str) -> Iterator[tuple[str, dict | None]]:
        reader = csv.DictReader(io.StringIO(text), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        fields = [f.strip() for f in (reader.fieldnames or [])]
        reader.fieldnames = fields
        video_key = _pick_key(self.video_key, fields, VIDEO_KEYS)
        caption_key = _pick_key(self.caption_key, fields, CAPTION_KEYS)
        if video_key is None or caption_key is None:
            # A header problem concerns every row: an error, not a skip, whatever `strict` says.
            what, given, tried = (("video path", self.video_key, VIDEO_KEYS) if video_key is None
                                  else ("caption", self.caption_key, CAPTION_KEYS))
            knob = "video_key" if video_key is None else "caption_key"
            looked = f"the column {given!r}" if given else f"any of the columns {', '.join(tried)}"
            raise DataError(
                f"video_folder: {path} has no {what} column: its header is {fields or '(empty)'}, without "
                f"{looked}. Name the column with {knob}=<column> (e.g. dataset.{knob}={fields[0] if fields else 'path'}), "
                "or add a header row such as `path,caption`.")
        for row in reader:
            where = f"{path.name}:{reader.line_num}"
            if None in row or row.get(caption_key) is None:
                self._skip(where, "malformed caption line",
                           f"expected {len(fields)} fields ({', '.join(fields)}); quote captions holding commas")
                yield where, None
                continue
            yield where, {"video": (row.get(video_key) or "").strip(), "caption": (row.get(caption_key) or "").strip(),
                          "split": (row.get("split") or "").strip() or None}

    # ---- reading clips -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> VideoClip | None:
        """Decodes all of entry ``index``; returns None (and records why) when it is unusable."""
        rel, caption = self.entries[index]
        try:
            frames, fps = read_video(self.root / rel)
        except DataError as exc:
            return self._skip_once(index, rel, "unreadable", str(exc).split(": ", 1)[-1][:200])
        if frames.shape[0] < self.min_frames:
            return self._skip_once(index, rel, "too short", f"{frames.shape[0]} frames < min_frames {self.min_frames}")
        return VideoClip(frames=resize_center_crop(frames, self.size), fps=fps, caption=caption,
                         source=str(self.root / rel), metadata={"path": rel})

    def probe(self, index: int) -> ClipInfo | None:
        """Frame count, rate and caption of entry ``index`` without decoding its pixels.

        The file stays open for a following :meth:`read_frames` of the same entry. Returns None
        (and records why) when the entry is unusable, exactly when ``dataset[index]`` would.
        """
        from cogframe.plugins._video_decode import open_reader

        rel, caption = self.entries[index]
        self._close_reader()
        try:
            reader = open_reader(self.root / rel, seek=self.seek)
        except DataError as exc:
            return self._skip_once(index, rel, "unreadable", str(exc).split(": ", 1)[-1][:200])
        if reader.num_frames < self.min_frames:
            reader.close()
            return self._skip_once(index, rel, "too short", f"{reader.num_frames} frames < min_frames {self.min_frames}")
        self._reader = (index, reader)
        return ClipInfo(num_frames=reader.num_frames, fps=reader.fps, caption=caption,
                        source=str(self.root / rel), metadata={"path": rel})

    def read_frames(self, index: int, frame_indices: Sequence[int]) -> np.ndarray | None:
        """Frames ``frame_indices`` of entry ``index``, resized: ``uint8 [len, size, size, 3]``.

        Only the groups of pictures holding those frames are decoded (PyAV); the frames equal
        ``dataset[index].frames[frame_indices]``. Returns None (and records why) when decoding fails.
        """
        from cogframe.plugins._video_decode import open_reader

        rel, _ = self.entries[index]
        try:
            if self._reader is not None and self._reader[0] == index:
                reader = self._reader[1]
            else:
                self._close_reader()
                reader = open_reader(self.root / rel, seek=self.seek)
            try:
                frames = reader.frames(frame_indices)
            finally:
                reader.close()
                self._reader = None
        except DataError as exc:
            return self._skip_once(index, rel, "unreadable", str(exc).split(": ", 1)[-1][:200])
        return resize_center_crop(np.ascontiguousarray(frames[..., :3], dtype=np.uint8), self.size)

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader[1].close()
            self._reader = None

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
