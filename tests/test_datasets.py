"""Datasets: moving_shapes (determinism, captions, geometry) and video_folder (skips, report, strict)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cogframe.core.io.video import read_video, write_video
from cogframe.errors import ConfigError, DataError
from cogframe.plugins import get_registries
from cogframe.plugins.dataset_moving_shapes import COLOURS, DIRECTIONS, SHAPES, MovingShapes
from cogframe.plugins.dataset_video_folder import VideoFolder


# ---- moving_shapes ------------------------------------------------------------------------------
def test_clips_are_deterministic_and_independent_of_count():
    few, many = MovingShapes(num_clips=4, seed=7), MovingShapes(num_clips=40, seed=7)
    for i in range(4):
        a, b = few[i], many[i]
        np.testing.assert_array_equal(a.frames, b.frames)
        assert a.caption == b.caption and a.metadata == b.metadata
    assert not np.array_equal(MovingShapes(num_clips=4, seed=8)[2].frames, few[2].frames)


def test_train_and_val_are_disjoint():
    train = MovingShapes(num_clips=30, split="train")
    val = MovingShapes(num_clips=30, split="val")
    train_keys = {(c.caption, c.frames.tobytes()) for c in train}
    assert not any((c.caption, c.frames.tobytes()) in train_keys for c in val)
    assert train[0].source == "moving_shapes:train/000000" and val[0].source == "moving_shapes:val/000000"


def test_captions_durations_and_coverage():
    data = MovingShapes(num_clips=300, seed=1)
    seen = set()
    for clip in data:
        meta = clip.metadata
        assert clip.caption == f"a {meta['colour']} {meta['shape']} moving {meta['direction']}"
        assert clip.fps == 8.0 and 8 <= clip.num_frames <= 64  # 1-8 s at 8 fps
        assert clip.frames.shape[1:] == (32, 32, 3) and clip.frames.dtype == np.uint8
        seen |= {meta["shape"], meta["colour"], meta["direction"]}
    assert seen == set(SHAPES) | set(COLOURS) | set(DIRECTIONS)


def test_object_colour_bounds_and_motion():
    for clip in MovingShapes(num_clips=60, seed=3, size=32):
        colour = np.array(COLOURS[clip.metadata["colour"]], np.uint8)
        lit = clip.frames.any(axis=-1)  # [T, H, W] object pixels; the background is black
        assert (clip.frames[lit] == colour).all(), "object pixels must be exactly the stated colour"
        assert (clip.frames[~lit] == 0).all(), "background must be black"
        counts = lit.sum(axis=(1, 2))
        # Whole object visible in every frame: never clipped by the border, so its area barely changes.
        assert counts.min() > 0 and counts.min() >= 0.75 * counts.max(), clip.source
        ys, xs = np.mgrid[0:32, 0:32]
        cy = (lit * ys).sum(axis=(1, 2)) / counts
        cx = (lit * xs).sum(axis=(1, 2)) / counts
        direction = clip.metadata["direction"]
        along, across = (cx, cy) if direction in ("left", "right") else (cy, cx)
        sign = 1 if direction in ("right", "down") else -1
        assert sign * (along[-1] - along[0]) >= 4, f"{clip.source} does not move {direction}"
        assert np.all(sign * np.diff(along) >= -0.5), f"{clip.source} moves backwards"
        assert np.ptp(across) <= 1.0, f"{clip.source} drifts sideways"


def test_moving_shapes_settings_are_checked():
    with pytest.raises(ConfigError, match="split"):
        MovingShapes(split="test")
    with pytest.raises(ConfigError, match="object_scale"):
        MovingShapes(size=8)
    with pytest.raises(ConfigError, match="max_seconds"):
        MovingShapes(min_seconds=2, max_seconds=1)
    clip = get_registries().build("dataset", {"name": "moving_shapes", "num_clips": 2, "size": 48, "fps": 4})[1]
    assert clip.frames.shape[1:3] == (48, 48) and clip.fps == 4.0


# ---- video_folder -------------------------------------------------------------------------------
def _write_folder(root, good: int = 4):
    """A folder with good gifs plus one corrupt mp4, one too-short gif, one missing file, one bad line."""
    shapes = MovingShapes(num_clips=good, min_seconds=1, max_seconds=2, size=16)
    lines = []
    for i, clip in enumerate(shapes):
        write_video(root / "clips" / f"{i}.gif", clip.frames, clip.fps)
        lines.append({"video": f"clips/{i}.gif", "caption": clip.caption})
    (root / "clips" / "corrupt.mp4").write_bytes(b"this is not a video" * 20)
    write_video(root / "clips" / "short.gif", shapes[0].frames[:2], 8)
    lines += [{"video": "clips/corrupt.mp4", "caption": "broken"},
              {"video": "clips/short.gif", "caption": "too short"},
              {"video": "clips/missing.mp4", "caption": "gone"}]
    text = "".join(json.dumps(x) + "\n" for x in lines) + "{not json\n"
    (root / "captions.jsonl").write_text(text)


def test_video_folder_skips_and_reports(tmp_path):
    _write_folder(tmp_path)
    data = VideoFolder(str(tmp_path), size=8, min_frames=5)
    assert data.total_entries == 8 and len(data) == 6  # missing + malformed dropped up front
    clips = list(data)
    assert len(clips) == 4
    assert clips[0].frames.shape[1:] == (8, 8, 3) and clips[0].caption.startswith("a ")
    assert len(data.skip_log) == 4
    report = data.report()
    for needle in ("skipped 4 of 8", "missing file (1): clips/missing.mp4", "clips/corrupt.mp4",
                   "too short (1): clips/short.gif (2 frames < min_frames 5)", "captions.jsonl:8"):
        assert needle in report, report
    list(data)  # a second pass does not count the same files again
    assert len(data.skip_log) == 4


def test_video_folder_strict_raises_naming_the_file(tmp_path):
    _write_folder(tmp_path)
    with pytest.raises(DataError, match="clips/missing.mp4"):
        VideoFolder(str(tmp_path), strict=True)
    (tmp_path / "captions.jsonl").write_text(json.dumps({"video": "clips/corrupt.mp4", "caption": "x"}) + "\n")
    data = VideoFolder(str(tmp_path), strict=True)
    with pytest.raises(DataError, match="clips/corrupt.mp4"):
        data[0]


def test_video_folder_needs_captions_file(tmp_path):
    with pytest.raises(DataError, match="captions.jsonl.*export_dataset"):
        VideoFolder(str(tmp_path))


def test_video_folder_splits(tmp_path):
    clip = MovingShapes(num_clips=1, min_seconds=1, max_seconds=1, size=16)[0]
    lines = []
    for i in range(40):
        write_video(tmp_path / f"{i}.gif", clip.frames, 8)
        lines.append({"video": f"{i}.gif", "caption": "c", **({"split": "val"} if i == 0 else {})})
    (tmp_path / "captions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    train = VideoFolder(str(tmp_path), split="train", val_fraction=0.25)
    val = VideoFolder(str(tmp_path), split="val", val_fraction=0.25)
    names = lambda d: {rel for rel, _ in d.entries}  # noqa: E731
    assert names(train).isdisjoint(names(val)) and len(names(train) | names(val)) == 40
    assert "0.gif" in names(val)  # an explicit "split" field wins over the hash
    assert 2 <= len(val) <= 20
    assert len(VideoFolder(str(tmp_path))) == 40


def test_export_task_feeds_video_folder(tmp_path):
    from omegaconf import OmegaConf

    regs = get_registries()
    cfg = OmegaConf.create({
        "task": "export_dataset", "output_dir": str(tmp_path / "out"), "format": "gif",
        "dataset": {"name": "moving_shapes", "size": 16, "max_seconds": 2},
        "splits": {"train": {"split": "train", "num_clips": 3}, "val": {"split": "val", "num_clips": 2}},
    })
    task = regs.build("task", {"name": "export_dataset"})
    task.validate(cfg, regs)
    task.run(cfg, regs)
    expected = MovingShapes(num_clips=3, size=16, max_seconds=2)
    folder = VideoFolder(str(tmp_path / "out"), size=16, split="train")
    assert len(folder) == 3
    for clip, want in zip(folder, expected):
        assert clip.caption == want.caption
        np.testing.assert_array_equal(clip.frames, want.frames)
    assert len(VideoFolder(str(tmp_path / "out"), split="val")) == 2
    frames, _ = read_video(tmp_path / "out" / "videos" / "val_000001.gif")
    assert frames.shape[1:] == (16, 16, 3)


def test_prepare_of_an_all_bad_video_folder_prints_the_report(tmp_path, cli):
    from cogframe.config.recipes import assets_root

    folder = tmp_path / "bad"
    (folder / "clips").mkdir(parents=True)
    (folder / "clips" / "a.mp4").write_bytes(b"not a video" * 10)
    (folder / "captions.jsonl").write_text(
        json.dumps({"video": "clips/a.mp4", "caption": "a red circle moving left"}) + "\n"
        + json.dumps({"video": "clips/gone.mp4", "caption": "a red circle moving up"}) + "\n{oops\n")
    tiny = assets_root() / "tiny"
    recipe = tmp_path / "prep.yaml"
    recipe.write_text(json.dumps({
        "description": "all-bad folder", "task": "prepare", "output_dir": str(tmp_path / "shards"),
        "dataset": {"name": "video_folder", "root": str(folder), "size": 32},
        "text_tokenizer": {"name": "sentencepiece", "model_path": str(tiny / "text_tokenizer.model"),
                           "id_offset": 256},
        "image_tokenizer": {"name": "vqvae", "path": str(tiny / "vqvae")},
        "frame_rate_sampler": {"name": "lowest_fps"},
    }))
    result = cli("run", recipe)
    assert result.code == 2
    for needle in ("every entry was skipped", "skipped 3 of 3 entries", "unreadable (1): clips/a.mp4",
                   "missing file (1): clips/gone.mp4", "malformed caption line (1): captions.jsonl:3"):
        assert needle in result.err, result.err
    assert "see the report above" not in result.err
    assert not (tmp_path / "shards" / "manifest.json").exists()
