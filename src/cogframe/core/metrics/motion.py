"""Motion metrics of one clip on decoded pixels: does the object move the way the caption says?

The moving-shapes domain has one object on black moving at constant speed along one axis, so a
faithful clip has a centroid path that is a straight line along the caption's axis, every step in
the caption's direction, no sideways drift, and a still background. Four numbers measure that:

* **straightness**: R² of a least-squares line fitted to the centroid's coordinate along the
  caption's axis against time. A fit whose slope goes the wrong way (or no motion at all) counts
  as 0, so a clip cannot score well by standing still or running backwards.
* **forward steps**: the share of frame-to-frame steps that do not go against the caption, i.e.
  whose displacement along the axis is above ``-step_tolerance`` times the frame side. The
  tolerance admits the rasterisation jitter of sub-pixel motion (a real 32 px clip at 0.7
  px/frame moves in 0 and 1 px jumps); straightness already penalises a clip that does not move.
  It is a fraction of the side, not pixels, so that the same clip scores the same at any
  resolution: a fixed 0.5 px would be three times stricter on the 96 px frames of the
  super-resolution stage than on the 32 px frames they are made from.
* **drift**: the range (max - min) of the centroid across the caption's axis, as a fraction of the
  frame side. Real clips have none.
* **flicker**: the mean absolute frame-to-frame change of the pixels outside the object (in both
  frames), over 255. A still black background scores 0.

Object pixels are those whose brightest channel reaches ``threshold``, as in
:mod:`cogframe.core.metrics.detector`. Frames without an object make the clip unscorable for the
path metrics (None), which aggregates as the worst value.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from cogframe.errors import ShapeError

__all__ = ["AXES", "STEP_TOLERANCE", "MotionScores", "motion_scores", "motion_table", "summarize_motion"]

# Unit direction (axis index, sign) per caption word; image y grows downwards.
AXES: dict[str, tuple[int, int]] = {"left": (0, -1), "right": (0, 1), "up": (1, -1), "down": (1, 1)}
# Backward jitter a forward step may have, as a fraction of the frame side: 0.5 px at 32 px.
STEP_TOLERANCE = 0.5 / 32


@dataclass(frozen=True)
class MotionScores:
    """Motion metrics of one clip (see the module docstring); None when the clip cannot be scored.

    Attributes:
        straightness: R² of the along-axis path, 0 for a wrong-way or motionless fit.
        forward_steps: Share of frame steps not going against the caption.
        drift: Across-axis range of the centroid over the frame side.
        flicker: Mean absolute change outside the object, 0..1.
        slope: Fitted along-axis speed in pixels per frame (signed along the caption's direction).
    """

    straightness: float | None
    forward_steps: float | None
    drift: float | None
    flicker: float
    slope: float | None

    def to_dict(self) -> dict:
        """Plain JSON-ready fields."""
        return asdict(self)


def _centroids(masks: np.ndarray) -> np.ndarray | None:
    """``[T, 2]`` (x, y) centroid of each frame's mask (all frames at once); None if one is empty."""
    counts = masks.sum((1, 2), dtype=np.float64)
    if not (counts > 0).all():
        return None
    xs = (masks.sum(1, dtype=np.float64) * np.arange(masks.shape[2])).sum(1) / counts
    ys = (masks.sum(2, dtype=np.float64) * np.arange(masks.shape[1])).sum(1) / counts
    return np.stack([xs, ys], axis=1)


def _flicker(frames: np.ndarray, masks: np.ndarray) -> float:
    if frames.shape[0] < 2:
        return 0.0
    outside = ~(masks[1:] | masks[:-1])  # background in both frames of the step
    diff = np.abs(frames[1:].astype(np.float64) - frames[:-1].astype(np.float64)).max(-1)
    count = outside.sum()
    return float(diff[outside].sum() / count / 255.0) if count else 0.0


def motion_scores(frames: np.ndarray, direction: str, *, threshold: int = 100,
                  step_tolerance: float = STEP_TOLERANCE) -> MotionScores:
    """Scores the motion of one clip against its caption's direction.

    Args:
        frames: uint8 ``[T, H, W, 3]`` with ``T >= 3``.
        direction: ``left``, ``right``, ``up`` or ``down``.
        threshold: Brightest-channel level from which a pixel belongs to the object.
        step_tolerance: How far a step may go backwards and still count as forward (jitter), as
            a fraction of the frame side (the default is 0.5 px at 32 px).

    Raises:
        ShapeError: Not ``[T, H, W, 3]`` with at least 3 frames, or an unknown direction.

    Example:
        >>> import numpy as np
        >>> clip = np.zeros((5, 16, 16, 3), np.uint8)
        >>> for t in range(5): clip[t, 6:10, 2 + 2 * t:6 + 2 * t] = 255
        >>> s = motion_scores(clip, "right")
        >>> round(s.straightness, 3), s.forward_steps, s.drift
        (1.0, 1.0, 0.0)
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 3:
        raise ShapeError(f"motion scores need uint8 frames [T >= 3, H, W, 3], got shape {list(frames.shape)}.")
    if direction not in AXES:
        raise ShapeError(f"unknown direction {direction!r}; use one of {', '.join(AXES)}.")
    masks = frames.max(-1) >= threshold
    flicker = _flicker(frames, masks)
    path = _centroids(masks)
    if path is None:
        return MotionScores(None, None, None, flicker, None)
    axis, sign = AXES[direction]
    along = path[:, axis] * sign  # positive = the caption's way
    across = path[:, 1 - axis]
    t = np.arange(len(along), dtype=np.float64)
    slope, intercept = np.polyfit(t, along, 1)
    residual = ((along - (slope * t + intercept)) ** 2).sum()
    total = ((along - along.mean()) ** 2).sum()
    r2 = 1.0 - residual / total if total > 1e-12 else 0.0
    straightness = float(max(0.0, r2)) if slope > 0 else 0.0
    side = max(frames.shape[1], frames.shape[2])
    forward = float((np.diff(along) > -step_tolerance * side).mean())
    drift = float((across.max() - across.min()) / side)
    return MotionScores(straightness, forward, drift, flicker, float(slope))


def summarize_motion(scores: Iterable[MotionScores]) -> dict[str, float]:
    """Medians of straightness and drift, mean share of forward steps, mean flicker, over clips.

    An unscorable clip (no object in some frame) counts as straightness 0, forward steps 0 and
    drift 1 (the worst values), so losing the object is never rewarded.
    """
    scores = list(scores)
    if not scores:
        raise ShapeError("no clips to summarise.")
    straight = [s.straightness if s.straightness is not None else 0.0 for s in scores]
    forward = [s.forward_steps if s.forward_steps is not None else 0.0 for s in scores]
    drift = [s.drift if s.drift is not None else 1.0 for s in scores]
    return {
        "straightness_median": float(np.median(straight)),
        "forward_steps": float(np.mean(forward)),
        "drift_median": float(np.median(drift)),
        "flicker": float(np.mean([s.flicker for s in scores])),
        "scored": float(np.mean([s.straightness is not None for s in scores])),
    }


def motion_table(groups: Mapping[str, Sequence[MotionScores]]) -> dict[str, dict[str, float]]:
    """:func:`summarize_motion` of each named group of clips."""
    return {name: summarize_motion(s) for name, s in groups.items()}
