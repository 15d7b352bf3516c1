"""The README's first command: `cogframe demo` with the tiny models shipped in the package."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cogframe.core.metrics.detector import detect
from cogframe.core.io.video import read_video
from cogframe.plugins.dataset_moving_shapes import COLOURS
from cogframe.config.recipes import asset_path


def test_demo_with_the_shipped_models_writes_a_33_frame_8fps_super_resolved_video(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("COGFRAME_ASSETS", raising=False)
    for name in ("stage1.safetensors", "stage2.safetensors", "sr.safetensors", "text_tokenizer.model", "vqvae"):
        assert Path(asset_path(f"tiny/{name}")).exists(), f"shipped asset tiny/{name} is missing"
    result = cli("demo", "--out", tmp_path, "--prompt", "a green square moving up")
    assert result.code == 0, result.err
    stem = tmp_path / "a_green_square_moving_up"
    frames, fps = read_video(stem.with_suffix(".mp4"))
    assert frames.shape[0] == 33 and abs(fps - 8.0) < 1e-6
    gif_frames, _ = read_video(stem.with_suffix(".gif"))
    assert gif_frames.shape[0] == 33
    details = json.loads(stem.with_suffix(".json").read_text())
    assert details["prompt"] == "a green square moving up"
    assert details["size"] == [96, 96]  # 8x8 key-frame tokens, super-resolved to 24x24
    # The trained models get colour right on every prompt of the eval (README): check it here.
    assert detect(np.asarray(frames), COLOURS).colour == "green"
