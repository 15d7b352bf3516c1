"""Where generated videos go and how they are written: ``NAME.mp4``, ``.gif``, ``.png``, ``.json``.

``out`` is a folder when it ends with ``/`` (or is an existing folder) and a file stem otherwise:

| out | one prompt | several prompts |
|---|---|---|
| ``runs/samples/`` | ``runs/samples/<slug>.*`` | ``runs/samples/000_<slug>.*``, ``001_<slug>.*`` ... |
| ``runs/samples/red`` | ``runs/samples/red.*`` | ``runs/samples/red_000.*``, ``red_001.*`` ... |

The four files of one video are written together: each to a temporary file first, then all
renamed. An error in any writer removes every temporary file, so a video is either complete on
disk or absent, and the JSON (renamed last) always describes files that exist. An earlier video
of the same name is never replaced unless ``overwrite`` is set (a recipe's ``overwrite: true``,
``cogframe demo --overwrite``).

Naming outputs imports no torch (the sample task checks them while validating); writing does.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from cogframe.core.io.atomic import atomic_path, atomic_write_json
from cogframe.errors import ConfigError

if TYPE_CHECKING:  # numpy is imported where frames are written: naming outputs (validate) needs none
    import numpy as np

__all__ = ["OUTPUT_SUFFIXES", "output_stems", "overwrite_problem", "slug", "upscale", "write_generated_video"]

OUTPUT_SUFFIXES = (".mp4", ".gif", ".png", ".json")
# `out=clip.mp4` means the stem "clip": our own suffixes plus the containers core/io/video.py
# reads (listed here so that naming outputs does not import the video module, and with it torch).
_STEM_SUFFIXES = (*OUTPUT_SUFFIXES, ".avi", ".mov", ".mkv", ".webm")
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
    if root.suffix.lower() in _STEM_SUFFIXES:
        root = root.with_suffix("")  # out=clip.mp4 means the stem "clip"
    if len(captions) == 1:
        return [root]
    return [root.with_name(f"{root.name}_{i:03d}") for i in range(len(captions))]


def upscale(frames: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour enlargement of ``[T, H, W, 3]`` frames (tiny 32x32 videos are hard to see)."""
    if scale == 1:
        return frames
    import numpy as np

    return np.ascontiguousarray(frames.repeat(scale, axis=1).repeat(scale, axis=2))


def _readable(path: Path) -> None:
    """Give a finished output the permissions of a normal new file (temporary files are 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def overwrite_problem(existing: Sequence[Path]) -> str:
    """The message refusing to replace ``existing`` files (names the first ones and the fix)."""
    shown = ", ".join(str(p) for p in existing[:4]) + (f" and {len(existing) - 4} more" if len(existing) > 4 else "")
    return (f"out: {shown} already exist{'s' if len(existing) == 1 else ''} (an earlier video of the same "
            "name); nothing was written. Choose another out, delete the files, or replace them with "
            "overwrite=true (cogframe demo: --overwrite)")


def write_generated_video(stem: str | os.PathLike, frames: np.ndarray, fps: float, record: dict[str, Any], *,
                          scale: int = 1, overwrite: bool = False) -> dict[str, str]:
    """Write one video as ``stem.mp4``, ``stem.gif``, a contact sheet ``stem.png`` and ``stem.json``.

    Args:
        stem: Path without extension.
        frames: uint8 ``[T, H, W, 3]``.
        fps: Frame rate of ``frames``.
        record: What the JSON holds (prompt, seed, passes, timings ...); ``files`` is added.
        scale: Nearest-neighbour upscaling of the written media.
        overwrite: Replace files of the same names (default: refuse before writing anything).

    Returns:
        The written paths by kind: ``mp4``, ``gif``, ``png``, ``json``.

    Raises:
        ConfigError: One of the files exists and ``overwrite`` is False.
    """
    from cogframe.core.io.video import contact_sheet, write_video

    stem = Path(stem)
    paths = {suffix[1:]: stem.with_name(stem.name + suffix) for suffix in OUTPUT_SUFFIXES}
    existing = [p for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise ConfigError(overwrite_problem(existing))
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
