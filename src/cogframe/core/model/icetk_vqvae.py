"""The network of icetk's hierarchical VQ-VAE, the image tokenizer of CogView2 and CogVideo.

icetk (https://github.com/THUDM/icetk) is the tokenizer of CogView2 (arXiv 2204.14217) and CogVideo
(arXiv 2205.15868). :class:`HVQVAE` is its three-level network; the ``icetk`` image-tokenizer
component (``cogframe.plugins.icetk``) adds frame normalisation and reads ``ice_image.pt`` into it.

Module and attribute names follow icetk's ``vqvae/enc_dec.py``, ``quantize.py`` and
``vqvae_hierarchical.py`` so that ``ice_image.pt`` loads by name:

* ``enc.conv_in``, ``enc.down.{level}.block.{j}.{norm1,conv1,norm2,conv2,nin_shortcut}``,
  ``enc.down.{0,1}.downsample.conv``, ``enc.mid.{block_1,attn_1,block_2}``, ``enc.norm_out``,
  ``enc.conv_out``;
* ``decs.{k}.conv_in``, ``decs.{k}.mid.*``, ``decs.{k}.up.{level}.block.0``,
  ``decs.0.up.4.attn.0``, ``decs.{k}.up.{level>0}.upsample.conv``, ``decs.{k}.norm_out``,
  ``decs.{k}.conv_out``;
* ``quantize.proj``, ``quantize.embed.weight`` (an ``nn.Embedding``), ``quantize.cluster_size``,
  ``quantize.embed_avg``: the :class:`IcetkCodebook` (icetk's class is ``VectorQuantizeEMA``;
  only the state-dict path ``quantize.`` has to match, so the class is named for what it is);
* ``down_samplers.{0,1}.conv_down_sampler.conv`` (the average-pooling half has no weights);
* attention blocks: ``norm``, ``q``, ``k``, ``v``, ``proj_out`` (1x1 convolutions).

The top-level prefixes are those of the released checkpoint; the names below them come from
icetk's module structure and are not checked against the real file (it was not available); the
``icetk`` component reports any missing or unexpected key when loading.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["HVQVAE", "Encoder", "Decoder", "IcetkCodebook", "ResidualDownSample"]

ENCODER_MULT = (1, 2, 4)
DECODER_MULTS = ((1, 1, 1, 2, 4), (1, 1, 2, 4), (1, 2, 4))  # decs[0] x16, decs[1] x8, decs[2] x4
ENCODER_RES_BLOCKS = 2


def normalize(channels: int) -> nn.GroupNorm:
    """icetk's ``Normalize``: GroupNorm with 32 groups, eps 1e-6."""
    return nn.GroupNorm(32, channels, eps=1e-6, affine=True)


def swish(x: torch.Tensor) -> torch.Tensor:
    """``x * sigmoid(x)``."""
    return F.silu(x)


class ResnetBlock(nn.Module):
    """GN -> swish -> conv3x3 -> GN -> swish -> dropout -> conv3x3, plus the (1x1) shortcut."""

    def __init__(self, in_channels: int, out_channels: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.norm1 = normalize(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = normalize(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(self.dropout(swish(self.norm2(h))))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions of a feature map (1x1-conv projections)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = normalize(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        u = self.norm(x)
        q, k, v = (conv(u).reshape(b, 1, c, h * w).transpose(-1, -2) for conv in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(c)) v, as icetk
        return x + self.proj_out(out.transpose(-1, -2).reshape(b, c, h, w))


class DownSample(nn.Module):
    """Halve H and W: pad (0, 1, 0, 1) + conv3x3 stride 2, or (without conv) 2x2 average pooling."""

    def __init__(self, channels: int, with_conv: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2) if with_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is None:
            return F.avg_pool2d(x, kernel_size=2, stride=2)
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Double H and W: nearest x2 then conv3x3."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class ResidualDownSample(nn.Module):
    """One extra level: average pooling + strided conv, summed (``compress_rate`` 8 and 16)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pooling_down_sampler = DownSample(channels, with_conv=False)
        self.conv_down_sampler = DownSample(channels, with_conv=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pooling_down_sampler(x) + self.conv_down_sampler(x)


class _Level(nn.Module):
    """One resolution of an encoder/decoder: ``block`` (ResBlocks), ``attn``, optional resampler."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()


class _Mid(nn.Module):
    """ResBlock, attention, ResBlock at the lowest resolution."""

    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    """RGB (normalised) -> ``[N, z_channels, H/4, W/4]``; shared by every level."""

    def __init__(self, channels: int = 128, z_channels: int = 256, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(3, channels, 3, padding=1)
        self.down = nn.ModuleList()
        block_in = channels
        for level, mult in enumerate(ENCODER_MULT):
            stage = _Level()
            for _ in range(ENCODER_RES_BLOCKS):
                stage.block.append(ResnetBlock(block_in, channels * mult, dropout))
                block_in = channels * mult
            if level != len(ENCODER_MULT) - 1:
                stage.downsample = DownSample(block_in, with_conv=True)
            self.down.append(stage)
        self.mid = _Mid(block_in, dropout)
        self.norm_out = normalize(block_in)
        self.conv_out = nn.Conv2d(block_in, z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for stage in self.down:
            for block in stage.block:
                h = block(h)
            if hasattr(stage, "downsample"):
                h = stage.downsample(h)
        return self.conv_out(swish(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    """Code vectors ``[N, z, h, w]`` -> RGB (normalised) ``[N, 3, h*2^(L-1), w*2^(L-1)]``.

    Args:
        channels_mult: Width multipliers per level (level 0 = full resolution).
        attn_at_lowest: Attention after the lowest level's block (icetk's ``decs[0]``, whose lowest
            level sits at resolution 16 of icetk's nominal 256, its ``attn_resolutions``).
    """

    def __init__(self, channels_mult: tuple[int, ...], channels: int = 128, z_channels: int = 256,
                 attn_at_lowest: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        block_in = channels * channels_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, padding=1)
        self.mid = _Mid(block_in, dropout)
        levels: list[_Level] = []
        for level in reversed(range(len(channels_mult))):
            stage = _Level()
            stage.block.append(ResnetBlock(block_in, channels * channels_mult[level], dropout))
            block_in = channels * channels_mult[level]
            if attn_at_lowest and level == len(channels_mult) - 1:
                stage.attn.append(AttnBlock(block_in))
            if level != 0:
                stage.upsample = Upsample(block_in)
            levels.insert(0, stage)
        self.up = nn.ModuleList(levels)  # up[level], level 0 = full resolution (icetk's order)
        self.norm_out = normalize(block_in)
        self.conv_out = nn.Conv2d(block_in, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(range(len(self.up))):
            stage = self.up[level]
            for i, block in enumerate(stage.block):
                h = block(h)
                if len(stage.attn):
                    h = stage.attn[i](h)
            if level != 0:
                h = stage.upsample(h)
        return self.conv_out(swish(self.norm_out(h)))


class IcetkCodebook(nn.Module):
    """icetk's codebook, frozen: 1x1 pre-projection, then the nearest codebook row (L2).

    Unlike :class:`~cogframe.core.model.vector_quantizer.EMACodebook`, it never trains: it exists
    to encode with the released codebook (icetk's checkpoint calls this module ``quantize``, its
    class ``VectorQuantizeEMA``).

    The EMA statistics ``cluster_size`` and ``embed_avg`` are kept as buffers so checkpoints load
    by name; encoding never updates them (neither does icetk's forward).
    """

    def __init__(self, hidden_dim: int = 256, embedding_dim: int = 256, n_embed: int = 20000) -> None:
        super().__init__()
        self.proj = nn.Conv2d(hidden_dim, embedding_dim, 1)
        self.embed = nn.Embedding(n_embed, embedding_dim)
        nn.init.uniform_(self.embed.weight, -1.0 / n_embed, 1.0 / n_embed)
        self.register_buffer("cluster_size", torch.zeros(n_embed))
        self.register_buffer("embed_avg", self.embed.weight.detach().clone())

    @property
    def n_embed(self) -> int:
        """Codebook size."""
        return self.embed.num_embeddings

    def codes(self, z: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
        """Encoder output ``[N, hidden, h, w]`` -> nearest code ids ``[N, h, w]``."""
        z_e = self.proj(z).permute(0, 2, 3, 1)
        flat = z_e.reshape(-1, z_e.shape[-1]).float()
        embed = self.embed.weight.float()
        sq = embed.pow(2).sum(1)
        # ||z||^2 is the same for every code, so argmin ||z - e||^2 = argmin(||e||^2 - 2 z.e).
        # Chunked: 20000 codes x all positions of a batch would need gigabytes at once.
        ids = torch.cat([(sq[None, :] - 2 * part @ embed.t()).argmin(1) for part in flat.split(chunk)])
        return ids.view(z_e.shape[:3])

    def embed_code(self, ids: torch.Tensor) -> torch.Tensor:
        """Code ids ``[N, h, w]`` -> code vectors ``[N, h, w, D]``."""
        return F.embedding(ids, self.embed.weight)


class HVQVAE(nn.Module):
    """icetk's three-level VQ-VAE: one encoder, two residual down-samplers, one shared codebook,
    three decoders (``decs[2 - l]`` decodes level ``l``)."""

    def __init__(self, channels: int = 128, z_channels: int = 256, codebook_size: int = 20000) -> None:
        super().__init__()
        self.enc = Encoder(channels, z_channels)
        self.decs = nn.ModuleList(
            Decoder(mult, channels, z_channels, attn_at_lowest=(k == 0)) for k, mult in enumerate(DECODER_MULTS))
        self.quantize = IcetkCodebook(z_channels, z_channels, codebook_size)
        self.down_samplers = nn.ModuleList(ResidualDownSample(z_channels) for _ in range(len(DECODER_MULTS) - 1))

    def single_encode_codes(self, x: torch.Tensor, level: int) -> torch.Tensor:
        """Normalised images -> code ids at ``level`` (0: /4, 1: /8, 2: /16)."""
        h = self.enc(x)
        for i in range(level):
            h = self.down_samplers[i](h)
        return self.quantize.codes(h)

    def single_decode_code(self, ids: torch.Tensor, level: int) -> torch.Tensor:
        """Code ids at ``level`` -> normalised images."""
        quant = self.quantize.embed_code(ids).permute(0, 3, 1, 2)
        return self.decs[len(self.decs) - 1 - level](quant)
