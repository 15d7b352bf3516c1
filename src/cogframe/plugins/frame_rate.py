"""Frame-rate samplers (kind ``frame_rate_sampler``): which rate, and which 5 frames, per clip.

* ``lowest_fps`` — CogVideo's stage-1 rule (arXiv 2205.15868, Sec. 3.1): the lowest rate of a
  predefined set that still yields 5 frames, so one sample covers as much of the described action
  as possible. The default set is cogframe's choice (``DEFAULT_RATES``); the paper does not list it.
* ``fixed_fps`` — always one rate (e.g. the 1 fps of the stage-1 fine-tune).
* ``random_fps`` — uniform over the rates of a set that the clip supports.
* ``interpolation_windows`` — stage 2: one of 2/4/8 fps that the clip supports, a 5-frame window
  from a random start (the given frames 0, 2, 4 and the targets 1, 3).

All of them follow the protocol in :mod:`cogframe.core.io.frame_rate`.
"""

from __future__ import annotations

import random
from typing import Sequence

from cogframe.core.io.frame_rate import (
    DEFAULT_PREFIX_FORMAT,
    DEFAULT_RATES,
    INTERPOLATION_RATES,
    FrameRateChoice,
    duration_prefix,
    frame_indices,
    min_frames_for_rate,
    normalize_rates,
    supports_rate,
)
from cogframe.errors import ConfigError, DataError
from cogframe.hookspecs import hookimpl
from cogframe.registry import component

__all__ = ["FixedFps", "InterpolationWindows", "LowestFps", "RandomFps", "SingleFrame"]


class _RateSetSampler:
    """Shared logic: which rates of a set a clip supports, and the choice for a picked rate."""

    def __init__(self, rates: Sequence[float], frames: int, prefix_format: str) -> None:
        if int(frames) < 2:
            raise ConfigError(f"frames must be at least 2 (a rate needs two frames), got {frames}.")
        self.rates = normalize_rates(rates)
        self.frames = int(frames)
        self.prefix_format = str(prefix_format)
        duration_prefix(1.0, self.frames, self.prefix_format)  # fail at build time on a bad format

    def supported(self, num_frames: int, native_fps: float) -> list[float]:
        """The rates of the set (ascending) that yield ``frames`` frames from this clip."""
        return [r for r in self.rates if supports_rate(num_frames, native_fps, r, self.frames)]

    def supported_or_raise(self, num_frames: int, native_fps: float) -> list[float]:
        """:meth:`supported`, or a DataError saying why the clip is too short for every rate."""
        options = self.supported(num_frames, native_fps)
        if not options:
            raise self._too_short(num_frames, native_fps)
        return options

    def _choice(self, fps: float, num_frames: int, native_fps: float, rng: random.Random) -> FrameRateChoice:
        indices = frame_indices(num_frames, native_fps, fps, self.frames, rng)
        return FrameRateChoice(fps=fps, frame_indices=indices,
                               prefix=duration_prefix(fps, self.frames, self.prefix_format))

    def _too_short(self, num_frames: int, native_fps: float) -> DataError:
        usable = [r for r in self.rates if r <= native_fps]
        if not usable:
            return DataError(
                f"every rate in {list(self.rates)} is above the clip's native {native_fps:g} fps, so no "
                f"{self.frames} distinct frames can be sampled; add a rate <= {native_fps:g} to 'rates' "
                "or use footage with a higher frame rate.")
        fastest = max(usable)
        need = min_frames_for_rate(fastest, native_fps, self.frames)
        return DataError(
            f"clip is too short: {num_frames} frames ({num_frames / native_fps:.2f} s at {native_fps:g} fps), "
            f"but even the highest rate {fastest:g} fps needs {need} frames ({need / native_fps:.2f} s) "
            f"for {self.frames} frames; drop clips shorter than that (video_folder: min_frames={need}) "
            "or add a higher rate to 'rates'.")


@component("frame_rate_sampler", "lowest_fps",
           description="Lowest rate of a set that still yields 5 frames (CogVideo stage-1 rule).")
class LowestFps(_RateSetSampler):
    """Picks the LOWEST rate of ``rates`` whose 5 frames fit in the clip, from a random start.

    Args:
        rates: The predefined rate set (frames per second); default ``DEFAULT_RATES``,
            cogframe's choice of powers of two from 0.25 to 8 fps (the paper does not list its set).
        frames: Frames per sample.
        prefix_format: ``str.format`` pattern for the duration prefix (the release writes
            ``"{:.1f}秒"``, cogvideo_pipeline.py).
    """

    def __init__(self, rates: Sequence[float] = DEFAULT_RATES, frames: int = 5,
                 prefix_format: str = DEFAULT_PREFIX_FORMAT) -> None:
        super().__init__(rates, frames, prefix_format)

    def __call__(self, num_frames: int, native_fps: float, rng: random.Random) -> FrameRateChoice:
        options = self.supported_or_raise(num_frames, native_fps)
        return self._choice(options[0], num_frames, native_fps, rng)


@component("frame_rate_sampler", "fixed_fps", description="Always the same rate; random 5-frame start.")
class FixedFps(_RateSetSampler):
    """Samples every clip at one rate.

    Args:
        fps: The rate.
        frames: Frames per sample.
        prefix_format: ``str.format`` pattern for the duration prefix.
    """

    def __init__(self, fps: float = 1.0, frames: int = 5, prefix_format: str = DEFAULT_PREFIX_FORMAT) -> None:
        super().__init__((fps,), frames, prefix_format)
        self.fps = self.rates[0]

    def __call__(self, num_frames: int, native_fps: float, rng: random.Random) -> FrameRateChoice:
        if not supports_rate(num_frames, native_fps, self.fps, self.frames):
            raise self._too_short(num_frames, native_fps)
        return self._choice(self.fps, num_frames, native_fps, rng)


@component("frame_rate_sampler", "random_fps", description="Uniform over the rates of a set the clip supports.")
class RandomFps(_RateSetSampler):
    """Picks uniformly among the rates of ``rates`` that the clip supports.

    Args:
        rates: Candidate rates (frames per second); default ``DEFAULT_RATES`` (cogframe's choice).
        frames: Frames per sample.
        prefix_format: ``str.format`` pattern for the duration prefix.
    """

    def __init__(self, rates: Sequence[float] = DEFAULT_RATES, frames: int = 5,
                 prefix_format: str = DEFAULT_PREFIX_FORMAT) -> None:
        super().__init__(rates, frames, prefix_format)

    def __call__(self, num_frames: int, native_fps: float, rng: random.Random) -> FrameRateChoice:
        options = self.supported_or_raise(num_frames, native_fps)
        return self._choice(rng.choice(options), num_frames, native_fps, rng)


@component("frame_rate_sampler", "interpolation_windows",
           description="Stage 2: one of 2/4/8 fps the clip supports, a random 5-frame window.")
class InterpolationWindows(RandomFps):
    """Stage-2 windows: a supported rate of ``rates`` (default 2, 4, 8 fps), 5 frames from a random start.

    Frames 0, 2, 4 of the window are the given frames and 1, 3 the ones the model fills in; the
    prefix is the window's duration (``"2.0s"``, ``"1.0s"``, ``"0.5s"``).

    Args:
        rates: Candidate window rates.
        frames: Frames per window (5 in CogVideo).
        prefix_format: ``str.format`` pattern for the duration prefix.
    """

    def __init__(self, rates: Sequence[float] = INTERPOLATION_RATES, frames: int = 5,
                 prefix_format: str = DEFAULT_PREFIX_FORMAT) -> None:
        super().__init__(rates, frames, prefix_format)


@component("frame_rate_sampler", "single_frame",
           description="One random frame and no frame-rate prefix: text-to-image pretraining data.")
class SingleFrame:
    """Text-to-image samples from video clips: a uniformly random frame, captioned without prefix.

    CogView2-style pretraining sees images and captions only; the duration prefix belongs to the
    video stages (and the released first-frame prompt has none either: it is the caption plus
    " 高清摄影", cogvideo_pipeline.py).
    """

    def __call__(self, num_frames: int, native_fps: float, rng: random.Random) -> FrameRateChoice:
        if num_frames < 1:
            raise DataError("the clip has no frames; drop empty clips from the dataset.")
        return FrameRateChoice(fps=float(native_fps), frame_indices=[rng.randrange(num_frames)],
                               prefix=None)


@hookimpl
def register_components():
    return [LowestFps, FixedFps, RandomFps, InterpolationWindows, SingleFrame]
