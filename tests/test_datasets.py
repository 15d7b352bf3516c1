"""Datasets: moving_shapes (determinism, captions, geometry) and video_folder (skips, report, strict)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cogframe.core.io.video import read_video, write_video
from cogframe.errors import ConfigError, DataError
from cogframe.plugins import get_registries
from cogframe.plugins.dataset_moving_shapes import COLOURS, DIRECTIONS, SHAPES, MovingShapes, box_position, render_shape_masks
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


# ---- video_folder: reading only the frames it needs, CSV captions --------------------------------
def _export_mp4s(root, n: int = 5, size: int = 32):
    """moving_shapes clips as mp4 files + captions.jsonl, as export_dataset writes them."""
    clips = list(MovingShapes(num_clips=n, size=size, seed=3))
    lines = []
    for i, clip in enumerate(clips):
        write_video(root / "videos" / f"{i}.mp4", clip.frames, clip.fps)
        lines.append({"video": f"videos/{i}.mp4", "caption": clip.caption})
    (root / "captions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return clips


def _long_mp4(path, frames: int = 240, fps: int = 24, gop: int = 24):
    """A clip with many groups of pictures and B-frames, so seeking is exercised for real."""
    import imageio.v3 as iio

    rng = np.random.default_rng(0)
    video = rng.integers(0, 40, (frames, 48, 64, 3), dtype=np.uint8)
    for t in range(frames):  # moving bars: every frame differs from its neighbours
        video[t, (t % 40):(t % 40) + 5, :, 0] = 250
        video[t, :, (3 * t) % 64, 1] = 220
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, video, plugin="FFMPEG", fps=fps, codec="libx264", pixelformat="yuv420p",
                macro_block_size=1, output_params=["-g", str(gop), "-bf", "2", "-crf", "23"],
                ffmpeg_log_level="error")


def test_seeking_reads_the_frames_a_full_decode_reads(tmp_path):
    pytest.importorskip("av")
    from cogframe.plugins._video_decode import SeekingReader

    _export_mp4s(tmp_path, n=3)
    _long_mp4(tmp_path / "videos" / "long.mp4")
    rng = np.random.default_rng(1)
    for name in ("0.mp4", "1.mp4", "2.mp4", "long.mp4"):
        full, fps = read_video(tmp_path / "videos" / name)
        with SeekingReader(tmp_path / "videos" / name) as reader:
            assert (reader.num_frames, reader.fps) == (full.shape[0], fps)
            if name == "long.mp4":
                assert len(reader._keyframes) >= 5  # the test needs several groups of pictures
            picks = [[0], [full.shape[0] - 1], list(range(full.shape[0]))]
            picks += [sorted(rng.choice(full.shape[0], 5, replace=False).tolist()) for _ in range(6)]
            picks += [rng.choice(full.shape[0], 4).tolist()]  # unsorted, with repeats
            for indices in picks:
                np.testing.assert_array_equal(reader.frames(indices), full[indices], err_msg=f"{name} {indices}")
        with SeekingReader(tmp_path / "videos" / name) as reader, pytest.raises(DataError, match="does not exist"):
            reader.frames([full.shape[0]])


def test_video_folder_probe_and_read_frames_equal_the_whole_clip(tmp_path, monkeypatch):
    _export_mp4s(tmp_path, n=4)
    data = VideoFolder(str(tmp_path), size=16)
    for i in range(len(data)):
        whole = data[i]
        info = data.probe(i)
        assert (info.num_frames, info.fps, info.caption) == (whole.num_frames, whole.fps, whole.caption)
        indices = [0, 2, 4, whole.num_frames - 1]
        np.testing.assert_array_equal(data.read_frames(i, indices), whole.frames[indices])
    # Without PyAV (or with seek: false) the same frames come from one whole-file decode.
    import cogframe.plugins._video_decode as decode

    monkeypatch.setattr(decode, "av_available", lambda: False)
    fallback = VideoFolder(str(tmp_path), size=16)
    assert fallback.probe(1).num_frames == data[1].num_frames
    np.testing.assert_array_equal(fallback.read_frames(1, [1, 3]), data[1].frames[[1, 3]])


def test_video_folder_probe_skips_what_getitem_skips(tmp_path):
    _write_folder(tmp_path)  # gifs, a corrupt mp4, a too-short gif
    data = VideoFolder(str(tmp_path), size=8, min_frames=5)
    probed = [data.probe(i) is not None for i in range(len(data))]
    assert probed == [True] * 4 + [False, False]
    report = data.report()
    assert "unreadable (1): clips/corrupt.mp4" in report and "too short (1): clips/short.gif" in report
    assert [data[i] is not None for i in range(len(data))] == probed and len(data.skip_log) == 4


def test_prepare_with_seeking_writes_the_shards_of_a_full_decode(tmp_path):
    """The prepare task reads only the sampled frames, and its shards are the full decode's."""
    import itertools

    import torch
    from safetensors.torch import load_file

    from cogframe.plugins.tokenizer_sentencepiece import SentencePieceTokenizer
    from cogframe.plugins.vqvae import VQVAE

    _export_mp4s(tmp_path / "folder", n=6)
    captions = [f"a {c} {s} moving {d}" for s, c, d in itertools.product(SHAPES, COLOURS, DIRECTIONS)]
    tok = SentencePieceTokenizer.train(captions * 3 + ["4.0s", "2.0s", "1.0s", "0.5s"] * 40, tmp_path / "tok",
                                       vocab_size=96)
    torch.manual_seed(0)
    VQVAE(codebook_size=32, code_dim=8, channels=8).save(tmp_path / "vq")
    regs = get_registries()
    shards = {}
    for seek in (True, False):
        from omegaconf import OmegaConf

        out = tmp_path / f"shards_{seek}"
        cfg = OmegaConf.create({
            "task": "prepare", "output_dir": str(out), "text_len": 16,
            "dataset": {"name": "video_folder", "root": str(tmp_path / "folder"), "size": 16, "seek": seek},
            "splits": {"train": {"split": "all"}},
            "text_tokenizer": {"name": "sentencepiece", "model_path": str(tok), "id_offset": 32},
            "image_tokenizer": {"name": "vqvae", "path": str(tmp_path / "vq")},
            "frame_rate_sampler": {"name": "random_fps", "rates": [1, 2, 4, 8]},
        })
        task = regs.build("task", {"name": "prepare"})
        task.validate(cfg, regs)
        task.run(cfg, regs)
        shards[seek] = load_file(out / "train-00000.safetensors")
    assert shards[True]["frames"].shape[0] == 6
    for key in shards[True]:
        torch.testing.assert_close(shards[True][key], shards[False][key], rtol=0, atol=0)


def _csv_folder(root, header: str, rows: list[tuple[str, str]], name: str = "captions.csv", sep: str = ","):
    clip = MovingShapes(num_clips=1, min_seconds=1, max_seconds=1, size=16)[0]
    import csv

    root.mkdir(parents=True, exist_ok=True)
    with open(root / name, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter=sep)
        writer.writerow(header.split(","))
        for rel, caption in rows:
            if not rel.startswith("gone") and not (root / rel).exists():
                write_video(root / rel, clip.frames, 8)
            writer.writerow([rel, caption])


def test_video_folder_reads_a_csv_of_paths_and_captions(tmp_path):
    _csv_folder(tmp_path, "path,caption", [("a.gif", "a red circle, moving left"), ("b.gif", "a blue square"),
                                           ("gone.gif", "missing"), ("c.gif", "")])
    with open(tmp_path / "captions.csv", "a") as f:
        f.write("a.gif,an unquoted, comma\n")  # three fields under a two-column header
    data = VideoFolder(str(tmp_path), captions="captions.csv", size=8)
    assert data.entries == [("a.gif", "a red circle, moving left"), ("b.gif", "a blue square")]
    assert "malformed caption line (1): captions.csv:6 (expected 2 fields (path, caption); quote captions" \
        in data.report()
    assert "missing file (1): gone.gif (listed in captions.csv:4)" in data.report()
    assert "empty caption (1): c.gif" in data.report()
    assert data[0].caption == "a red circle, moving left" and data[0].frames.shape[1:] == (8, 8, 3)
    # Other common column names are found by themselves; any name can be given.
    _csv_folder(tmp_path / "t", "video,text", [("a.gif", "x")], name="meta.tsv", sep="\t")
    assert VideoFolder(str(tmp_path / "t"), captions="meta.tsv").entries == [("a.gif", "x")]
    _csv_folder(tmp_path / "k", "clip_file,desc", [("a.gif", "y")])
    assert VideoFolder(str(tmp_path / "k"), captions="captions.csv", video_key="clip_file",
                       caption_key="desc").entries == [("a.gif", "y")]
    # The same keys work in a captions.jsonl.
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "captions.jsonl").write_text(json.dumps({"path": "../a.gif", "text": "z"}) + "\n")
    assert VideoFolder(str(tmp_path / "j")).entries == [("../a.gif", "z")]


def test_video_folder_csv_without_the_needed_column_names_the_fix(tmp_path, cli):
    _csv_folder(tmp_path, "clip_file,caption", [("a.gif", "x")])
    with pytest.raises(DataError, match=r"no video path column.*\['clip_file', 'caption'\].*video_key=<column>"):
        VideoFolder(str(tmp_path), captions="captions.csv")
    with pytest.raises(DataError, match=r"no caption column.*the column 'desc'.*caption_key="):
        VideoFolder(str(tmp_path), captions="captions.csv", video_key="clip_file", caption_key="desc")
    with pytest.raises(ConfigError, match=r"\.jsonl, \.csv or \.tsv"):
        VideoFolder(str(tmp_path), captions="captions.txt")
    with pytest.raises(DataError, match=r"no captions file at .*nope\.csv.*path,caption"):
        VideoFolder(str(tmp_path), captions="nope.csv")
    # Through the CLI: exit 2 with the same message (export_dataset reads any dataset).
    result = cli("run", "tiny/export_moving_shapes", "dataset=video_folder", f"dataset.root={tmp_path}",
                 "dataset.captions=captions.csv", f"output_dir={tmp_path / 'out'}",
                 "~splits.train.num_clips", "~splits.val.num_clips")
    assert result.code == 2 and "video_key=<column>" in result.err, result.err


def test_box_position_is_the_path_every_frame_is_drawn_from():
    clips = MovingShapes(split="val", num_clips=8, size=32, seed=0)
    for i in range(len(clips)):
        clip = clips[i]
        meta = clip.metadata
        for t in (0, clip.num_frames // 2, clip.num_frames - 1):
            x, y = box_position(meta, t)
            mask = render_shape_masks(meta["shape"], 32, np.array([x]), np.array([y]), meta["object_size"])[0]
            assert (mask == (clip.frames[t].max(-1) > 0)).all(), (i, t)
        assert box_position(meta, 0) == tuple(meta["start_xy"])
