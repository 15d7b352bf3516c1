"""Motion metrics on constructed clips: straight paths score ~1, random walks low, wrong ways 0."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cogframe.core.metrics.motion import motion_scores, summarize_motion
from cogframe.errors import ShapeError

SIZE = 32


def _clip(xs, ys, extent=8, colour=(255, 0, 0), noise=None):
    """A square of ``extent`` px whose top-left corner follows (xs, ys), on black."""
    frames = np.zeros((len(xs), SIZE, SIZE, 3), np.uint8)
    for t, (x, y) in enumerate(zip(xs, ys)):
        x, y = int(round(x)), int(round(y))
        frames[t, y:y + extent, x:x + extent] = colour
    if noise is not None:
        frames = np.maximum(frames, noise)
    return frames


@pytest.mark.parametrize("direction,xs,ys", [
    ("right", np.linspace(2, 22, 33), np.full(33, 12)),
    ("left", np.linspace(22, 2, 33), np.full(33, 12)),
    ("down", np.full(9, 5), np.linspace(1, 20, 9)),
    ("up", np.full(5, 5), np.linspace(20, 1, 5)),
])
def test_a_straight_path_along_the_caption_scores_about_one(direction, xs, ys):
    s = motion_scores(_clip(xs, ys), direction)
    assert s.straightness > 0.98
    assert s.forward_steps == 1.0
    assert s.drift == 0.0
    assert s.flicker == 0.0
    assert s.slope > 0


def test_a_wrong_way_path_scores_zero_straightness():
    xs = np.linspace(2, 22, 17)
    s = motion_scores(_clip(xs, np.full(17, 12)), "left")
    assert s.straightness == 0.0
    assert s.forward_steps == 0.0  # every step goes against the caption
    assert s.slope < 0


def test_a_motionless_clip_scores_zero_straightness_but_no_backward_steps():
    s = motion_scores(_clip(np.full(9, 10), np.full(9, 10)), "right")
    assert s.straightness == 0.0
    assert s.forward_steps == 1.0  # standing still is not going backwards; straightness catches it


def test_a_random_walk_scores_low():
    rng = np.random.default_rng(0)
    scores = []
    for _ in range(50):
        xs = np.clip(12 + np.cumsum(rng.normal(0, 3, 33)), 0, SIZE - 8)
        ys = np.clip(12 + np.cumsum(rng.normal(0, 3, 33)), 0, SIZE - 8)
        scores.append(motion_scores(_clip(xs, ys), "right"))
    summary = summarize_motion(scores)
    assert summary["straightness_median"] < 0.5
    assert summary["forward_steps"] < 0.8
    assert summary["drift_median"] > 0.2


def test_sideways_drift_is_measured_as_a_fraction_of_the_frame():
    xs = np.linspace(2, 22, 9)
    ys = np.linspace(4, 12, 9)  # 8 px sideways over a 32 px frame
    s = motion_scores(_clip(xs, ys), "right")
    assert s.drift == pytest.approx(8 / SIZE, abs=1 / SIZE)


def test_flicker_counts_background_changes_only():
    rng = np.random.default_rng(1)
    noise = (rng.random((9, SIZE, SIZE, 1)) < 0.05).astype(np.uint8) * np.array([60, 60, 60], np.uint8)
    clean = motion_scores(_clip(np.linspace(2, 22, 9), np.full(9, 12)), "right")
    noisy = motion_scores(_clip(np.linspace(2, 22, 9), np.full(9, 12), noise=noise), "right")
    assert clean.flicker == 0.0
    assert noisy.flicker > 0.005
    assert noisy.straightness > 0.98  # dim noise below the object threshold leaves the path alone


def test_a_clip_that_loses_the_object_is_unscorable_and_summarised_as_worst():
    frames = _clip(np.linspace(2, 22, 5), np.full(5, 12))
    frames[2] = 0
    s = motion_scores(frames, "right")
    assert s.straightness is None and s.forward_steps is None and s.drift is None
    summary = summarize_motion([s])
    assert summary == {"straightness_median": 0.0, "forward_steps": 0.0, "drift_median": 1.0,
                       "flicker": s.flicker, "scored": 0.0}


@settings(max_examples=60, deadline=None)
@given(direction=st.sampled_from(["left", "right", "up", "down"]),
       start=st.integers(0, 6), travel=st.integers(8, 16), frames=st.integers(3, 33))
def test_any_constant_speed_path_is_straight_and_forward(direction, start, travel, frames):
    along = np.linspace(start, start + travel, frames)
    if direction in ("left", "up"):
        along = along[::-1] + 0.0
    across = np.full(frames, 10)
    xs, ys = (along, across) if direction in ("left", "right") else (across, along)
    s = motion_scores(_clip(xs, ys), direction)
    assert s.straightness > 0.9
    assert s.forward_steps == 1.0
    assert s.drift == 0.0


@pytest.mark.parametrize("frames,direction", [
    (np.zeros((2, SIZE, SIZE, 3), np.uint8), "left"),
    (np.zeros((5, SIZE, SIZE), np.uint8), "left"),
    (np.zeros((5, SIZE, SIZE, 3), np.uint8), "sideways"),
])
def test_bad_input_is_refused_with_a_clear_error(frames, direction):
    with pytest.raises(ShapeError):
        motion_scores(frames, direction)


def _square_path_at(size, lefts, extent, top):
    frames = np.zeros((len(lefts), size, size, 3), np.uint8)
    for t, x in enumerate(lefts):
        frames[t, top:top + extent, x:x + extent] = (255, 0, 0)
    return frames


def test_the_step_tolerance_is_a_fraction_of_the_frame_not_pixels():
    # One step back by a 96 px pixel is a third of a 32 px pixel: rasterisation jitter at 96 px as
    # at 32 px. Two 96 px pixels back (2/3 of a 32 px pixel) and one 32 px pixel back are not.
    forward = [6, 9, 12, 15, 18, 21, 24]
    assert motion_scores(_square_path_at(96, [6, 9, 12, 11, 15, 18, 21], 24, 30), "right").forward_steps == 1.0
    assert motion_scores(_square_path_at(96, [6, 9, 12, 10, 15, 18, 21], 24, 30), "right").forward_steps < 1.0
    assert motion_scores(_square_path_at(32, [2, 3, 4, 3, 5, 6, 7], 8, 10), "right").forward_steps < 1.0
    assert motion_scores(_square_path_at(96, forward, 24, 30), "right").forward_steps == 1.0


@settings(max_examples=40, deadline=None)
@given(direction=st.sampled_from(["left", "right", "up", "down"]),
       steps=st.lists(st.sampled_from([-2, -1, 0, 1, 2, 3]), min_size=2, max_size=16),
       extents=st.lists(st.integers(6, 9), min_size=17, max_size=17))
def test_every_motion_metric_reads_a_clip_the_same_at_three_times_its_resolution(direction, steps, extents):
    # A jittery path whose extent changes too (half-pixel centroid moves), and the same clip with
    # every pixel repeated 3x3: the centroid path scales by 3 exactly, so every score is the same.
    along = np.clip(8 + np.cumsum([0, *steps]), 0, SIZE - 10)
    frames = np.zeros((len(along), SIZE, SIZE, 3), np.uint8)
    for t, a in enumerate(along):
        e = extents[t]
        if direction in ("left", "right"):
            frames[t, 10:10 + e, a:a + e] = (0, 255, 0)
        else:
            frames[t, a:a + e, 10:10 + e] = (0, 255, 0)
    large = np.repeat(np.repeat(frames, 3, axis=1), 3, axis=2)
    # 0.4 / 32 of the side: no step of this lattice (multiples of 0.5 px) sits on the boundary.
    small_s, large_s = (motion_scores(f, direction, step_tolerance=0.4 / 32) for f in (frames, large))
    assert large_s.forward_steps == small_s.forward_steps
    assert large_s.drift == pytest.approx(small_s.drift, abs=1e-9)
    assert large_s.straightness == pytest.approx(small_s.straightness, abs=1e-9)
