"""Video clips in memory and on disk: the :class:`VideoClip` record, reading, writing, resizing.

Frames are always ``uint8`` numpy arrays shaped ``[T, H, W, 3]`` (RGB). Supported files:

* ``.mp4`` / ``.webm`` / ``.mkv`` / ``.avi`` / ``.mov`` through ffmpeg (imageio-ffmpeg). Written as
  H.264 in ``yuv420p`` so every player opens them; that pixel format halves the chroma resolution,
  so thin coloured edges bleed slightly and its 2x2 chroma blocks require an even width and height.
* ``.gif`` through Pillow. GIF stores frame durations in whole centiseconds, so only frame rates
  that divide 100 (1, 2, 4, 5, 10, 20, 25, 50 fps) round-trip exactly; 8 fps is stored as 12 cs
  (8.33 fps).

All writes are atomic (temporary file + fsync + rename): an interrupted write leaves no partial
file under the final name.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cogframe.core.io.atomic import atomic_path
from cogframe.errors import DataError, ShapeError

__all__ = [
    "FFMPEG_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "VideoClip",
    "check_frames",
    "contact_sheet",
    "read_video",
    "resize_center_crop",
    "write_video",
]

FFMPEG_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov")
VIDEO_EXTENSIONS = FFMPEG_EXTENSIONS + (".gif",)

# Browsers and most viewers show GIF frames with a 0 or missing delay at ~10 fps; we do the same.
_GIF_DEFAULT_FRAME_MS = 100
# A GIF comment we write so a reader can undo Pillow's merging of identical consecutive frames
# (Pillow's GIF writer folds a repeated frame into the previous frame's duration).
_GIF_COMMENT_KEY = "cogframe:frame_ms="


def check_frames(frames: np.ndarray, what: str = "frames") -> np.ndarray:
    """Validates a ``uint8 [T, H, W, 3]`` frame array and returns it.

    Raises:
        ShapeError: Wrong rank, channel count, dtype or an empty clip.
    """
    if not isinstance(frames, np.ndarray):
        raise ShapeError(f"{what} must be a numpy array, got {type(frames).__name__}; "
                         "convert with numpy.asarray(...).")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ShapeError(f"{what} must have shape [T, H, W, 3] (RGB), got {list(frames.shape)}; "
                         "drop alpha with frames[..., :3] or add a time axis with frames[None].")
    if frames.dtype != np.uint8:
        raise ShapeError(f"{what} must be uint8 in [0, 255], got {frames.dtype}; convert with "
                         "(x * 255).round().clip(0, 255).astype(numpy.uint8) for [0, 1] floats.")
    if frames.shape[0] == 0:
        raise ShapeError(f"{what} has 0 frames (T dimension is empty); a clip needs at least one frame.")
    return frames


@dataclass
class VideoClip:
    """One captioned clip.

    Attributes:
        frames: ``uint8 [T, H, W, 3]`` RGB frames.
        fps: Native frame rate of ``frames``.
        caption: The text describing the clip.
        source: Where it came from (a file path or e.g. ``moving_shapes:train/000012``).
        metadata: Extra facts, e.g. ``shape``, ``colour`` and ``direction`` for synthetic clips.
    """

    frames: np.ndarray
    fps: float
    caption: str
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_frames(self.frames, f"frames of clip {self.source or '<unnamed>'}")
        if not self.fps > 0:
            raise ShapeError(f"clip {self.source or '<unnamed>'} has fps={self.fps}; fps must be positive.")

    @property
    def num_frames(self) -> int:
        """Number of frames T."""
        return int(self.frames.shape[0])

    @property
    def duration(self) -> float:
        """Seconds covered by the clip, ``T / fps``."""
        return self.num_frames / self.fps


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Reads a whole video file with imageio's v3 API.

    Args:
        path: An ``.mp4``/``.webm``/``.mkv``/``.avi``/``.mov`` or ``.gif`` file.

    Returns:
        ``(frames, fps)`` with ``frames`` ``uint8 [T, H, W, 3]``.

    Raises:
        DataError: The file is missing, empty, of an unknown type or cannot be decoded.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in VIDEO_EXTENSIONS:
        raise DataError(f"cannot read {path}: unsupported extension {ext!r}; "
                        f"use one of {', '.join(VIDEO_EXTENSIONS)}.")
    if not path.is_file():
        raise DataError(f"video file {path} does not exist; check the path (relative paths are "
                        "resolved from the current folder).")
    try:
        frames, fps = _read_gif(path) if ext == ".gif" else _read_ffmpeg(path)
    except DataError:
        raise
    except Exception as exc:  # imageio/ffmpeg/Pillow raise many types for corrupt input
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot decode video {path}: {first_line}. The file is corrupt or not a "
                        "video; re-export it or remove it from the dataset.") from exc
    if frames.ndim != 4 or frames.shape[0] == 0:
        raise DataError(f"video {path} decoded to no frames; re-export it or remove it from the dataset.")
    return np.ascontiguousarray(frames[..., :3], dtype=np.uint8), float(fps)


def _read_ffmpeg(path: Path) -> tuple[np.ndarray, float]:
    import imageio.v3 as iio

    with iio.imopen(path, "r", plugin="FFMPEG") as video:
        meta = video.metadata()
        frames = video.read(index=None)
    fps = float(meta.get("fps") or 0.0)
    if not math.isfinite(fps) or fps <= 0:
        raise DataError(f"video {path} has no usable frame rate in its metadata ({meta.get('fps')!r}); "
                        "re-encode it with an explicit rate, e.g. ffmpeg -i in.mp4 -r 8 out.mp4.")
    return np.asarray(frames), fps


def _read_gif(path: Path) -> tuple[np.ndarray, float]:
    import imageio.v3 as iio

    with iio.imopen(path, "r", plugin="pillow") as gif:
        frames = np.asarray(gif.read(index=None, mode="RGB"))
        if frames.ndim == 3:  # a single-frame GIF comes back without the time axis
            frames = frames[None]
        durations = [int(gif.metadata(index=i).get("duration") or 0) for i in range(frames.shape[0])]
        comment = gif.metadata(index=0).get("comment", b"")
    if isinstance(comment, bytes):
        comment = comment.decode("utf-8", "replace")
    base_ms = _gif_base_frame_ms(str(comment), durations)
    # Expand every stored frame to the number of base-rate frames it stands for, undoing the
    # merging of identical consecutive frames and resampling variable-delay GIFs to a constant rate.
    repeats = [max(1, round((d if d > 0 else base_ms) / base_ms)) for d in durations]
    frames = np.repeat(frames, repeats, axis=0)
    return frames, 1000.0 / base_ms


def _gif_base_frame_ms(comment: str, durations: Sequence[int]) -> float:
    for token in comment.split():
        if token.startswith(_GIF_COMMENT_KEY):
            try:
                value = float(token[len(_GIF_COMMENT_KEY):])
            except ValueError:
                break
            if value > 0:
                return value
    positive = [d for d in durations if d > 0]
    return float(min(positive)) if positive else float(_GIF_DEFAULT_FRAME_MS)


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float) -> Path:
    """Writes ``frames`` to an ``.mp4``/``.webm``/... (ffmpeg) or ``.gif`` (Pillow) file atomically.

    Args:
        path: Destination; the extension picks the format. Parent folders are created.
        frames: ``uint8 [T, H, W, 3]`` RGB frames.
        fps: Frame rate to store.

    Returns:
        The written path.

    Raises:
        ShapeError: Bad frame array, or an odd width/height for an ffmpeg format.
        DataError: Unsupported extension or an encoder failure.
    """
    path = Path(path)
    frames = check_frames(frames)
    if not fps > 0:
        raise ShapeError(f"fps must be positive to write {path}, got {fps}.")
    ext = path.suffix.lower()
    if ext not in VIDEO_EXTENSIONS:
        raise DataError(f"cannot write {path}: unsupported extension {ext!r}; "
                        f"use one of {', '.join(VIDEO_EXTENSIONS)}.")
    with atomic_path(path) as tmp:
        if ext == ".gif":
            _write_gif(tmp, frames, fps)
        else:
            _write_ffmpeg(tmp, frames, fps, ext)
    return path


def _write_ffmpeg(tmp: Path, frames: np.ndarray, fps: float, ext: str) -> None:
    import imageio.v3 as iio

    height, width = frames.shape[1:3]
    for name, size in (("height", height), ("width", width)):
        if size % 2:
            raise ShapeError(f"cannot write {ext} video with {name} {size}: yuv420p stores colour at "
                             "half resolution in 2x2 blocks, so width and height must be even; resize "
                             "or crop to an even size, or write a .gif instead.")
    codec = "libvpx-vp9" if ext == ".webm" else "libx264"
    # macro_block_size=1: imageio's default (16) silently rescales frames to a multiple of 16
    # (an 8x8 clip would come back 16x16), which would change the data we store.
    # CRF 15 keeps small synthetic frames visually lossless at a negligible size cost.
    iio.imwrite(tmp, frames, plugin="FFMPEG", fps=float(fps), codec=codec, pixelformat="yuv420p",
                macro_block_size=1, output_params=["-crf", "15"], ffmpeg_log_level="error")


def _write_gif(tmp: Path, frames: np.ndarray, fps: float) -> None:
    from PIL import Image

    # GIF delays are whole centiseconds; round here (not inside Pillow) so that durations Pillow
    # sums when it merges identical frames stay exact multiples of one frame's delay.
    frame_ms = max(10, int(round(100.0 / fps)) * 10)
    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms,
                   loop=0, comment=f"{_GIF_COMMENT_KEY}{frame_ms}", disposal=1)


def resize_center_crop(frames: np.ndarray, size: int | Sequence[int]) -> np.ndarray:
    """Scales frames so they cover ``size`` (aspect kept), then crops the centre.

    Args:
        frames: ``uint8 [T, H, W, 3]``.
        size: Output ``S`` (square) or ``(height, width)``.

    Returns:
        ``uint8 [T, height, width, 3]``; the input itself when it already has that size.
    """
    frames = check_frames(frames)
    out_h, out_w = (int(size), int(size)) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    if out_h <= 0 or out_w <= 0:
        raise ShapeError(f"resize size must be positive, got {(out_h, out_w)}.")
    in_h, in_w = frames.shape[1:3]
    if (in_h, in_w) == (out_h, out_w):
        return frames
    scale = max(out_h / in_h, out_w / in_w)
    new_h, new_w = max(out_h, round(in_h * scale)), max(out_w, round(in_w * scale))
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    if (new_h, new_w) != (in_h, in_w):
        # antialias only matters (and only applies) when shrinking; bilinear is fine for enlarging.
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False,
                          antialias=new_h < in_h or new_w < in_w)
    top, left = (new_h - out_h) // 2, (new_w - out_w) // 2
    x = x[:, :, top:top + out_h, left:left + out_w]
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def contact_sheet(frames: np.ndarray, path: str | os.PathLike, cols: int | None = None,
                  gap: int = 1) -> Path:
    """Saves frames as one PNG grid (row-major), for looking at clips or reconstructions.

    Args:
        frames: ``uint8 [T, H, W, 3]``.
        path: Destination ``.png`` (written atomically).
        cols: Frames per row; defaults to ``ceil(sqrt(T))``.
        gap: Pixels of grey between tiles.

    Returns:
        The written path.
    """
    from PIL import Image

    frames = check_frames(frames)
    count, height, width = frames.shape[:3]
    cols = int(cols) if cols else math.ceil(math.sqrt(count))
    if cols <= 0:
        raise ShapeError(f"contact_sheet cols must be positive, got {cols}.")
    rows = math.ceil(count / cols)
    sheet = np.full((rows * height + (rows - 1) * gap, cols * width + (cols - 1) * gap, 3), 128, np.uint8)
    for i, frame in enumerate(frames):
        r, c = divmod(i, cols)
        sheet[r * (height + gap): r * (height + gap) + height, c * (width + gap): c * (width + gap) + width] = frame
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(sheet).save(tmp, format="PNG")
    return path
