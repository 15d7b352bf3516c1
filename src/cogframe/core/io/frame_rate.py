"""Frame-rate choices for multi-frame-rate training (CogVideo, arXiv 2205.15868, Sec. 3.1).

A frame-rate sampler looks at a clip (its frame count and native fps) and picks a rate plus the
indices of the frames to take at that rate. The model sees the rate as a text prefix: the time
between the first and the last sampled frame, ``(frames - 1) / fps`` seconds, formatted e.g.
``"4.0s"`` for 5 frames at 1 fps (CogVideo writes ``"4.0秒"``; the format is configurable).

Sampler protocol (kind ``frame_rate_sampler``)::

    sampler(num_frames: int, native_fps: float, rng: random.Random) -> FrameRateChoice
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Iterable, Protocol

from cogframe.errors import ConfigError, DataError

__all__ = [
    "DEFAULT_PREFIX_FORMAT",
    "DEFAULT_RATES",
    "INTERPOLATION_RATES",
    "FrameRateChoice",
    "FrameRateSampler",
    "duration_prefix",
    "frame_indices",
    "min_frames_for_rate",
    "normalize_rates",
    "supports_rate",
]

DEFAULT_PREFIX_FORMAT = "{:.1f}s"

DEFAULT_RATES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""cogframe's choice of the predefined frame-rate set, NOT a set the paper lists.

The paper picks, per clip, the lowest rate of "a predefined set" that still yields 5 frames and
names some of its rates: 0.25 fps (lowest in stage-1 phase 1), 1 fps (lowest in phase 2) and 2,
4 and 8 fps (stage 2). The full set is not published; powers of two from 0.25 to 8 fps contain
all of those and halve cleanly into the stage-2 recursion. Pass ``rates`` to use another set.
"""

INTERPOLATION_RATES = (2.0, 4.0, 8.0)
"""Stage-2 window rates: the paper trains the interpolation model at 2, 4 and 8 fps."""
# Tolerance for float comparisons of spans such as 4 * 8 / 0.25 frames.
_EPS = 1e-9


@dataclass(frozen=True)
class FrameRateChoice:
    """What a sampler picked for one clip.

    Attributes:
        fps: The sampling rate (frames per second of the output frames).
        frame_indices: Indices into the clip's native frames, strictly increasing.
        prefix: The duration text to put before ``<n>`` and the caption, e.g. ``"4.0s"``; None
            for samples without one (text-to-image data).
    """

    fps: float
    frame_indices: list[int]
    prefix: str | None


class FrameRateSampler(Protocol):
    """Picks a frame rate and frame indices for a clip of ``num_frames`` at ``native_fps``."""

    def __call__(self, num_frames: int, native_fps: float, rng: random.Random) -> FrameRateChoice: ...


def duration_prefix(fps: float, frames: int = 5, fmt: str = DEFAULT_PREFIX_FORMAT) -> str:
    """The duration prefix for ``frames`` frames sampled at ``fps``: ``fmt.format((frames-1)/fps)``.

    Examples:
        >>> duration_prefix(1.0)
        '4.0s'
        >>> duration_prefix(8.0, fmt="{:.1f}秒")
        '0.5秒'
    """
    if fps <= 0:
        raise ConfigError(f"frame rate must be positive, got {fps}.")
    return fmt.format((frames - 1) / fps)


def normalize_rates(rates: Iterable[float], what: str = "rates") -> tuple[float, ...]:
    """Sorted, de-duplicated positive rates; ConfigError for an empty or non-positive set."""
    try:
        values = sorted({float(r) for r in rates})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} must be a list of numbers (frames per second), got {rates!r}.") from exc
    if not values or values[0] <= 0:
        raise ConfigError(f"{what} must be a non-empty list of positive frame rates, got {list(rates)!r}; "
                          "e.g. [0.25, 0.5, 1, 2, 4, 8].")
    return tuple(values)


def min_frames_for_rate(fps: float, native_fps: float, frames: int = 5) -> int:
    """Smallest clip length (native frames) from which ``frames`` frames at ``fps`` can be taken.

    The sampled frames are ``native_fps / fps`` native frames apart, so the clip must span
    ``(frames - 1) * native_fps / fps`` frame intervals, i.e. hold one more frame than that.
    """
    return math.ceil((frames - 1) * native_fps / fps - _EPS) + 1


def supports_rate(num_frames: int, native_fps: float, fps: float, frames: int = 5) -> bool:
    """Whether a clip of ``num_frames`` at ``native_fps`` yields ``frames`` distinct frames at ``fps``.

    Rates above the native rate are never supported: they would need repeated frames.
    """
    if fps > native_fps * (1 + _EPS):
        return False
    return num_frames >= min_frames_for_rate(fps, native_fps, frames)


def frame_indices(num_frames: int, native_fps: float, fps: float, frames: int,
                  rng: random.Random) -> list[int]:
    """Indices of ``frames`` frames at ``fps`` from a uniformly random start inside the clip.

    Args:
        num_frames: Clip length in native frames.
        native_fps: The clip's frame rate.
        fps: Sampling rate; must be supported (see :func:`supports_rate`).
        frames: How many frames to take.
        rng: Source of the random start.

    Returns:
        Strictly increasing indices in ``[0, num_frames)``.
    """
    step = native_fps / fps
    span = (frames - 1) * step
    last_start = num_frames - 1 - span
    if last_start < -_EPS or step < 1 - _EPS:
        raise DataError(f"a clip of {num_frames} frames at {native_fps:g} fps cannot give {frames} frames "
                        f"at {fps:g} fps; it needs at least {min_frames_for_rate(fps, native_fps, frames)} frames.")
    start = rng.randint(0, max(0, math.floor(last_start + _EPS)))
    # Round each position (not the step) so non-integer steps (30 fps -> 4 fps) stay exact on
    # average; floor(x + 0.5) instead of round() avoids banker's rounding merging two neighbours.
    return [min(num_frames - 1, math.floor(start + k * step + 0.5)) for k in range(frames)]
