"""The position-posterior bound of ``benchmarks/sr_eval.py`` (section c): what any super-resolution
can reach on moving_shapes, whose low-res frames fix a shape's position only to about a pixel."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "sr_eval.py"


@pytest.fixture(scope="module")
def sr_eval():
    spec = importlib.util.spec_from_file_location("sr_eval_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_posterior_holds_the_truth_and_only_positions_with_the_same_pixels(sr_eval):
    from cogframe.plugins.dataset_moving_shapes import MovingShapes, render_shape_masks

    clips = MovingShapes(split="val", num_clips=6, size=32, seed=0)
    for i in range(len(clips)):
        clip = clips[i]
        t = clip.num_frames // 2
        truth_xy, cands = sr_eval.position_posterior(clip, t)
        meta = clip.metadata
        # The true position reproduces the dataset's own frame ...
        mask = render_shape_masks(meta["shape"], 32, truth_xy[:1], truth_xy[1:], meta["object_size"])[0]
        assert (mask == (clip.frames[t].max(-1) > 0)).all()
        # ... every candidate rasterises to the same pixels, and the set is about a pixel wide.
        again = render_shape_masks(meta["shape"], 32, cands[:, 0], cands[:, 1], meta["object_size"])
        assert (again == mask).all()
        assert np.abs(cands - truth_xy).sum(1).min() < 0.05 + 1e-9  # the grid point nearest the truth
        assert 0.0 < np.ptp(cands, axis=0).max() <= 2.0


def test_mmse_beats_bicubic_and_a_sampled_sharp_shape(sr_eval):
    out = sr_eval.bound_section(3, 8, {"size": 32, "seed": 0})
    assert out["frames"] == 8
    assert out["mmse_posterior_mean_image"] > out["bicubic_true_low_res"]
    assert out["mmse_posterior_mean_image"] > out["sharp_sampled_position"]
    assert out["mmse_posterior_mean_image"] > out["sharp_posterior_mean_position"]
    assert 0.0 < out["posterior_width_px"] < 2.0


def test_shape_scores_read_each_frame_alone_and_count_the_squares(sr_eval):
    from cogframe.plugins.dataset_moving_shapes import MovingShapes

    data = MovingShapes(split="val", num_clips=12, size=32, seed=0, render_scale=3)
    frames = np.stack([clip.frames[clip.num_frames // 2] for clip in data])
    captions = [f"a {c.metadata['colour']} {c.metadata['shape']} moving {c.metadata['direction']}" for c in data]
    blank = np.zeros_like(frames)  # nothing drawn: no shape read right
    scores = sr_eval._shape_scores(captions, {"true": frames, "blank": blank})
    assert scores["true"]["all"] == 1.0 and scores["blank"]["all"] == 0.0
    squares = sum(c.metadata["shape"] == "square" for c in data)
    assert (scores["true"]["squares"] == 1.0) if squares else np.isnan(scores["true"]["squares"])
