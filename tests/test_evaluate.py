"""The moving-shapes adherence detector (core/evaluate.py) and `cogframe eval` end to end."""

from __future__ import annotations

import json

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


def test_eval_end_to_end_writes_the_table_and_json(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("COGFRAME_ASSETS", str(make_assets(tmp_path / "assets")))
    report = tmp_path / "eval.json"
    result = cli("eval", "--n", 4, "--batch", 2, "--seed", 1, "--json", report, "--sheet", tmp_path / "s.png",
                 *SMALL)
    assert result.code == 0, result.err
    assert "metric" in result.out and "real via tokenizer" in result.out
    data = json.loads(report.read_text())
    assert data["n"] == 4 and data["rounds"] == 0 and len(data["clips"]) == 4
    assert set(data["metrics"]) == {"generated", "real", "real_tokenized"}
    assert data["metrics"]["real"]["colour"] == 1.0 and data["metrics"]["real"]["direction"] == 1.0
    assert (tmp_path / "s.png").is_file()


def test_eval_rejects_a_bad_count(cli):
    result = cli("eval", "--n", 0)
    assert result.code == 2 and "--n must be >= 1" in result.err
