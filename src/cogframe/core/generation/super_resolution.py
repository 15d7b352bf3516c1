"""Direct super-resolution of video frames: every high-res token of a frame in one pass.

CogVideo's release ends its pipeline with CogView2's direct super-resolution (DSR): each frame's
20x20 token grid becomes 60x60 tokens in ONE non-autoregressive pass of the DSR model
(THUDM/CogView2 sr_pipeline/direct_sr.py, ``filling_sequence_dsr`` with ``warmup_steps=1``;
THUDM/CogVideo cogvideo_pipeline.py runs it on every frame). :func:`super_resolve` is that pass
for a batch of videos, frames batched together, with any token sampler of
:mod:`cogframe.core.generation.token_sampling`.

Each frame is super-resolved alone, so independent sampling noise per frame makes the same cell
of a still background come out differently from frame to frame (flicker). ``shared_noise`` keys
the uniforms by (video, cell) instead of (video, frame, cell): where two frames give a cell the
same distribution they get the same token. It costs nothing; docs/sampling.md has the measurement.

Optional iterative refinement (``refine_rounds``, off by default), in the spirit of CogView2's
iterative super-resolution (arXiv 2204.14217, section 3.3: local parallel re-prediction of
high-res tokens): after the first pass, each round puts the placeholder back on the least
confident ``refine_fraction`` of the cells of every ``refine_block`` x ``refine_block`` block,
feeds the other sampled tokens as inputs and re-samples those cells, all blocks in parallel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cogframe.core.generation.prompts import TextPrompt
from cogframe.core.generation.token_sampling import SlotNoise, TokenSampler
from cogframe.errors import ConfigError, ShapeError

__all__ = ["SuperResolutionOptions", "SuperResolutionResult", "refine_cells", "super_resolve"]

# Stream tag of the super-resolution draws, so they never reuse the uniforms of the key-frame or
# interpolation passes of the same seed (those use small stream numbers).
_STREAM_BASE = 0x5352 << 16
_ROUND_STRIDE = 1 << 12  # streams of refinement round r start at base + r * stride


@dataclass(frozen=True)
class SuperResolutionOptions:
    """How :func:`super_resolve` samples.

    Attributes:
        sampler: Token sampler of the high-res cells.
        seed: Sampling seed.
        shared_noise: The same uniforms for the same high-res cell in every frame of a video
            (less flicker); False: independent per frame.
        frame_batch: Frames per forward pass (None: every frame of the batch at once).
        refine_rounds: Rounds of iterative refinement after the first pass (0: off).
        refine_fraction: Share of each block's cells re-predicted per round, in (0, 1].
        refine_block: Side of the local blocks (in high-res cells) the least confident cells are
            chosen in.
        text_bias: Query->text attention bias of the base rows (0 in the release's DSR).
    """

    sampler: TokenSampler
    seed: int = 0
    shared_noise: bool = True
    frame_batch: int | None = None
    refine_rounds: int = 0
    refine_fraction: float = 0.25
    refine_block: int = 3
    text_bias: float = 0.0

    def __post_init__(self) -> None:
        if self.frame_batch is not None and self.frame_batch < 1:
            raise ConfigError(f"frame_batch must be >= 1 or None, got {self.frame_batch}")
        if self.refine_rounds < 0:
            raise ConfigError(f"refine_rounds must be >= 0, got {self.refine_rounds}")
        if not 0.0 < self.refine_fraction <= 1.0:
            raise ConfigError(f"refine_fraction must be in (0, 1], got {self.refine_fraction}")
        if self.refine_block < 1:
            raise ConfigError(f"refine_block must be >= 1, got {self.refine_block}")


@dataclass(frozen=True)
class SuperResolutionResult:
    """High-res token grids ``[B, T, H, W]`` and the forward passes run (per text branch)."""

    frames: torch.Tensor
    passes: int


def refine_cells(confidence: torch.Tensor, fraction: float, block: int) -> torch.Tensor:
    """The cells to re-predict: the least confident ``fraction`` of each ``block`` x ``block`` block.

    Args:
        confidence: ``[N, H, W]`` probability of each cell's sampled token.
        fraction: Share of each block's cells chosen (at least one per block).
        block: Block side; edge blocks may be smaller.

    Returns:
        ``bool [N, H, W]``, True where the cell is re-predicted.
    """
    n, height, width = confidence.shape
    bh, bw = -(-height // block), -(-width // block)
    pad = torch.full((n, bh * block, bw * block), float("inf"), dtype=confidence.dtype,
                     device=confidence.device)
    pad[:, :height, :width] = confidence
    cells = pad.view(n, bh, block, bw, block).permute(0, 1, 3, 2, 4).reshape(n, bh, bw, block * block)
    real = torch.isfinite(cells).sum(-1, keepdim=True)
    count = (real.double() * fraction).ceil().clamp(min=1).long()
    # Rank within the block (stable: ties go to the earlier cell), the lowest `count` are chosen.
    rank = cells.argsort(dim=-1, stable=True).argsort(dim=-1, stable=True)
    chosen = (rank < count) & torch.isfinite(cells)
    chosen = chosen.view(n, bh, bw, block, block).permute(0, 1, 3, 2, 4).reshape(n, bh * block, bw * block)
    return chosen[:, :height, :width]


@torch.no_grad()
def super_resolve(model, low: torch.Tensor, prompt: TextPrompt, *, placeholder_id: int,
                  options: SuperResolutionOptions) -> SuperResolutionResult:
    """Super-resolve every frame of a batch of videos with a DSR model.

    Args:
        model: A :class:`~cogframe.core.model.super_resolution.SuperResolutionTransformer` (eval).
        low: ``[B, T, h, w]`` low-res token grids (the layout's low-res grid).
        prompt: ``[B, text_len]`` text of each video (the raw caption: the release's DSR reads
            the prompt without a duration prefix); every frame of a video reads its video's.
        placeholder_id: The id every high-res input slot holds (the tokenizer's BOI).
        options: Sampler, seed, noise sharing, frame batching, refinement.

    Returns:
        ``[B, T, H, W]`` high-res grids (``H = scale * h``) and the passes run.

    Raises:
        ShapeError: ``low`` or the prompt does not fit the model's layout (names the dimension).
    """
    layout = model.config.layout
    if low.dim() != 4:
        raise ShapeError(f"low-res tokens must be [batch, frames, height, width], got {low.dim()} dims.")
    batch, frames = low.shape[:2]
    if prompt.ids.shape[0] != batch:
        raise ShapeError(f"the prompt has batch {prompt.ids.shape[0]} but the frames have batch {batch} "
                         "(dimension 0 must agree).")
    device = next(model.parameters()).device
    flat_low = low.reshape(batch * frames, *low.shape[2:]).to(device)
    layout.check_grid(flat_low, "low")
    video = torch.arange(batch).repeat_interleave(frames)          # video of each flat frame
    frame = torch.arange(frames).repeat(batch)
    text = prompt.ids.to(device)[video.to(device)]
    valid = None if prompt.valid is None else prompt.valid.to(device)[video.to(device)]
    noise = SlotNoise(options.seed)
    cells = layout.high_tokens
    slots = torch.arange(layout.high_start, layout.seq_len)
    size = options.frame_batch or batch * frames
    out = torch.empty(batch * frames, cells, dtype=torch.long)
    passes = 0
    for start in range(0, batch * frames, size):
        rows = slice(start, min(start + size, batch * frames))
        n = rows.stop - rows.start
        stream = video[rows] if options.shared_noise else video[rows] * frames + frame[rows]
        inputs, _ = layout.build_input(text[rows], flat_low[rows], placeholder_id)
        tokens, probs = _sample(model, inputs, valid if valid is None else valid[rows], options,
                                noise, stream, slots, torch.ones(n, cells, dtype=torch.bool))
        passes += 1
        for r in range(options.refine_rounds):
            redo = refine_cells(probs.view(n, layout.high_height, layout.high_width).float(),
                                options.refine_fraction, options.refine_block).reshape(n, cells)
            inputs = inputs.clone()
            high = torch.where(redo, torch.full_like(tokens, placeholder_id), tokens)
            inputs[:, layout.high_start:] = high.to(device)
            new, new_probs = _sample(model, inputs, valid if valid is None else valid[rows], options, noise,
                                     stream + (r + 1) * _ROUND_STRIDE, slots, redo)
            tokens = torch.where(redo, new, tokens)
            probs = torch.where(redo, new_probs, probs)
            passes += 1
        out[rows] = tokens
    grids = out.view(batch, frames, layout.high_height, layout.high_width)
    return SuperResolutionResult(grids, passes)


def _sample(model, inputs, valid, options: SuperResolutionOptions, noise: SlotNoise, stream: torch.Tensor,
            slots: torch.Tensor, which: torch.Tensor):
    """One DSR pass; samples the cells ``which`` (``[n, cells]`` bool). Returns tokens and their
    probabilities ``[n, cells]`` (zeros where not sampled)."""
    logits = model(inputs, text_valid=valid, text_bias=options.text_bias, high_only=True).float().cpu()
    n, cells, vocab = logits.shape
    rows, cols = which.nonzero(as_tuple=True)
    chosen = logits[rows, cols]
    keys = noise.rows(_STREAM_BASE + stream[rows].long(), slots[cols])
    picked = options.sampler(chosen, slots[cols], keys).long().cpu()
    tokens = torch.zeros(n, cells, dtype=torch.long)
    tokens[rows, cols] = picked
    probs = torch.zeros(n, cells, dtype=torch.float64)
    probs[rows, cols] = torch.softmax(chosen.double(), -1).gather(-1, picked[:, None]).squeeze(-1)
    return tokens, probs
