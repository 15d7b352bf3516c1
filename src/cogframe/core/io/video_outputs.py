"""Where generated videos go and how they are written: ``NAME.mp4``, ``.gif``, ``.png``, ``.json``.

``out`` is a folder when it ends with ``/`` (or is an existing folder) and a file stem otherwise:

| out | one prompt | several prompts |
|---|---|---|
| ``runs/samples/`` | ``runs/samples/<slug>.*`` | ``runs/samples/000_<slug>.*``, ``001_<slug>.*`` ... |
| ``runs/samples/red`` | ``runs/samples/red.*`` | ``runs/samples/red_000.*``, ``red_001.*`` ... |

The four files of one video are written together: each to a temporary file first, then all
renamed. An error in any writer removes every temporary file, so a video is either complete on
disk or absent, and the JSON (renamed last) always describes files that exist.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cogframe.core.io.atomic import atomic_path, atomic_write_json
from cogframe.core.io.video import VIDEO_EXTENSIONS, contact_sheet, write_video

__all__ = ["OUTPUT_SUFFIXES", "output_stems", "slug", "upscale", "write_sample"]

OUTPUT_SUFFIXES = (".mp4", ".gif", ".png", ".json")
_SLUG_MAX = 60


def slug(text: str) -> str:
    """A file-name-safe version of a prompt: word characters joined by ``_`` (``sample`` if none)."""
    words = re.sub(r"[^\w]+", "_", text.lower(), flags=re.UNICODE).strip("_")
    return words[:_SLUG_MAX].rstrip("_") or "sample"


def output_stems(out: str | os.PathLike, captions: Sequence[str]) -> list[Path]:
    """The file stem of each caption's outputs (see the module docstring)."""
    text = os.fspath(out)
    folder = text.endswith(("/", os.sep)) or Path(text).is_dir()
    root = Path(text).expanduser()
    if folder:
        if len(captions) == 1:
            return [root / slug(captions[0])]
        return [root / f"{i:03d}_{slug(c)}" for i, c in enumerate(captions)]
    if root.suffix.lower() in (*VIDEO_EXTENSIONS, ".png", ".json"):
        root = root.with_suffix("")  # out=clip.mp4 means the stem "clip"
    if len(captions) == 1:
        return [root]
    return [root.with_name(f"{root.name}_{i:03d}") for i in range(len(captions))]


def upscale(frames: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour enlargement of ``[T, H, W, 3]`` frames (tiny 32x32 videos are hard to see)."""
    if scale == 1:
        return frames
    return np.ascontiguousarray(frames.repeat(scale, axis=1).repeat(scale, axis=2))


def _readable(path: Path) -> None:
    """Give a finished output the permissions of a normal new file (temporary files are 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def write_sample(stem: str | os.PathLike, frames: np.ndarray, fps: float, record: dict[str, Any], *,
                 scale: int = 1) -> dict[str, str]:
    """Write one video as ``stem.mp4``, ``stem.gif``, a contact sheet ``stem.png`` and ``stem.json``.

    Args:
        stem: Path without extension.
        frames: uint8 ``[T, H, W, 3]``.
        fps: Frame rate of ``frames``.
        record: What the JSON holds (prompt, seed, passes, timings ...); ``files`` is added.
        scale: Nearest-neighbour upscaling of the written media.

    Returns:
        The written paths by kind: ``mp4``, ``gif``, ``png``, ``json``.
    """
    stem = Path(stem)
    paths = {suffix[1:]: stem.with_name(stem.name + suffix) for suffix in OUTPUT_SUFFIXES}
    shown = upscale(frames, scale)
    with contextlib.ExitStack() as stack:
        # Entered first, so renamed last: a JSON on disk means its media are complete.
        json_tmp = stack.enter_context(atomic_path(paths["json"]))
        tmp = {kind: stack.enter_context(atomic_path(paths[kind])) for kind in ("mp4", "gif", "png")}
        write_video(tmp["mp4"], shown, fps)
        write_video(tmp["gif"], shown, fps)
        contact_sheet(shown, tmp["png"])
        files = {kind: paths[kind].name for kind in ("mp4", "gif", "png")}
        atomic_write_json(json_tmp, {**record, "files": files})
        for path in (json_tmp, *tmp.values()):
            _readable(path)
    return {kind: str(path) for kind, path in paths.items()}
