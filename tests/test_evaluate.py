"""The moving-shapes adherence detector (core/metrics/detector.py) and `cogframe eval` end to end:
adherence, motion metrics and the Fréchet distance, real clips as the ceiling."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cogframe.core.metrics.detector import accuracy, caption_of, detect, draw_captions, parse_caption
from cogframe.errors import ConfigError
from cogframe.plugins.dataset_moving_shapes import COLOURS, DIRECTIONS, SHAPES, MovingShapes
from sample_fixtures import SMALL, make_assets


def _key_frames(clip, count=5):
    return clip.frames[np.round(np.linspace(0, clip.num_frames - 1, count)).astype(int)]


def test_detector_reads_colour_direction_and_shape_of_real_clips():
    data = MovingShapes(num_clips=200, split="val", seed=3)
    detections = [detect(_key_frames(clip), COLOURS) for clip in data]
    scores = accuracy(detections, [clip.metadata for clip in data])
    assert scores["colour"] >= 0.95 and scores["direction"] >= 0.95 and scores["shape"] >= 0.95, scores


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**16), index=st.integers(0, 500), size=st.sampled_from([32, 48]))
def test_colour_and_direction_are_exact_on_any_clip(seed, index, size):
    clip = MovingShapes(num_clips=index + 1, split="train", seed=seed, size=size)[index]
    found = detect(clip.frames, COLOURS)
    assert (found.colour, found.direction) == (clip.metadata["colour"], clip.metadata["direction"])


def test_no_object_or_no_motion_has_no_direction():
    black = np.zeros((5, 32, 32, 3), np.uint8)
    assert detect(black, COLOURS).direction == "none" and detect(black, COLOURS).colour is None
    still = black.copy()
    still[:, 10:20, 10:20] = COLOURS["cyan"]
    found = detect(still, COLOURS)
    assert (found.colour, found.direction, found.shape) == ("cyan", "none", "square")


def test_captions_follow_the_grammar_and_are_drawn_deterministically():
    drawn = draw_captions(50, 7, list(COLOURS), SHAPES, DIRECTIONS)
    assert drawn == draw_captions(50, 7, list(COLOURS), SHAPES, DIRECTIONS)
    assert drawn != draw_captions(50, 8, list(COLOURS), SHAPES, DIRECTIONS)
    for item in drawn:
        assert item["caption"] == caption_of(item["colour"], item["shape"], item["direction"])
        assert parse_caption(item["caption"], list(COLOURS), SHAPES, DIRECTIONS) == {
            k: item[k] for k in ("colour", "shape", "direction")}
    with pytest.raises(ConfigError, match="is not of the form"):
        parse_caption("a dog running", list(COLOURS), SHAPES, DIRECTIONS)


def test_accuracy_counts_each_field_and_all_together():
    targets = [{"colour": "red", "direction": "left"}, {"colour": "blue", "direction": "up"}]
    from cogframe.core.metrics.detector import Detection

    found = [Detection("red", "left", None), Detection("blue", "down", None)]
    assert accuracy(found, targets, fields=("colour", "direction")) == {"colour": 1.0, "direction": 0.5,
                                                                       "all": 0.5}


def _with_classifier(root):
    """make_assets plus a random (untrained) video classifier: enough to exercise the distance."""
    import torch

    from cogframe.core.metrics.video_classifier import VideoClassifier

    make_assets(root)
    torch.manual_seed(0)
    labels = {"colour": list(COLOURS), "shape": list(SHAPES), "direction": list(DIRECTIONS)}
    VideoClassifier(labels, size=32, width=4, embed_dim=8).save(root / "tiny" / "video_classifier")
    return root


def _in_unit(value):
    return value is not None and 0.0 <= value <= 1.0


def test_eval_end_to_end_writes_the_table_and_json(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("COGFRAME_ASSETS", str(_with_classifier(tmp_path / "assets")))
    report = tmp_path / "eval.json"
    result = cli("eval", "--n", 4, "--batch", 2, "--seed", 1, "--json", report, "--sheet", tmp_path / "s.png",
                 "--label", "small", *SMALL)
    assert result.code == 0, result.err
    assert "metric" in result.out and "real via tokenizer" in result.out
    for row in ("straightness (median R²)", "steps the caption's way", "sideways drift", "flicker",
                "Fréchet distance to 4 other real clips"):
        assert row in result.out, row
    data = json.loads(report.read_text())
    assert data["n"] == 4 and data["rounds"] == 0 and len(data["clips"]) == 4 and data["label"] == "small"
    assert data["frames"] == 5 and data["key_fps"] == 1.0 and data["real_clips"]["rule"] == "lowest_fps"
    groups = {"generated", "real", "real_tokenized"}
    assert set(data["metrics"]) == groups and set(data["motion"]) == groups and set(data["frechet"]) == groups
    assert data["metrics"]["real"]["colour"] == 1.0 and data["metrics"]["real"]["direction"] == 1.0
    for group in groups:
        m = data["motion"][group]
        assert all(_in_unit(m[k]) for k in ("straightness_median", "forward_steps", "drift_median", "flicker")), m
        assert math.isfinite(data["frechet"][group]) and data["frechet"][group] >= 0
    real = data["motion"]["real"]  # real clips are the ceiling
    assert real["straightness_median"] > 0.95 and real["forward_steps"] == 1.0 and real["drift_median"] < 0.02
    assert real["flicker"] == 0.0
    assert all(set(c["motion"]) >= {"straightness", "forward_steps", "drift", "flicker"} for c in data["clips"])
    assert data["models"]["stage1"]["weights"].endswith("stage1.safetensors")
    assert (tmp_path / "s.png").is_file()
    table = cli("eval", "--table", report, report)
    assert table.code == 0 and table.out.count("| small | 4 | 5 |") == 2, table.out


def test_eval_of_full_videos_scores_33_frames_against_33_real_frames(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("COGFRAME_ASSETS", str(_with_classifier(tmp_path / "assets")))
    report = tmp_path / "eval.json"
    result = cli("eval", "--n", 2, "--batch", 2, "--rounds", 3, "--json", report, *SMALL)
    assert result.code == 0, result.err
    data = json.loads(report.read_text())
    assert data["frames"] == 33 and data["fps"] == 8.0 and data["real_clips"]["frames"] == 33
    real = data["motion"]["real"]
    assert real["straightness_median"] > 0.98 and real["forward_steps"] == 1.0 and real["drift_median"] < 0.02


def test_real_clips_follow_the_lowest_fps_rule_and_contain_the_key_frames():
    from cogframe.cli.eval import _real_clips
    from cogframe.core.metrics.motion import motion_scores, summarize_motion
    from cogframe.plugins import get_registries

    common = dict(key_frames=5, key_fps=1.0, rates=(0.25, 0.5, 1.0, 2.0, 4.0, 8.0), size=32)
    keys, targets, info = _real_clips(get_registries(), 24, frames=5, fps=1.0, **common)
    full, same_targets, _ = _real_clips(get_registries(), 24, frames=33, fps=8.0, **common)
    assert keys.shape == (24, 5, 32, 32, 3) and full.shape == (24, 33, 32, 32, 3) and targets == same_targets
    assert np.array_equal(full[:, ::8], keys)  # 33 frames at 8 fps hold the 5 key frames at 1 fps
    data = MovingShapes(num_clips=info["clip_indices"][1] + 1, split="val")
    lengths = [data[i].num_frames for i in range(info["clip_indices"][1] + 1)]
    # 1 fps is the lowest rate whose 5 frames fit: 33..64 frames at 8 fps (0.5 fps needs 65).
    assert sum(33 <= n <= 64 for n in lengths) == 24
    for clips in (keys, full):
        summary = summarize_motion(motion_scores(c, t["direction"]) for c, t in zip(clips, targets))
        assert summary["straightness_median"] > 0.98 and summary["forward_steps"] == 1.0


def test_eval_without_a_classifier_says_how_to_get_one(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("COGFRAME_ASSETS", str(make_assets(tmp_path / "assets")))
    result = cli("eval", "--n", 2, *SMALL)
    assert result.code == 2 and "no video classifier" in result.err and "--no-frechet" in result.err
    result = cli("eval", "--n", 2, "--no-frechet", *SMALL)
    assert result.code == 0, result.err
    assert "Fréchet" not in result.out and "straightness" in result.out


def test_eval_table_rejects_a_file_that_is_not_a_report(cli, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    result = cli("eval", "--table", bad)
    assert result.code == 2 and "is not a report" in result.err


def test_eval_rejects_a_bad_count(cli):
    result = cli("eval", "--n", 0)
    assert result.code == 2 and "--n must be >= 1" in result.err


def test_a_square_with_rounded_ragged_corners_at_96_px_still_reads_as_a_square():
    # What a tokenizer makes of a 30 px square at 96 px: the corner pixels gone and the edges
    # ragged, so the box's fill is under FILL_SQUARE and no single corner pixel is lit. The corner
    # patches (a tenth of the side) still see the corners; a circle's edge never reaches them.
    frames = np.zeros((5, 96, 96, 3), np.uint8)
    for t in range(5):
        square = np.ones((30, 30), bool)
        square[0, ::3] = square[-1, 1::3] = square[::3, 0] = square[1::3, -1] = False
        square[0, 1::3] = square[-1, ::3] = square[2::3, 0] = square[::3, -1] = False
        for corner in (square, square[::-1], square[:, ::-1], square[::-1, ::-1]):
            corner[0, :2] = corner[1, 0] = False  # views: cut all four corners
        frames[t, 20:50, 10 + 8 * t:40 + 8 * t][square] = COLOURS["blue"]
    found = detect(frames, COLOURS)
    assert found.fill < 0.92  # the fill rule alone would call it a circle
    assert found.shape == "square" and found.direction == "right"
    circle = np.zeros((5, 96, 96, 3), np.uint8)
    yy, xx = np.mgrid[:96, :96]
    for t in range(5):
        circle[t][(yy - 35) ** 2 + (xx - 25 - 8 * t) ** 2 <= 15 ** 2] = COLOURS["blue"]
    assert detect(circle, COLOURS).shape == "circle"


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), index=st.integers(0, 100))
def test_a_clip_rendered_at_three_times_the_size_reads_the_same(seed, index):
    small = MovingShapes(num_clips=index + 1, split="val", seed=seed, size=32)[index]
    large = MovingShapes(num_clips=index + 1, split="val", seed=seed, size=32, render_scale=3)[index]
    a, b = detect(_key_frames(small), COLOURS), detect(_key_frames(large), COLOURS)
    assert (a.colour, a.direction, a.shape) == (b.colour, b.direction, b.shape) == tuple(
        small.metadata[k] for k in ("colour", "direction", "shape"))


def test_the_corner_share_counts_each_lit_corner():
    # Two of the four corner pixels lit and a fill under FILL_SQUARE: a square by the corner rule
    # (corners 0.5). Summing the four numpy booleans would OR them and score 0.25 at most.
    frames = np.zeros((5, 32, 32, 3), np.uint8)
    for t in range(5):
        square = np.ones((10, 10), bool)
        square[0, 0] = square[-1, -1] = False
        square[0, 1:9] = False  # a ragged top edge: fill 0.90
        frames[t, 10:20, 2 + 3 * t:12 + 3 * t][square] = COLOURS["red"]
    found = detect(frames, COLOURS)
    assert found.fill < 0.92 and found.corners == 0.5
    assert found.shape == "square"


def test_eval_with_real_key_frames_interpolates_the_scored_real_clips(cli, tmp_path, monkeypatch):
    """`--key-frames real`: stage 2 alone, on the key frames of the very real clips it is scored against."""
    import argparse

    import torch

    from cogframe.cli import eval as ev
    from cogframe.plugins import get_registries
    from cogframe.plugins.task_sample import load

    monkeypatch.setenv("COGFRAME_ASSETS", str(make_assets(tmp_path / "assets")))
    report = tmp_path / "eval.json"
    result = cli("eval", "--n", 2, "--batch", 1, "--rounds", 1, "--key-frames", "real", "--no-frechet",
                 "--json", report, *SMALL)
    assert result.code == 0, result.err
    assert "key frames: the scored real clips'" in result.out
    data = json.loads(report.read_text())
    assert data["key_frames"] == "real" and data["frames"] == 9 and data["fps"] == 2.0
    common = dict(key_frames=5, key_fps=1.0, rates=(0.25, 0.5, 1.0, 2.0, 4.0, 8.0), size=32)
    real, targets, _ = ev._real_clips(get_registries(), 4, frames=9, fps=2.0, **common)
    assert [c["caption"] for c in data["clips"]] == [caption_of(**t) for t in targets[0::2]]

    args = argparse.Namespace(recipe="tiny/sample", overrides=SMALL, rounds=1, seed=0, batch=2, key_frames="real",
                              data="tiny/prepare", n=2)
    cfg, plan = ev._plan(args, get_registries(), "a red circle moving left")
    load(plan)
    _, batches = ev._real_key_frame_batches(args, plan, get_registries())
    (_, _, batch), = list(batches)
    keys = torch.from_numpy(real[0::2][:, ::2].reshape(-1, 32, 32, 3)).permute(0, 3, 1, 2)
    expected = plan.context.image_tokenizer.encode(keys).reshape(2, 5, *batch.tokens.shape[2:])
    assert batch.tokens.shape[1] == 9 and torch.equal(batch.tokens[:, ::2], expected)
    assert batch.passes.get("key_frames") is None and "interpolation" in batch.passes  # stage 1 never ran

    refused = cli("eval", "--n", 2, "--rounds", 0, "--key-frames", "real", "--no-frechet", *SMALL)
    assert refused.code == 2 and "--rounds >= 1" in refused.err
