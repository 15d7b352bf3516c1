"""``moving_shapes``: a synthetic, deterministic text-to-video domain that trains in minutes on a CPU.

Each clip shows ONE solid shape (circle, square or triangle) of one of seven pure colours on a
black background, moving left, right, up or down at constant speed and staying fully inside the
frame for the whole clip. The caption is exactly ``"a {colour} {shape} moving {direction}"``.
Clips last ``min_seconds``..``max_seconds`` (whole frames) at ``fps`` (8 by default).

Speed: by default each clip travels 50-100 % of the free room over its whole length, so speeds
vary from clip to clip. With ``speed`` (pixels per second) every clip moves at that one speed,
and the frame-rate prefix alone says how far the shape moves between two frames (CogVideo's
reason for the prefix): the tiny recipes use it (docs/quality.md has the measurements).

Determinism: clip ``i`` of a split is drawn from its own generator seeded with
``(seed, split, i)``, so it is identical however many clips are generated and in whatever order.
The ``train`` and ``val`` splits use different seed streams, so they are disjoint sets of clips
(the 84 caption combinations naturally occur in both).
"""

from __future__ import annotations

import math
from typing import Iterator, Literal, Sequence

import numpy as np

from cogframe.core.io.datasets import SkipLog
from cogframe.core.io.video import VideoClip
from cogframe.errors import ConfigError
from cogframe.hookspecs import hookimpl
from cogframe.registry import component

__all__ = ["COLOURS", "DIRECTIONS", "SHAPES", "MovingShapes", "box_position", "render_shape_masks"]

SHAPES = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "magenta": (255, 0, 255),
    "cyan": (0, 255, 255),
    "white": (255, 255, 255),
}
DIRECTIONS = ("left", "right", "up", "down")
_SPLIT_STREAMS = {"train": 0, "val": 1}
# Unit step (dx, dy) on screen per direction; y grows downwards.
_STEP = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


def render_shape_masks(shape: str, size: int, left: np.ndarray, top: np.ndarray, extent: int) -> np.ndarray:
    """Rasterises one shape per frame: pixel centres inside the shape's outline.

    Args:
        shape: ``circle``, ``square`` or ``triangle`` (pointing up).
        size: Frame side in pixels.
        left: ``[T]`` float x of the shape's bounding box per frame.
        top: ``[T]`` float y of the bounding box per frame.
        extent: Side of the bounding box in pixels.

    Returns:
        ``bool [T, size, size]``. Only centres inside ``[left, left+extent) x [top, top+extent)``
        can be set, so a box inside the frame gives a shape inside the frame.
    """
    centres = np.arange(size, dtype=np.float64) + 0.5
    x = centres[None, None, :] - left[:, None, None]  # [T, 1, W], relative to the box
    y = centres[None, :, None] - top[:, None, None]   # [T, H, 1]
    inside_box = (x >= 0) & (x < extent) & (y >= 0) & (y < extent)
    if shape == "square":
        return inside_box
    if shape == "circle":
        r = extent / 2
        return inside_box & ((x - r) ** 2 + (y - r) ** 2 <= r * r)
    if shape == "triangle":
        # Apex at the top centre, base along the bottom edge: |x - r| <= y / 2 (in box units).
        return inside_box & (np.abs(x - extent / 2) <= y / 2)
    raise ConfigError(f"unknown shape {shape!r}; use one of {', '.join(SHAPES)}.")


def box_position(metadata: dict, frame: int) -> tuple[float, float]:
    """Top-left corner ``(x, y)`` of the shape's box at ``frame``, from a clip's ``metadata``.

    The path :class:`MovingShapes` draws: ``start_xy`` plus ``speed_px_per_frame`` per frame in the
    caption's direction (the same float positions its frames are rasterised from).
    """
    dx, dy = _STEP[metadata["direction"]]
    x0, y0 = metadata["start_xy"]
    step = metadata["speed_px_per_frame"] * frame
    return x0 + dx * step, y0 + dy * step


@component("dataset", "moving_shapes",
           description="Synthetic clips: one coloured shape moving left/right/up/down on black.")
class MovingShapes:
    """The synthetic moving-shapes dataset.

    Args:
        num_clips: Number of clips in this split.
        size: Frame side in pixels (frames are square RGB).
        fps: Native frame rate.
        min_seconds: Shortest clip (rounded up to whole frames).
        max_seconds: Longest clip (rounded down to whole frames).
        seed: Base seed; clip ``i`` uses ``(seed, split, i)``.
        split: ``train`` or ``val`` (disjoint seed streams).
        object_scale: ``[min, max]`` side of the shape as a fraction of ``size``.
        speed: Pixels per second of every clip (``None``: each clip travels 50-100 % of the free
            room over its length). Must let the longest clip stay inside the frame.
        render_scale: Render the clip at ``render_scale * size`` pixels: the same scene (every draw,
            position and speed is made at ``size``, then scaled), sampled on a finer pixel grid; the
            paired high-res frames of super-resolution training (``prepare``'s ``high_res``).
    """

    def __init__(self, num_clips: int = 512, size: int = 32, fps: float = 8.0, min_seconds: float = 1.0,
                 max_seconds: float = 8.0, seed: int = 0, split: Literal["train", "val"] = "train",
                 object_scale: Sequence[float] = (0.25, 0.375), speed: float | None = None,
                 render_scale: int = 1) -> None:
        if split not in _SPLIT_STREAMS:
            raise ConfigError(f"moving_shapes split must be 'train' or 'val', got {split!r}.")
        if int(num_clips) < 0:
            raise ConfigError(f"moving_shapes num_clips must be >= 0, got {num_clips}.")
        if fps <= 0:
            raise ConfigError(f"moving_shapes fps must be positive, got {fps}.")
        self.min_frames = max(2, math.ceil(min_seconds * fps - 1e-9))
        self.max_frames = math.floor(max_seconds * fps + 1e-9)
        if self.max_frames < self.min_frames:
            raise ConfigError(
                f"moving_shapes min_seconds={min_seconds}, max_seconds={max_seconds} at {fps:g} fps allow "
                f"no clip of at least 2 frames; raise max_seconds to >= {2 / fps:g}.")
        lo, hi = (float(v) for v in object_scale)
        self.min_extent, self.max_extent = math.ceil(lo * size), math.floor(hi * size)
        if not 3 <= self.min_extent <= self.max_extent < size:
            raise ConfigError(
                f"moving_shapes object_scale={list(object_scale)} at size {size} gives shapes of "
                f"{self.min_extent}..{self.max_extent} px; they must be >= 3 px (to be recognisable) and "
                f"< {size} px (to be able to move); use a larger size or e.g. object_scale [0.25, 0.375].")
        if speed is not None:
            longest = (self.max_frames - 1) / fps
            room = size - self.max_extent
            if not 0 < speed or speed * longest > room:
                raise ConfigError(
                    f"moving_shapes speed={speed} px/s must be positive and keep the largest shape ({self.max_extent} px) "
                    f"inside the {size} px frame for the longest clip ({longest:g} s: {speed * longest:g} px of travel, "
                    f"room {room} px); lower speed or max_seconds (e.g. max_seconds={room / speed:g}).")
        if isinstance(render_scale, bool) or not isinstance(render_scale, int) or render_scale < 1:
            raise ConfigError(f"moving_shapes render_scale must be a whole number >= 1, got {render_scale!r} "
                              "(3 renders the 32 px scene at 96 px).")
        self.render_scale = int(render_scale)
        self.speed = None if speed is None else float(speed)
        self.num_clips = int(num_clips)
        self.size = int(size)
        self.fps = float(fps)
        self.seed = int(seed)
        self.split = split
        self.skip_log = SkipLog()  # synthetic clips are never skipped; kept for the common report

    def __len__(self) -> int:
        return self.num_clips

    def __iter__(self) -> Iterator[VideoClip]:
        for index in range(self.num_clips):
            yield self[index]

    def __getitem__(self, index: int) -> VideoClip:
        if not 0 <= index < self.num_clips:
            raise IndexError(f"moving_shapes {self.split} has {self.num_clips} clips; index {index} is out of range.")
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, _SPLIT_STREAMS[self.split], index]))
        shape = SHAPES[rng.integers(len(SHAPES))]
        colour = list(COLOURS)[rng.integers(len(COLOURS))]
        direction = DIRECTIONS[rng.integers(len(DIRECTIONS))]
        num_frames = int(rng.integers(self.min_frames, self.max_frames + 1))
        extent = int(rng.integers(self.min_extent, self.max_extent + 1))
        room = self.size - extent  # free pixels along each axis for the box's top-left corner
        # Travel 50-100 % of the room so the motion is always clearly visible yet stays inside; or
        # the fixed speed (the same draw is made either way, so the other attributes do not change).
        travel = room * rng.uniform(0.5, 1.0)
        if self.speed is not None:
            travel = self.speed * (num_frames - 1) / self.fps
        speed = travel / (num_frames - 1)  # pixels per frame, constant
        along_start = rng.uniform(0.0, room - travel)  # start offset along the motion axis
        across = rng.uniform(0.0, room)                 # fixed position across the motion axis
        dx, dy = _STEP[direction]
        t = np.arange(num_frames, dtype=np.float64)
        along = along_start + speed * t
        if dx < 0 or dy < 0:  # moving left/up: mirror the path so it starts near the far side
            along = room - along
        left, top = (along, np.full_like(t, across)) if dx else (np.full_like(t, across), along)
        # Geometry lives at `size`; rendering at k * size samples the same continuous shape at
        # k x k pixel centres per low-res pixel (so the low-res frame is the same scene, coarser).
        k = self.render_scale
        masks = render_shape_masks(shape, self.size * k, left * k, top * k, extent * k)
        frames = np.zeros((num_frames, self.size * k, self.size * k, 3), dtype=np.uint8)
        frames[masks] = COLOURS[colour]
        return VideoClip(
            frames=frames,
            fps=self.fps,
            caption=f"a {colour} {shape} moving {direction}",
            source=f"moving_shapes:{self.split}/{index:06d}",
            metadata={"shape": shape, "colour": colour, "direction": direction, "index": index,
                      "speed_px_per_frame": speed, "object_size": extent,
                      "start_xy": (float(left[0]), float(top[0]))},
        )

    def report(self) -> str:
        """One-line summary (synthetic clips are never skipped)."""
        return self.skip_log.summary(f"moving_shapes {self.split} (seed {self.seed})", self.num_clips)


@hookimpl
def register_components():
    return [MovingShapes]
