"""The small convolutional VQ-VAE network behind the ``vqvae`` image tokenizer.

Modelled on icetk's image tokenizer (CogView2, arXiv 2204.14217; the tokenizer of CogVideo,
arXiv 2205.15868), scaled down so that it trains on a CPU: a convolutional encoder of ResBlocks
with stride-2 downsampling (pad right/bottom + conv3x3 stride 2, as icetk), an EMA codebook with
dead-code restart (:class:`~cogframe.core.model.vector_quantizer.EMACodebook`), a straight-through
estimator and a commitment loss, and a mirrored decoder that upsamples with nearest-neighbour x2 +
conv3x3. ``downsample`` 4 maps 32x32 frames to 8x8 tokens; 8 maps 160x160 to 20x20 as CogVideo.

This module holds only the network (:class:`ConvVQVAE`: architecture checks, encode, decode,
the training forward). Reading and writing a trained model folder and registering it as the
``vqvae`` component is the plugin's job (``cogframe.plugins.vqvae``).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cogframe.core.model.vector_quantizer import EMACodebook
from cogframe.errors import ConfigError, ShapeError

__all__ = ["ARCH_KEYS", "DEFAULTS", "SUPPORTED_DOWNSAMPLE", "ConvVQVAE", "Decoder", "Downsample", "Encoder",
           "ENCODERS", "PatchEncoder", "ResBlock", "Upsample", "default_channel_mult"]

SUPPORTED_DOWNSAMPLE = (4, 8)
# Keys that fix tensor shapes: a checkpoint cannot be loaded into a model that disagrees on them.
ARCH_KEYS = ("downsample", "codebook_size", "code_dim", "channels", "channel_mult", "num_res_blocks", "encoder")
ENCODERS = ("conv", "patch")
DEFAULTS = {
    "encoder": "conv",  # a saved model without this key predates the patch encoder: it is "conv"
    "downsample": 4,
    "codebook_size": 256,
    "code_dim": 32,
    "channels": 32,
    "channel_mult": None,  # None: (1, 2, 4, 4, ...) as icetk, one entry per resolution level
    "num_res_blocks": 1,
    "commitment": 0.25,
    "decay": 0.99,
    "dead_code_threshold": 1.0,
}


def _groups(channels: int) -> int:
    # GroupNorm as icetk, but tiny models have few channels: keep >= 4 channels per group.
    return next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0 and (channels // g >= 4 or g == 1))


class ResBlock(nn.Module):
    """GN -> swish -> conv3x3 -> GN -> swish -> conv3x3, plus a (1x1-projected) shortcut."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_ch), in_ch, eps=1e-6)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(out_ch), out_ch, eps=1e-6)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.shortcut(x) + h


class Downsample(nn.Module):
    """Halves H and W: pad (0, 1, 0, 1) then conv3x3 stride 2 (icetk's asymmetric padding)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Doubles H and W: nearest-neighbour x2 then conv3x3 (no checkerboard artefacts)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def default_channel_mult(levels: int) -> tuple[int, ...]:
    """icetk's widths per resolution level, full resolution first: 1, 2, 4, then 4 (capped)."""
    return tuple(min(4, 2 ** i) for i in range(levels + 1))


class Encoder(nn.Module):
    """RGB in [-1, 1] ``[N, 3, H, W]`` -> features ``[N, code_dim, H/ds, W/ds]``.

    ``widths[i]`` is the channel count at resolution level ``i`` (level 0 = full resolution).
    """

    def __init__(self, widths: list[int], num_res_blocks: int, code_dim: int) -> None:
        super().__init__()
        levels = len(widths) - 1
        layers: list[nn.Module] = [nn.Conv2d(3, widths[0], 3, padding=1)]
        current = widths[0]
        for level, width in enumerate(widths):
            for _ in range(num_res_blocks):
                layers.append(ResBlock(current, width))
                current = width
            if level < levels:
                layers.append(Downsample(current))
        layers += [ResBlock(current, current), nn.GroupNorm(_groups(current), current, eps=1e-6), nn.SiLU(),
                   nn.Conv2d(current, code_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PatchEncoder(nn.Module):
    """RGB ``[N, 3, H, W]`` -> features ``[N, code_dim, H/ds, W/ds]``, each from its own ds x ds patch only.

    Why: the convolutional :class:`Encoder` sees ~20 px around a patch and normalises over the whole
    frame (GroupNorm), so a token's code depends on where the object is elsewhere in the frame
    (measured on the tiny domain: an all-black frame encodes to 31 different codes; background
    patches use 221 codes with 5.1 nats of entropy). Then "the object moved one token left" is not
    a local change of the token grid, and a transformer must model that noise. A patchify conv plus
    per-token 1x1 layers makes every code a function of its own patch: black is one code, and a
    moving object changes only the tokens it crosses. The decoder keeps its context (it can
    smooth seams without changing what the tokens mean).
    """

    def __init__(self, downsample: int, width: int, code_dim: int, depth: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, width, downsample, stride=downsample)]
        for _ in range(depth - 1):
            layers += [nn.SiLU(), nn.Conv2d(width, width, 1)]
        layers += [nn.SiLU(), nn.Conv2d(width, code_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """Code vectors ``[N, code_dim, h, w]`` -> RGB in about [-1, 1] ``[N, 3, h*ds, w*ds]`` (mirrors Encoder)."""

    def __init__(self, widths: list[int], num_res_blocks: int, code_dim: int) -> None:
        super().__init__()
        levels = len(widths) - 1
        widths = widths[::-1]
        current = widths[0]
        layers: list[nn.Module] = [nn.Conv2d(code_dim, current, 3, padding=1), ResBlock(current, current)]
        for level, width in enumerate(widths):
            for _ in range(num_res_blocks):
                layers.append(ResBlock(current, width))
                current = width
            if level < levels:
                layers.append(Upsample(current))
        layers += [nn.GroupNorm(_groups(current), current, eps=1e-6), nn.SiLU(), nn.Conv2d(current, 3, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class ConvVQVAE(nn.Module):
    """VQ-VAE network: ``[N, 3, H, W]`` frames in [0, 1] <-> ``[N, H/ds, W/ds]`` code grids.

    Submodules ``encoder``, ``quantizer`` (:class:`EMACodebook`) and ``decoder``; their state-dict
    names are the on-disk format of a saved ``vqvae`` model.

    Args:
        downsample: Spatial reduction, 4 or 8.
        codebook_size: Number of codes (image vocabulary size).
        code_dim: Dimension of each code vector.
        channels: Base width; level ``i`` has ``channels * channel_mult[i]`` channels.
        channel_mult: Width multipliers per resolution level, full resolution first
            (``log2(downsample) + 1`` entries); default ``[1, 2, 4]`` / ``[1, 2, 4, 4]`` as icetk.
        num_res_blocks: ResBlocks per resolution level.
        encoder: ``conv`` (icetk-style, contextual) or ``patch`` (every code from its own patch:
            :class:`PatchEncoder`); the decoder is the same for both.
        commitment: Weight of the commitment loss in ``stats["loss"]``.
        decay: EMA decay of the codebook.
        dead_code_threshold: EMA usage below which a code is restarted from the data.

    Attributes:
        config: The resolved architecture and training settings (``channel_mult`` filled in),
            JSON-serialisable; what a saved model's ``config.json`` records.

    Raises:
        ConfigError: Unsupported ``downsample``, a non-positive size, or a ``channel_mult`` of the
            wrong length.
    """

    def __init__(self, downsample: int = 4, codebook_size: int = 256, code_dim: int = 32, channels: int = 32,
                 channel_mult: Sequence[int] | None = None, num_res_blocks: int = 1, commitment: float = 0.25,
                 decay: float = 0.99, dead_code_threshold: float = 1.0, encoder: str = "conv") -> None:
        super().__init__()
        if encoder not in ENCODERS:
            raise ConfigError(f"vqvae encoder must be one of {', '.join(ENCODERS)}, got {encoder!r}; 'patch' "
                              "codes every token from its own patch only (see PatchEncoder).")
        config = {"encoder": encoder, "downsample": downsample, "codebook_size": codebook_size, "code_dim": code_dim,
                  "channels": channels, "channel_mult": channel_mult, "num_res_blocks": num_res_blocks,
                  "commitment": commitment, "decay": decay, "dead_code_threshold": dead_code_threshold}
        if int(config["downsample"]) not in SUPPORTED_DOWNSAMPLE:
            raise ConfigError(f"vqvae downsample must be 4 or 8, got {config['downsample']}; use 4 for 32x32 "
                              "frames -> 8x8 tokens or 8 for 160x160 -> 20x20 (CogVideo).")
        for key in ("codebook_size", "code_dim", "channels", "num_res_blocks"):
            if int(config[key]) < 1:
                raise ConfigError(f"vqvae {key} must be a positive integer, got {config[key]}.")
        levels = int(math.log2(int(config["downsample"])))
        mult = list(config["channel_mult"] or default_channel_mult(levels))
        if len(mult) != levels + 1 or min(mult) < 1:
            raise ConfigError(f"vqvae channel_mult must have {levels + 1} positive entries for downsample "
                              f"{config['downsample']} (one per resolution level), got {mult}.")
        config["channel_mult"] = [int(m) for m in mult]
        self.config = {k: (v if k in ("channel_mult", "encoder") else int(v) if k in ARCH_KEYS else float(v))
                       for k, v in config.items()}
        widths = [self.config["channels"] * m for m in self.config["channel_mult"]]
        arch = (widths, self.config["num_res_blocks"], self.config["code_dim"])
        # Construction order (encoder, quantizer, decoder) fixes which random numbers each part
        # draws: keep it, or a seeded model changes.
        self.encoder = (Encoder(*arch) if encoder == "conv"
                        else PatchEncoder(self.config["downsample"], max(widths), self.config["code_dim"]))
        self.quantizer = EMACodebook(self.config["codebook_size"], self.config["code_dim"],
                                     decay=self.config["decay"],
                                     dead_code_threshold=self.config["dead_code_threshold"])
        self.decoder = Decoder(*arch)

    @property
    def codebook_size(self) -> int:
        """Number of codes; image token ids are ``0 .. codebook_size - 1``."""
        return self.config["codebook_size"]

    @property
    def downsample(self) -> int:
        """Pixels per token along each side."""
        return self.config["downsample"]

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """Token grid ``(h, w)`` for ``height x width`` frames.

        Raises:
            ShapeError: A side is not divisible by ``downsample``.
        """
        for name, size in (("height", height), ("width", width)):
            if size % self.downsample or size <= 0:
                raise ShapeError(
                    f"frame {name} {size} is not divisible by the VQ-VAE downsample factor {self.downsample}; "
                    f"resize frames to a multiple of {self.downsample} (dataset size: "
                    f"{max(self.downsample, size // self.downsample * self.downsample)}).")
        return height // self.downsample, width // self.downsample

    def _prepare(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ShapeError(f"VQ-VAE expects frames shaped [N, 3, H, W], got {list(frames.shape)}; "
                             "convert [N, H, W, 3] arrays with .permute(0, 3, 1, 2).")
        self.grid_size(frames.shape[2], frames.shape[3])
        param = next(self.parameters())
        if frames.dtype == torch.uint8:
            frames = frames.float() / 255.0
        return frames.to(device=param.device, dtype=param.dtype) * 2.0 - 1.0

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Reconstructs frames through the quantiser (updating the codebook in training mode).

        Args:
            frames: ``[N, 3, H, W]`` in [0, 1].

        Returns:
            ``(recon, stats)``: ``recon`` ``[N, 3, H, W]`` (unclamped, ~[0, 1]); ``stats`` holds
            ``recon`` (MSE to the input), ``commit`` (commitment MSE), ``perplexity`` (codebook usage)
            and ``loss`` = recon + commitment * commit.
        """
        x = self._prepare(frames)
        z_q, _, stats = self.quantizer(self.encoder(x))
        recon = (self.decoder(z_q) + 1.0) / 2.0
        target = (x + 1.0) / 2.0
        recon_loss = F.mse_loss(recon, target)
        loss = recon_loss + self.config["commitment"] * stats["commit"]
        return recon, {"recon": recon_loss, "commit": stats["commit"], "perplexity": stats["perplexity"],
                       "loss": loss}

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames ``[N, 3, H, W]`` float in [0, 1] (or uint8) -> codes ``[N, H/ds, W/ds]`` long.

        Never updates the codebook, whatever the module's mode.
        """
        return self.quantizer.codes(self.encoder(self._prepare(frames)))

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Codes ``[N, h, w]`` long -> frames ``[N, 3, h*ds, w*ds]`` float clamped to [0, 1]."""
        if tokens.ndim != 3:
            raise ShapeError(f"VQ-VAE decode expects token grids shaped [N, h, w], got {list(tokens.shape)}.")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.codebook_size):
            raise ShapeError(f"image token ids must be in [0, {self.codebook_size}), got "
                             f"[{int(tokens.min())}, {int(tokens.max())}]; subtract the text-id offset first.")
        tokens = tokens.to(self.quantizer.embed.device).long()
        return ((self.decoder(self.quantizer.lookup(tokens)) + 1.0) / 2.0).clamp(0.0, 1.0)
