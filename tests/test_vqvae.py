"""VQ-VAE image tokenizer: shapes, straight-through gradients, EMA dead-code restart, save/load."""

from __future__ import annotations

import pytest
import torch

from cogframe.core.io.atomic import is_temp_file
from cogframe.core.model.vector_quantizer import EMACodebook
from cogframe.errors import ConfigError, DataError, ShapeError
from cogframe.plugins import get_registries
from cogframe.plugins.vqvae import VQVAE

TINY = {"codebook_size": 32, "code_dim": 8, "channels": 8}


@pytest.mark.parametrize("downsample,size", [(4, 32), (8, 32), (4, 16)])
def test_encode_decode_shapes(downsample, size):
    torch.manual_seed(0)
    model = VQVAE(downsample=downsample, **TINY).eval()
    frames = torch.rand(3, 3, size, size)
    codes = model.encode(frames)
    assert codes.shape == (3, size // downsample, size // downsample) and codes.dtype == torch.long
    assert 0 <= int(codes.min()) and int(codes.max()) < 32
    recon = model.decode(codes)
    assert recon.shape == frames.shape and 0.0 <= float(recon.min()) and float(recon.max()) <= 1.0
    assert torch.equal(model.encode((frames * 255).round().to(torch.uint8)),
                       model.encode((frames * 255).round() / 255))


def test_forward_returns_losses():
    model = VQVAE(**TINY)
    recon, stats = model(torch.rand(2, 3, 16, 16))
    assert recon.shape == (2, 3, 16, 16)
    assert {"recon", "commit", "perplexity", "loss"} <= set(stats)
    assert 1.0 <= float(stats["perplexity"]) <= 32


def test_straight_through_gradient_reaches_the_encoder():
    torch.manual_seed(0)
    model = VQVAE(**TINY)
    _, stats = model(torch.rand(2, 3, 16, 16))
    stats["recon"].backward()  # reconstruction loss only: its path to the encoder is the straight-through one
    first_conv = model.encoder.net[0].weight
    assert first_conv.grad is not None and float(first_conv.grad.abs().sum()) > 0
    assert model.quantizer.embed.grad is None  # the codebook is updated by EMA, not gradients


def test_encode_does_not_touch_the_codebook():
    model = VQVAE(**TINY).train()
    before = model.quantizer.embed.clone()
    model.encode(torch.rand(2, 3, 16, 16))
    assert torch.equal(before, model.quantizer.embed)


def _clustered_data(n: int = 512, dim: int = 4) -> torch.Tensor:
    centres = torch.randn(16, dim) * 3
    return (centres[torch.arange(n) % 16] + 0.1 * torch.randn(n, dim)).T.reshape(1, dim, n, 1)


@pytest.mark.parametrize("threshold", [1.0, 0.0])
def test_dead_code_restart_revives_unused_codes(threshold):
    torch.manual_seed(0)
    q = EMACodebook(codebook_size=16, code_dim=4, dead_code_threshold=threshold)
    data = _clustered_data()
    # Half the codebook sits on the data; half is parked far away where no input maps any more
    # (their EMA usage of 1.5 decays below the threshold of 1 after ~40 steps).
    with torch.no_grad():
        q.embed[:8] = data[0, :, :8, 0].T
        q.embed[8:] = 1000.0
        q.cluster_size[:8] = 32.0
        q.cluster_size[8:] = 1.5
        q.embed_avg.copy_(q.embed * q.cluster_size[:, None])
    assert set(q.codes(data).unique().tolist()) <= set(range(8))
    q.train()
    for _ in range(60):
        q(data)
    used = set(q.codes(data).unique().tolist())
    far_used = used & set(range(8, 16))
    if threshold:
        assert len(far_used) >= 6 and int(q.restarts) > 0, "dead codes must be restarted onto the data"
        assert float(q.embed.abs().max()) < 100
    else:
        assert not far_used and int(q.restarts) == 0  # control: without restarts they stay dead


def test_codebook_initialises_from_data_on_first_step():
    torch.manual_seed(0)
    q = EMACodebook(codebook_size=16, code_dim=4).train()
    data = _clustered_data() + 50.0  # far from the N(0, 1) initial codebook
    q(data)
    assert float((q.embed - 50).abs().max()) < 20


def test_bad_settings():
    with pytest.raises(ConfigError, match="downsample must be 4 or 8"):
        VQVAE(downsample=2)
    model = VQVAE(**TINY)
    with pytest.raises(ShapeError, match="width 30 is not divisible by .* 4"):
        model.encode(torch.rand(1, 3, 32, 30))
    with pytest.raises(ShapeError, match=r"\[N, 3, H, W\]"):
        model.encode(torch.rand(1, 32, 32, 3))
    with pytest.raises(ShapeError, match="image token ids"):
        model.decode(torch.full((1, 2, 2), 40))


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = VQVAE(**TINY)
    model.train()
    model(torch.rand(4, 3, 16, 16))  # move the EMA buffers away from their initial values
    model.save(tmp_path / "vq")
    assert sorted(p.name for p in (tmp_path / "vq").iterdir()) == ["config.json", "model.safetensors"]
    assert not any(is_temp_file(p) for p in (tmp_path / "vq").iterdir())
    loaded = VQVAE.load(tmp_path / "vq")
    assert not loaded.training
    frames = torch.rand(2, 3, 16, 16)
    model.eval()
    assert torch.equal(model.encode(frames), loaded.encode(frames))
    assert torch.equal(model.quantizer.cluster_size, loaded.quantizer.cluster_size)
    built = get_registries().build("image_tokenizer", {"name": "vqvae", "path": str(tmp_path / "vq"),
                                                       "codebook_size": 32})
    assert built.codebook_size == 32 and built.downsample == 4
    with pytest.raises(ConfigError, match="codebook_size=64 \\(checkpoint: 32\\)"):
        VQVAE(path=str(tmp_path / "vq"), codebook_size=64)
    with pytest.raises(DataError, match="no trained VQ-VAE"):
        VQVAE(path=str(tmp_path / "missing"))
    (tmp_path / "vq" / "model.safetensors").write_bytes(b"truncated")
    with pytest.raises(DataError, match="corrupt"):
        VQVAE.load(tmp_path / "vq")


def test_train_task_smoke(tmp_path):
    from omegaconf import OmegaConf

    regs = get_registries()
    cfg = OmegaConf.create({
        "task": "train_vqvae", "output_dir": str(tmp_path), "seed": 0,
        "dataset": {"name": "moving_shapes", "size": 16, "max_seconds": 2},
        "splits": {"train": {"split": "train", "num_clips": 4}, "val": {"split": "val", "num_clips": 2}},
        "image_tokenizer": {"name": "vqvae", **TINY},
        "train": {"steps": 3, "batch_size": 4, "log_every": 1},
        "loggers": [{"name": "jsonl", "path": str(tmp_path / "log.jsonl")}],
    })
    from cogframe.config.validation import validate_recipe

    task = regs.build("task", {"name": "train_vqvae"})
    validate_recipe(cfg, regs, task=task)
    task.run(cfg, regs)
    metrics = __import__("json").loads((tmp_path / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["val_psnr"] > 0 and metrics["train_seconds"] > 0
    assert VQVAE.load(tmp_path / "model").codebook_size == 32
    assert (tmp_path / "val_recon.png").is_file() and len((tmp_path / "log.jsonl").read_text().splitlines()) == 4


def test_patch_encoder_codes_each_token_from_its_own_patch_only():
    """encoder=patch: a token's code depends only on its patch (black is one code wherever the object is)."""
    import torch

    from cogframe.plugins.vqvae import VQVAE

    torch.manual_seed(0)
    local = VQVAE(encoder="patch", channels=8, channel_mult=[1, 2, 2], codebook_size=64)
    contextual = VQVAE(encoder="conv", channels=8, channel_mult=[1, 2, 2], codebook_size=64)
    frames = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    frames[0, 0, 4:12, 4:12] = 255     # a red square top-left ...
    frames[1, 1, 20:28, 20:28] = 255   # ... or a green one bottom-right
    black = torch.ones(8, 8, dtype=torch.bool)
    black[1:3, 1:3] = False
    black[5:7, 5:7] = False            # patches black in both frames
    codes = local.encode(frames)
    assert torch.equal(codes[0][black], codes[1][black])
    assert codes[0][black].unique().numel() == 1
    assert local.config["encoder"] == "patch"
    # The contextual encoder has no such guarantee; at least it must still run on the same input.
    assert contextual.encode(frames).shape == codes.shape
    with pytest.raises(ConfigError, match="encoder must be one of"):
        VQVAE(encoder="unet")
