"""Frame interpolation helpers: the window split/merge of stage 2 and the two pixel baselines.

* :func:`split_windows` / :func:`merge_windows`: stage 2 fills overlapping 5-frame windows whose
  frames 0, 2, 4 are given (CogVideo, arXiv 2205.15868; release ``process_stage2``).
* :func:`repeat_frames` / :func:`blend_frames`: pixel baselines on decoded uint8 frames
  ``[T, H, W, C]`` or ``[B, T, H, W, C]`` (the ``repeat`` and ``linear_blend`` stages).

Each round turns ``T`` frames into ``2T - 1`` (one new frame between neighbours), so ``rounds =
3`` takes 5 key frames to 33; the input frames are kept unchanged at the even output indices.
"""

from __future__ import annotations

import torch

from cogframe.errors import ConfigError, ShapeError

__all__ = [
    "blend_frames",
    "frames_after",
    "merge_windows",
    "repeat_frames",
    "split_windows",
]


def frames_after(frames: int, rounds: int) -> int:
    """Frame count after ``rounds`` rounds: ``(frames - 1) * 2**rounds + 1`` (5, 3 -> 33)."""
    return (frames - 1) * 2 ** rounds + 1


def split_windows(frames: torch.Tensor, parents: int) -> torch.Tensor:
    """Overlapping windows of ``parents`` frames with stride ``parents - 1`` along dim 1.

    Args:
        frames: ``[B, N, ...]`` with ``(N - 1) % (parents - 1) == 0``.
        parents: Given frames per window (3 for CogVideo: window frames 0, 2, 4).

    Returns:
        ``[B, W, parents, ...]`` with ``W = (N - 1) / (parents - 1)``; window ``i`` holds frames
        ``i (parents - 1) ... i (parents - 1) + parents - 1``.
    """
    n = frames.shape[1]
    step = parents - 1
    if step < 1 or n < parents or (n - 1) % step:
        raise ShapeError(
            f"{n} frames cannot be split into overlapping windows of {parents} given frames "
            f"(needs N = 1 + k * {max(step, 1)} >= {parents}); interpolate 5, 9, 17 ... frames."
        )
    windows = (n - 1) // step
    index = torch.arange(windows).unsqueeze(1) * step + torch.arange(parents)
    return frames[:, index.to(frames.device)]


def merge_windows(windows: torch.Tensor) -> torch.Tensor:
    """Concatenate windows ``[B, W, F, ...]`` that share their boundary frames: ``W (F - 1) + 1``.

    Window ``i``'s frame ``F - 1`` and window ``i + 1``'s frame 0 are the same given frame; the
    first copy is kept.
    """
    batch, count, per = windows.shape[:3]
    body = windows[:, :, :-1].reshape(batch, count * (per - 1), *windows.shape[3:])
    return torch.cat([body, windows[:, -1, -1:]], dim=1)


def _time_first(frames: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """Accept ``[T, H, W, C]`` or ``[B, T, H, W, C]`` uint8 frames; return the batched view."""
    if frames.dim() == 4:
        return frames.unsqueeze(0), True
    if frames.dim() == 5:
        return frames, False
    raise ShapeError(
        f"pixel frames must be [T, H, W, C] or [B, T, H, W, C], got shape {tuple(frames.shape)}."
    )


def _check_rounds(rounds: int, frames: int) -> None:
    if rounds < 0:
        raise ConfigError(f"rounds must be >= 0, got {rounds}.")
    if frames < 2:
        raise ShapeError(f"interpolation needs at least 2 frames, got {frames}.")


def _insert_between(frames: torch.Tensor, middle: torch.Tensor) -> torch.Tensor:
    """Interleave ``frames [B, T, ...]`` with ``middle [B, T-1, ...]`` -> ``[B, 2T-1, ...]``."""
    batch, count = frames.shape[:2]
    out = frames.new_empty(batch, 2 * count - 1, *frames.shape[2:])
    out[:, 0::2] = frames
    out[:, 1::2] = middle
    return out


def repeat_frames(frames: torch.Tensor, rounds: int) -> torch.Tensor:
    """Baseline: each new frame repeats its left neighbour (a frame-rate change without motion)."""
    batched, squeeze = _time_first(frames)
    _check_rounds(rounds, batched.shape[1])
    for _ in range(rounds):
        batched = _insert_between(batched, batched[:, :-1])
    return batched[0] if squeeze else batched


def blend_frames(frames: torch.Tensor, rounds: int) -> torch.Tensor:
    """Baseline: each new frame is the rounded average of its two neighbours (a cross-fade)."""
    batched, squeeze = _time_first(frames)
    _check_rounds(rounds, batched.shape[1])
    for _ in range(rounds):
        wide = batched.to(torch.int32)
        middle = torch.div(wide[:, :-1] + wide[:, 1:] + 1, 2, rounding_mode="floor").to(batched.dtype)
        batched = _insert_between(batched, middle)
    return batched[0] if squeeze else batched
