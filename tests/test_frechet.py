"""The Fréchet distance (core/metrics/frechet.py), the clip classifier it embeds with
(core/metrics/video_classifier.py), the shipped classifier, and the task that trains it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cogframe.config.recipes import asset_path
from cogframe.core.io.atomic import is_temp_file
from cogframe.core.metrics.frechet import (
    embed_clips,
    feature_stats,
    frechet_distance,
    frechet_distance_of_clips,
    frechet_distance_of_stats,
    load_video_classifier,
    sqrt_psd,
)
from cogframe.core.metrics.video_classifier import VideoClassifier, clips_to_tensor, resample_indices
from cogframe.errors import ConfigError, DataError, ShapeError
from cogframe.plugins import get_registries

LABELS = {"colour": ["red", "green", "blue", "yellow", "magenta", "cyan", "white"],
          "shape": ["circle", "square", "triangle"], "direction": ["left", "right", "up", "down"]}


def _random_spd(rng: np.random.Generator, dim: int) -> np.ndarray:
    a = rng.normal(size=(dim, dim))
    return a @ a.T / dim + 0.1 * np.eye(dim)


def _features(rng: np.random.Generator, n: int, dim: int, shift: float = 0.0) -> np.ndarray:
    return rng.multivariate_normal(np.full(dim, shift), _random_spd(rng, dim), size=n)


# ---- the distance on features ---------------------------------------------------------------------


def test_distance_of_a_set_with_itself_is_zero():
    rng = np.random.default_rng(0)
    for n, dim in ((500, 16), (5, 64)):  # also fewer samples than dimensions (singular covariance)
        feats = _features(rng, n, dim)
        assert frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-8 * dim)


def test_distance_is_symmetric_and_grows_with_the_shift():
    rng = np.random.default_rng(1)
    a, b = _features(rng, 300, 12), _features(rng, 200, 12, shift=0.5)
    ab, ba = frechet_distance(a, b), frechet_distance(b, a)
    assert ab == pytest.approx(ba, rel=1e-9)
    far = frechet_distance(a, _features(rng, 200, 12, shift=2.0))
    assert 0 < ab < far


def test_distance_matches_the_closed_form_of_diagonal_gaussians():
    # Diagonal covariances commute, so Tr((S1 S2)^1/2) = sum sqrt(s1_i s2_i) exactly:
    # d^2 = |mu1 - mu2|^2 + sum (sqrt(s1_i) - sqrt(s2_i))^2.
    from cogframe.core.metrics.frechet import FeatureStats

    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    want = float(((mu1 - mu2) ** 2).sum() + ((np.sqrt(s1) - np.sqrt(s2)) ** 2).sum())
    got = frechet_distance_of_stats(FeatureStats(mu1, np.diag(s1), 10), FeatureStats(mu2, np.diag(s2), 10), eps=0.0)
    assert got == pytest.approx(want, rel=1e-12)


def test_symmetric_form_equals_the_trace_of_the_general_square_root():
    # Non-commuting covariances: the eigenvalues of S1 S2 (a non-symmetric product) are those of
    # S1^1/2 S2 S1^1/2, so the trace of its square root is the sum of their square roots.
    rng = np.random.default_rng(2)
    s1, s2 = _random_spd(rng, 6), _random_spd(rng, 6)
    general = np.sqrt(np.linalg.eigvals(s1 @ s2).real.clip(0)).sum()
    root = sqrt_psd(s1)
    assert np.allclose(root @ root, s1, atol=1e-10)
    symmetric = np.sqrt(np.linalg.eigvalsh(root @ s2 @ root).clip(0)).sum()
    assert symmetric == pytest.approx(general, rel=1e-9)
    from cogframe.core.metrics.frechet import FeatureStats

    mean = np.zeros(6)
    got = frechet_distance_of_stats(FeatureStats(mean, s1, 2), FeatureStats(mean, s2, 2), eps=0.0)
    assert got == pytest.approx(np.trace(s1) + np.trace(s2) - 2 * general, rel=1e-9)


def test_bad_feature_sets_are_errors_that_say_what_to_pass():
    rng = np.random.default_rng(3)
    with pytest.raises(ShapeError, match=">= 2 clips per set"):
        frechet_distance(rng.normal(size=(1, 4)), rng.normal(size=(5, 4)))
    with pytest.raises(ShapeError, match="4 and 3 dimensions"):
        frechet_distance(rng.normal(size=(5, 4)), rng.normal(size=(5, 3)))
    with pytest.raises(ShapeError, match=r"\[N, D\]"):
        frechet_distance(rng.normal(size=(5,)), rng.normal(size=(5, 3)))
    bad = rng.normal(size=(5, 4))
    bad[2, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        feature_stats(bad)


# ---- the classifier ------------------------------------------------------------------------------


def test_resampling_keeps_both_ends_of_the_clip():
    assert resample_indices(5, 9).tolist() == [0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert resample_indices(33, 9).tolist() == [0, 4, 8, 12, 16, 20, 24, 28, 32]
    x = clips_to_tensor([np.zeros((5, 16, 16, 3), np.uint8), np.full((33, 16, 16, 3), 255, np.uint8)], 9, 16)
    assert x.shape == (2, 3, 9, 16, 16) and float(x[1].min()) == 1.0


def test_classifier_round_trips_through_save_and_load(tmp_path):
    torch.manual_seed(0)
    model = VideoClassifier(LABELS, size=16, num_frames=5, width=4, embed_dim=8)
    model.save(tmp_path / "clf")
    assert sorted(p.name for p in (tmp_path / "clf").iterdir()) == ["config.json", "model.safetensors"]
    assert not any(is_temp_file(p) for p in (tmp_path / "clf").iterdir())
    loaded = load_video_classifier(tmp_path / "clf")
    assert not loaded.training and loaded.labels == LABELS and loaded.config == model.config
    clips = np.random.default_rng(0).integers(0, 256, size=(3, 7, 16, 16, 3), dtype=np.uint8)
    # Same weights, same code path, same process: the embedding is reproduced exactly.
    assert torch.equal(model.features(clips), loaded.features(clips))
    assert [set(p) for p in loaded.predict(clips)] == [set(LABELS)] * 3


def test_broken_classifier_folders_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="no video classifier.*cogframe run tiny/video_classifier"):
        load_video_classifier(tmp_path / "missing")
    model = VideoClassifier(LABELS, size=16, num_frames=5, width=4, embed_dim=8)
    folder = model.save(tmp_path / "clf")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "width": 8}))
    with pytest.raises(DataError, match="do not match its config.json"):
        load_video_classifier(folder)
    (folder / "config.json").write_text(json.dumps({**config, "format": "cogframe-vqvae"}))
    with pytest.raises(DataError, match="not a cogframe video-classifier config"):
        load_video_classifier(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_video_classifier(folder)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes(b"truncated")
    with pytest.raises(DataError, match="truncated or not a safetensors file"):
        load_video_classifier(folder)


def test_bad_classifier_settings_and_clips_say_the_fix():
    with pytest.raises(ConfigError, match="multiple of 4"):
        VideoClassifier(LABELS, size=30)
    with pytest.raises(ConfigError, match=">= 2 distinct class names"):
        VideoClassifier({"shape": ["circle"]})
    model = VideoClassifier(LABELS, size=16, num_frames=5, width=4, embed_dim=8)
    with pytest.raises(ShapeError, match="uint8 pixels 0..255"):
        model.features(np.zeros((2, 5, 16, 16, 3), np.float32))
    with pytest.raises(ShapeError, match="resize the frames to 16x16"):
        model.features(np.zeros((2, 5, 32, 32, 3), np.uint8))
    with pytest.raises(ShapeError, match=">= 2 frames"):
        model.features([np.zeros((1, 16, 16, 3), np.uint8)])
    with pytest.raises(ShapeError, match=r"\[B, T, H, W, 3\]"):
        model.features(np.zeros((5, 16, 16, 3), np.uint8))
    with pytest.raises(ShapeError, match="in clips 0..1: clip 1"):
        embed_clips(model, [np.zeros((5, 16, 16, 3), np.uint8), np.zeros((5, 16, 16), np.uint8)])
    with pytest.raises(ShapeError, match="at least two"):
        frechet_distance_of_clips(model, [], [])


# ---- the shipped classifier on real clips --------------------------------------------------------


def _real_clips(split: str, count: int, frames: int, *, start: int = 0, direction: str | None = None):
    data = get_registries().build("dataset", {"name": "moving_shapes", "split": split, "num_clips": 4000,
                                              "size": 32})
    clips, index = [], start
    while len(clips) < count:
        clip = data[index]
        index += 1
        if direction is None or clip.metadata["direction"] == direction:
            clips.append(clip.frames[resample_indices(clip.num_frames, frames)])
    return clips


@pytest.fixture(scope="module")
def shipped():
    return load_video_classifier(asset_path("tiny/video_classifier"))


def test_shipped_classifier_reads_held_out_clips(shipped):
    data = get_registries().build("dataset", {"name": "moving_shapes", "split": "val", "num_clips": 120, "size": 32})
    clips = list(data)
    for frames in (5, 33):
        predicted = shipped.predict([c.frames[resample_indices(c.num_frames, frames)] for c in clips])
        for head in LABELS:
            right = np.mean([p[head] == c.metadata[head] for p, c in zip(predicted, clips)])
            assert right >= 0.95, f"{head} on {frames}-frame clips: {right:.1%}"


def test_real_sets_are_close_and_broken_sets_far(shipped):
    a = _real_clips("val", 80, 5)
    b = _real_clips("val", 80, 5, start=80)          # disjoint real clips: the floor
    self_distance = frechet_distance_of_clips(shipped, a, a)
    real = frechet_distance_of_clips(shipped, a, b)
    noise = np.random.default_rng(0).integers(0, 256, size=(80, 5, 32, 32, 3), dtype=np.uint8)
    shuffled = [clip[np.random.default_rng(i).permutation(len(clip))] for i, clip in enumerate(b)]
    assert self_distance == pytest.approx(0.0, abs=1e-6 * max(real, 1.0))
    assert real == pytest.approx(frechet_distance_of_clips(shipped, b, a), rel=1e-6)
    assert frechet_distance_of_clips(shipped, a, noise) > 10 * real
    assert frechet_distance_of_clips(shipped, a, shuffled) > 2 * real


def test_wrong_direction_is_far_from_the_right_one(shipped):
    right = _real_clips("val", 60, 5, direction="right")
    other_right = _real_clips("val", 60, 5, start=2000, direction="right")
    reversed_in_time = [clip[::-1].copy() for clip in other_right]  # the same objects moving left
    floor = frechet_distance_of_clips(shipped, right, other_right)
    assert frechet_distance_of_clips(shipped, right, reversed_in_time) > 3 * floor


# ---- the task ------------------------------------------------------------------------------------

TINY_RUN = ["dataset.size=16", "splits.train.num_clips=64", "splits.val.num_clips=8", "model.width=4",
            "model.embed_dim=8", "train.steps=3", "train.batch_size=4", "train.log_every=1"]


def test_task_trains_and_writes_a_loadable_classifier(cli, tmp_path):
    out = tmp_path / "clf"
    result = cli("run", "tiny/video_classifier", f"output_dir={out}", f"loggers.0.path={out}/log.jsonl", *TINY_RUN)
    assert result.code == 0, result.err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["val_clips"] == 8 and metrics["size"] == 16
    assert set(metrics["accuracy"]) == {"random_views", "key_frames", "frames_33", "key_frames_blurred"}
    assert all(set(v) == set(LABELS) and all(0 <= a <= 1 for a in v.values()) for v in metrics["accuracy"].values())
    assert "held-out accuracy on 8 val clips" in result.out
    model = load_video_classifier(out / "model")
    assert model.size == 16 and model.embed_dim == 8
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 2, 3, 3] and "val_key_frames_shape" in logged[-1]
    clips = _real_clips("val", 4, 5)
    small = [c[:, ::2, ::2] for c in clips]  # 32 -> 16 px
    assert frechet_distance_of_clips(model, small, small) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("override, message", [
    ("~splits.val", "has no 'val' split"),
    ("views.max_frames=3", "views.max_frames: is 3 < min_frames 5"),
    ("views.min_span=0", "views.min_span: is 0; it is a fraction"),
    ("train.stepz=3", "stepz"),
    ("model.num_frames=2", "model.num_frames: is 2"),
])
def test_bad_recipes_exit_2_naming_the_key(cli, tmp_path, override, message):
    result = cli("run", "tiny/video_classifier", f"output_dir={tmp_path}", override)
    assert result.code == 2
    assert message in result.err
    assert not (tmp_path / "metrics.json").exists()
