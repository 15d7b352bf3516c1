"""The "your own videos" walkthrough of docs/your-data.md, at tiny size, through the public CLI.

A folder of mp4 files + captions (exported moving_shapes clips standing in for a user's videos;
once as captions.jsonl, once as a CSV) goes through every step of the guide with the
``tiny/your_data_*`` recipes: text tokenizer, VQ-VAE, the three shard sets, text-to-image,
stage 1, stage 2 and sampling. Steps and model sizes are cut down with overrides (1 layer, 3
steps) so the whole path runs in well under a minute; what is checked is that each step reads what
the one before wrote, not what the models learn.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from safetensors.torch import load_file

from cogframe.core.io.video import read_video

# Small training runs: one layer, three steps, no evaluation or checkpoint before the end.
TINY_TRAIN = ["+model.overrides.num_layers=1", "train.steps=3", "train.batch_size=4", "train.warmup_steps=1",
              "train.log_every=1", "train.eval_every=3", "train.eval_batches=1", "train.save_every=3",
              "loggers=[{name: stdout}]"]


@pytest.fixture
def walkthrough_env(tmp_path, monkeypatch):
    videos, runs = tmp_path / "my_videos", tmp_path / "runs"
    monkeypatch.setenv("COGFRAME_VIDEOS", str(videos))
    monkeypatch.setenv("COGFRAME_RUNS", str(runs))
    monkeypatch.delenv("COGFRAME_CAPTIONS", raising=False)
    return videos, runs


def _ok(result, step):
    assert result.code == 0, f"{step} failed:\n{result.err[-3000:]}"
    return result


def test_your_videos_from_folder_to_sampled_video(walkthrough_env, cli, monkeypatch):
    videos, runs = walkthrough_env
    # 0. "Your videos": 10 mp4 files + captions.jsonl (export_dataset writes a split per line).
    _ok(cli("run", "tiny/export_moving_shapes", f"output_dir={videos}", "splits.train.num_clips=8",
            "splits.val.num_clips=2"), "export")
    lines = [json.loads(x) for x in (videos / "captions.jsonl").read_text().splitlines()]
    assert len(lines) == 10 and all(x["video"].endswith(".mp4") for x in lines)

    # The same folder described by a CSV (path,caption,split), the common dataset format.
    with open(videos / "captions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "caption", "split"])
        writer.writerows([x["video"], x["caption"], x["split"]] for x in lines)

    # 1. Text tokenizer on the captions (read from the CSV).
    monkeypatch.setenv("COGFRAME_CAPTIONS", "captions.csv")
    _ok(cli("run", "tiny/your_data_text_tokenizer"), "text tokenizer")
    assert (runs / "text_tokenizer" / "tokenizer.model").is_file()
    corpus = (runs / "text_tokenizer" / "corpus.txt").read_text()
    assert lines[0]["caption"] in corpus
    monkeypatch.delenv("COGFRAME_CAPTIONS")

    # 2. Image tokenizer: a VQ-VAE for a few steps.
    _ok(cli("run", "tiny/your_data_vqvae", "train.steps=3", "train.batch_size=8", "train.log_every=1"), "vqvae")
    assert (runs / "vqvae" / "model").is_dir()

    # 3. Token shards: images, stage-1 key frames, stage-2 windows.
    for recipe, folder in (("your_data_prepare_image", "shards_image"), ("your_data_prepare", "shards_video"),
                           ("your_data_prepare_interp", "shards_interp")):
        result = _ok(cli("run", f"tiny/{recipe}"), recipe)
        manifest = json.loads((runs / folder / "manifest.json").read_text())
        assert manifest["splits"]["train"]["num_samples"] == 8 and manifest["grid"] == [8, 8], result.out
        assert manifest["num_frames"] == (1 if folder == "shards_image" else 5)
    # The stage-1 shards hold the frames the sampler chose, decoded by seeking: the same frames as
    # a whole-file decode gives (tokenised with the same VQ-VAE, so the same codes).
    shard = load_file(runs / "shards_video" / "train-00000.safetensors")
    assert shard["frames"].shape == (8, 5, 8, 8)

    # 4-6. Text-to-image, stage 1 and stage 2, each inheriting the models before it.
    for recipe in ("your_data_t2i", "your_data_stage1", "your_data_stage2"):
        _ok(cli("run", f"tiny/{recipe}", *TINY_TRAIN), recipe)
        assert (runs / recipe.removeprefix("your_data_") / "model.safetensors").is_file()

    # 7. Sampling with the models trained on "your" videos.
    result = _ok(cli("run", "tiny/your_data_sample", "prompt=a red circle moving left", "rounds=1",
                     "+stage1.model.overrides.num_layers=1", "+stage2.model.overrides.num_layers=1"), "sample")
    mp4 = runs / "samples" / "a_red_circle_moving_left.mp4"
    assert mp4.is_file(), (result.out, sorted(p.name for p in (runs / "samples").iterdir()))
    frames, fps = read_video(mp4)
    assert frames.shape[0] == 9 and fps == 2.0 and frames.dtype == np.uint8
