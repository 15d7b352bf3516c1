"""Tiny stand-ins for the shipped sampling assets (random 2-layer models, untrained VQ-VAE).

``make_assets(root)`` writes the files the ``tiny/sample`` recipe reads through ``${asset:...}``
under ``root/tiny/``; point ``COGFRAME_ASSETS`` at ``root`` and add :data:`SMALL` to the overrides.
Random weights are enough to test the machinery; the quality of the real models is measured by
``cogframe eval``.
"""

from __future__ import annotations

from pathlib import Path

import torch

COLOURS = ("red", "green", "blue", "yellow", "magenta", "cyan", "white")
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = ("left", "right", "up", "down")
CAPTIONS = [f"a {c} {s} moving {d}" for c in COLOURS for s in SHAPES for d in DIRECTIONS]
PREFIXES = [f"{4 / r:.1f}s" for r in (0.25, 0.5, 1, 2, 4, 8)]

_MODEL = "{num_layers: 2, hidden_size: 32, num_heads: 2}"
# Overrides that make tiny/sample build the small models make_assets saved.
SMALL = [f"+stage1.model.overrides={_MODEL}", f"+stage2.model.overrides={_MODEL}", "display_scale=1"]


def make_assets(root: Path) -> Path:
    """Write text_tokenizer.model, vqvae/, stage1.safetensors, stage2.safetensors and sr.safetensors
    (a random ``tiny_dsr`` model, the super-resolution stage of tiny/sample_sr and so of
    ``cogframe demo``) under root/tiny."""
    from cogframe.core.training.checkpoint import save_model_weights
    from cogframe.core.model.presets import build_model
    from cogframe.plugins.tokenizer_sentencepiece import SentencePieceTokenizer
    from cogframe.plugins.vqvae import VQVAE

    tiny = root / "tiny"
    tiny.mkdir(parents=True, exist_ok=True)
    model = SentencePieceTokenizer.train(CAPTIONS + PREFIXES * 20, tiny / "sp", vocab_size=120)
    model.rename(tiny / "text_tokenizer.model")
    torch.manual_seed(0)
    VQVAE(downsample=4, codebook_size=256, code_dim=8, channels=8, channel_mult=[1, 1, 1]).save(tiny / "vqvae")
    small = {"num_layers": 2, "hidden_size": 32, "num_heads": 2}
    for i, stage in enumerate(("stage1", "stage2")):
        torch.manual_seed(i + 1)
        save_model_weights(tiny / f"{stage}.safetensors", build_model(f"tiny_{stage}", overrides=small).state_dict())
    from cogframe.core.model.super_resolution import build_super_resolution_model

    torch.manual_seed(3)
    save_model_weights(tiny / "sr.safetensors", build_super_resolution_model("tiny_dsr").state_dict())
    return root
