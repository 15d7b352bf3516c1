"""Small, fast fixtures for training tests: random token shards, a tiny tokenizer, recipes.

Random tokens are enough to test the machinery (resume, sharding, freezing); learning quality
is measured by the real tiny recipes in docs/training.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from cogframe.core.io.token_shards import MANIFEST_FILE, SHARD_FORMAT, SHARD_VERSION, shard_name, write_shard

CAPTIONS = [f"a {c} {s} moving {d}" for c in ("red", "green", "blue") for s in ("circle", "square")
            for d in ("left", "right", "up", "down")]

# A tiny model: fast on one CPU thread, still two layers so odd-layer shifts are exercised.
TINY = {"num_layers": 2, "hidden_size": 32, "num_heads": 2, "vocab_size": 256 + 128}


def make_tokenizer(root: Path) -> Path:
    from cogframe.plugins.tokenizer_sentencepiece import SentencePieceTokenizer

    lines = CAPTIONS + [f"{d:.1f}s" for d in (0.5, 1, 2, 4, 8, 16)]
    return SentencePieceTokenizer.train(lines, root / "sp", vocab_size=60)


def make_t2i_weights(root: Path, seed: int = 0) -> Path:
    """A random text-to-image model of the TINY size, saved as the video stages' inheritance source."""
    from safetensors.torch import save_file

    from cogframe.core.model.presets import build_model

    torch.manual_seed(seed)
    path = root / "t2i_random.safetensors"
    save_file(build_model("tiny_t2i", overrides=TINY).state_dict(), str(path))
    return path


def make_shards(root: Path, frames: int, grid=(8, 8), text_len=16, counts=None, seed=0,
                image_vocab=256, text_ids=(260, 300)) -> Path:
    """Write a shard folder of random samples in the prepare task's format."""
    counts = counts or {"train": 48, "val": 8}
    g = torch.Generator().manual_seed(seed)
    root.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, n in counts.items():
        text = torch.randint(*text_ids, (n, text_len), generator=g, dtype=torch.int64)
        valid = torch.ones(n, text_len, dtype=torch.bool)
        valid[:, : text_len // 4] = False
        tensors = {
            "text": text.to(torch.int32), "text_valid": valid,
            "frames": torch.randint(0, image_vocab, (n, frames, *grid), generator=g).to(torch.int32),
            "fps": torch.ones(n), "index": torch.arange(n),
        }
        name = shard_name(split, 0)
        write_shard(root / name, tensors, {}, {"num_samples": n})
        splits[split] = {"shards": [{"file": name, "num_samples": n}], "num_samples": n}
    manifest = {"format": SHARD_FORMAT, "version": SHARD_VERSION, "text_len": text_len,
                "num_frames": frames, "grid": list(grid), "image_vocab_size": image_vocab,
                "splits": splits}
    (root / MANIFEST_FILE).write_text(json.dumps(manifest))
    return root


def write_recipe(path: Path, preset: str, out: Path, shards: Path, tokenizer: Path, *,
                 init_from: Path | None = None, train: dict | None = None, extra: dict | None = None) -> Path:
    recipe = {
        "description": "test recipe",
        "task": "train",
        "output_dir": str(out),
        "model": {"preset": preset, "overrides": dict(TINY),
                  "attention": {"spatial": {"name": "sdpa"}, "temporal": {"name": "sdpa"}}},
        "text_tokenizer": {"name": "sentencepiece", "model_path": str(tokenizer), "id_offset": 256},
        "data": {"shards": str(shards)},
        "train": {"steps": 4, "batch_size": 4, "lr": 1e-3, "warmup_steps": 1, "progress": False,
                  "device": "cpu", **(train or {})},
        "loggers": [{"name": "jsonl", "path": str(out / "metrics.jsonl")}],
        "resume": False,
        "overwrite": False,
    }
    if init_from is not None:
        recipe["model"]["init"] = {"from": str(init_from), "freeze_inherited": True}
    recipe.update(extra or {})
    path.write_text(yaml.safe_dump(recipe))
    return path
