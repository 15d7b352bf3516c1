"""The prepare task and token shards: content, loaders, resuming, crash safety, a 100-clip folder."""

from __future__ import annotations

import itertools
import json
import random

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from cogframe.core.io import token_shards as shards_mod
from cogframe.core.io.atomic import is_temp_file
from cogframe.core.io.token_shards import ShardDataset, read_manifest, shard_loader
from cogframe.core.io.video import write_video
from cogframe.errors import ConfigError, DataError
from cogframe.plugins import get_registries
from cogframe.plugins.dataset_moving_shapes import COLOURS, DIRECTIONS, SHAPES, MovingShapes
from cogframe.plugins.frame_rate import LowestFps
from cogframe.plugins.tokenizer_sentencepiece import SentencePieceTokenizer
from cogframe.plugins.vqvae import VQVAE

CAPTIONS = [f"a {c} {s} moving {d}" for s, c, d in itertools.product(SHAPES, COLOURS, DIRECTIONS)]
PREFIXES = ["16.0s", "8.0s", "4.0s", "2.0s", "1.0s", "0.5s"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A trained tiny text tokenizer and an (untrained) tiny VQ-VAE saved to disk."""
    root = tmp_path_factory.mktemp("assets")
    model_file = SentencePieceTokenizer.train(CAPTIONS * 3 + PREFIXES * 40, root / "tok", vocab_size=96)
    torch.manual_seed(0)
    VQVAE(codebook_size=32, code_dim=8, channels=8).save(root / "vq")
    return {"tok": str(model_file), "vq": str(root / "vq")}


def _cfg(out, assets, **changes):
    cfg = OmegaConf.create({
        "task": "prepare", "output_dir": str(out), "seed": 0, "text_len": 16, "shard_size": 5,
        "dataset": {"name": "moving_shapes", "size": 16, "max_seconds": 3},
        "splits": {"train": {"split": "train", "num_clips": 12}, "val": {"split": "val", "num_clips": 4}},
        "text_tokenizer": {"name": "sentencepiece", "model_path": assets["tok"], "id_offset": 32},
        "image_tokenizer": {"name": "vqvae", "path": assets["vq"]},
        "frame_rate_sampler": {"name": "lowest_fps"},
    })
    for key, value in changes.items():
        OmegaConf.update(cfg, key, value, merge=False, force_add=True)
    return cfg


def _run(cfg):
    regs = get_registries()
    task = regs.build("task", {"name": "prepare"})
    task.validate(cfg, regs)
    task.run(cfg, regs)


def test_shards_hold_the_right_tokens(tmp_path, assets):
    _run(_cfg(tmp_path, assets))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["manifest.json", "train-00000.safetensors", "train-00000.safetensors.done",
                     "train-00001.safetensors", "train-00001.safetensors.done", "train-00002.safetensors",
                     "train-00002.safetensors.done", "val-00000.safetensors", "val-00000.safetensors.done"]
    manifest = read_manifest(tmp_path)
    assert manifest["num_frames"] == 5 and manifest["grid"] == [4, 4] and manifest["text_len"] == 16
    assert manifest["image_vocab_size"] == 32 and manifest["splits"]["train"]["num_samples"] == 12
    raw = load_file(str(tmp_path / "train-00000.safetensors"))
    assert raw["text"].dtype == torch.int32 and raw["frames"].shape == (5, 5, 4, 4)

    tok = SentencePieceTokenizer(assets["tok"], id_offset=32)
    vq = VQVAE.load(assets["vq"])
    clips = MovingShapes(num_clips=12, size=16, max_seconds=3)
    data = ShardDataset(tmp_path, "train")
    assert len(data) == 12 and (data.text_len, data.num_frames, data.grid) == (16, 5, (4, 4))
    for i in (0, 7, 11):
        item, clip = data[i], clips[i]
        assert item["text"].dtype == torch.long and item["frames"].dtype == torch.long
        # Same choice as the task: the sampler's RNG is seeded by (seed, split, entry).
        choice = LowestFps()(clip.num_frames, clip.fps, random.Random(f"0:train:{i}"))
        assert float(item["fps"]) == choice.fps and int(item["index"]) == i
        assert tok.decode(item["text"][item["text_valid"]]) == f"{choice.prefix}<n> {clip.caption}"
        frames = torch.from_numpy(clip.frames[choice.frame_indices]).permute(0, 3, 1, 2).float() / 255
        # The task encodes many clips per call, the test one clip: convolutions and matmuls of
        # other sizes may sum in another order, so a near-tie code can flip on some CPUs. Real
        # mismatches (wrong frames, wrong order) agree on ~1/codebook of the tokens.
        agree = (item["frames"] == vq.encode(frames)).float().mean()
        assert float(agree) >= 0.95, float(agree)


def test_batches_and_loader(tmp_path, assets):
    _run(_cfg(tmp_path, assets))
    data = ShardDataset(tmp_path, "train")
    batches = list(data.batches(4, seed=1))
    assert [b["text"].shape for b in batches] == [(4, 16)] * 3
    assert batches[0]["frames"].shape == (4, 5, 4, 4) and batches[0]["text_valid"].dtype == torch.bool
    assert batches[0]["fps"].dtype == torch.float32
    order = lambda bs: torch.cat([b["index"] for b in bs]).tolist()  # noqa: E731
    assert sorted(order(batches)) == list(range(12))
    assert order(data.batches(4, seed=1)) == order(batches)
    assert order(data.batches(4, seed=2)) != order(batches)
    assert order(data.batches(4, seed=1, epoch=1)) != order(batches)
    assert order(data.batches(5, shuffle=False, drop_last=True)) == list(range(10))
    loader = shard_loader(tmp_path, "val", batch_size=3, seed=0)
    batch = next(iter(loader))
    assert set(batch) == {"text", "text_valid", "frames", "fps", "index"}
    assert batch["frames"].shape == (3, 5, 4, 4) and batch["frames"].dtype == torch.long
    with pytest.raises(DataError, match="no split 'test'"):
        ShardDataset(tmp_path, "test")
    with pytest.raises(DataError, match="prepare"):
        ShardDataset(tmp_path / "nowhere")


def test_rerun_reuses_finished_shards(tmp_path, assets, capsys):
    _run(_cfg(tmp_path, assets))
    stamps = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.safetensors")}
    capsys.readouterr()
    _run(_cfg(tmp_path, assets))
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.safetensors")} == stamps
    assert "reused 3 finished shard(s)" in capsys.readouterr().err
    (tmp_path / "train-00001.safetensors.done").unlink()  # as if the run died before the marker
    _run(_cfg(tmp_path, assets))
    changed = {n for n, t in stamps.items() if (tmp_path / n).stat().st_mtime_ns != t}
    assert changed == {"train-00001.safetensors"}


def test_crash_never_leaves_a_complete_looking_shard(tmp_path, assets, monkeypatch):
    real_save = shards_mod.save_file
    calls = {"n": 0}

    def crashing_save(tensors, filename, metadata=None):
        calls["n"] += 1
        if calls["n"] == 2:  # die half-way through writing the second shard
            with open(filename, "wb") as handle:
                handle.write(b"partial")
            raise KeyboardInterrupt("simulated kill")
        real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(shards_mod, "save_file", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        _run(_cfg(tmp_path, assets))
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {"train-00000.safetensors", "train-00000.safetensors.done"}
    monkeypatch.setattr(shards_mod, "save_file", real_save)

    # A hard kill (no cleanup) can leave a temp file, and a crash between rename and marker leaves
    # a shard without marker: neither may be taken as finished.
    (tmp_path / ".train-00001.safetensors.x1y2.tmp.safetensors").write_bytes(b"partial")
    (tmp_path / "train-00002.safetensors").write_bytes(b"not a finished shard")
    _run(_cfg(tmp_path, assets))
    assert not any(is_temp_file(p) for p in tmp_path.iterdir())
    fresh = tmp_path / "fresh"
    _run(_cfg(fresh, assets))
    for name in ("train-00000", "train-00001", "train-00002", "val-00000"):
        a, b = load_file(str(tmp_path / f"{name}.safetensors")), load_file(str(fresh / f"{name}.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_changed_settings_need_overwrite(tmp_path, assets):
    _run(_cfg(tmp_path, assets))
    with pytest.raises(DataError, match="different settings.*overwrite: true"):
        _run(_cfg(tmp_path, assets, seed=1))
    _run(_cfg(tmp_path, assets, seed=1, overwrite=True))
    assert len(ShardDataset(tmp_path, "train")) == 12


def test_text_ids_must_not_overlap_image_ids(tmp_path, assets):
    with pytest.raises(ConfigError, match="id_offset: 32"):
        _run(_cfg(tmp_path, assets, **{"text_tokenizer.id_offset": 0}))


def _write_100_clip_folder(root):
    """93 good gifs, 3 corrupt mp4s, 2 clips too short, 2 caption lines without a file."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(100):
        rel = f"clips/{i:03d}.gif"
        if i < 93:
            clip = MovingShapes(num_clips=i + 1, size=16, min_seconds=1, max_seconds=1.25)[i]
            write_video(root / rel, clip.frames[:6 + i % 4], fps=10)
        elif i < 96:
            rel = f"clips/{i:03d}.mp4"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
        elif i < 98:
            write_video(root / rel, np.zeros((3, 16, 16, 3), np.uint8), fps=10)
        lines.append({"video": rel, "caption": CAPTIONS[i % len(CAPTIONS)]})
    (root / "captions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_prepare_a_100_clip_video_folder_through_the_cli(tmp_path, assets, cli):
    folder = tmp_path / "videos"
    _write_100_clip_folder(folder)
    recipe = tmp_path / "prep.yaml"
    recipe.write_text(OmegaConf.to_yaml(_cfg(
        tmp_path / "shards", assets, description="test", shard_size=40,
        dataset={"name": "video_folder", "root": str(folder), "size": 8, "min_frames": 5},
        splits={"train": {"split": "all"}})))
    result = cli("run", recipe)
    assert result.code == 0, result.err
    assert "skipped 7 of 100 entries" in result.out
    assert "missing file (2): clips/098.gif" in result.out and "clips/099.gif" in result.out
    assert "too short (2): clips/096.gif (3 frames < min_frames 5)" in result.out
    assert "unreadable (3): clips/093.mp4" in result.out
    assert "prepare train" in result.err and "98/98" in result.err  # the tqdm progress bar
    data = ShardDataset(tmp_path / "shards", "train")
    assert len(data) == 93 and data.grid == (2, 2)
    assert {float(data[i]["fps"]) for i in range(0, 93, 10)} <= {8.0, 10.0}

    again = cli("run", recipe)  # finished shards are reused, the report is still complete
    assert again.code == 0 and "skipped 7 of 100 entries" in again.out and "reused 3" in again.err
