"""The KV-cached frame decoder shared by both stages (spec §2.2, §2.3, §7).

One decoding run fills some frames of a layout given others:

1. **Prefix pass.** The text slots and every given frame are fed in one forward (stage 2's
   given frames see each other bidirectionally, so they must arrive together).
2. **Generation passes.** Each pass feeds a set of slots (one slot for sequential decoding, a
   wave for parallel decoding, see :mod:`cogframe.core.waves`) as a batch of queries against
   the cache, and samples the token of every slot it fed. The token sampled at slot ``(t, j)``
   is written as the input of slot ``(t, j + 1)``; slot ``(t, 0)`` holds BOI (spec §1.6).

Cache layout: one :class:`~cogframe.core.model.KVCache` per text branch (the prompt, plus the
negative prompt under guidance). The temporal channel keeps text and every frame slot fed so
far; the spatial channel keeps text and the frames that still have slots to feed (it only ever
looks at the query's own frame), trimmed with ``retain_spatial_frames`` whenever a frame ends.

Exactness: every pass feeds a set of slots closed under the cache dependencies, so each query
attends to exactly the keys of the full forward, with the same values. Logits then agree with
the full forward up to floating-point summation order (BLAS blocking differs with the number of
queries in a pass), and the sampled tokens agree bit for bit: samplers are row-wise and draw
their randomness from (seed, stream, slot), see :mod:`cogframe.core.token_sampling`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import torch

from cogframe.core.guidance import check_guidance, combine_guidance
from cogframe.core.layout import TokenLayout
from cogframe.core.prompts import TextPrompt
from cogframe.core.token_sampling import SlotNoise, TokenSampler
from cogframe.core.waves import WaveSchedule, model_layer_masks, sequential_schedule, wave_schedule
from cogframe.errors import ConfigError, ShapeError

__all__ = ["DecodeOptions", "DecodeResult", "decode_frames", "plan_schedule"]


@dataclass(frozen=True)
class DecodeOptions:
    """How one decoding run samples.

    Args:
        sampler: Token sampler (kind ``token_sampler``).
        seed: Seed of the position-keyed randomness.
        guidance: Classifier-free guidance scale ``g`` (1: off).
        negative: Prompt of the guidance branch (needed when ``guidance != 1``).
        text_bias: Constant added to query->text attention logits (CogVideo: 1.4 without
            guidance, 0 with it).
        parallel: Decode in parallel waves (exact; fewer forward passes with windowed masks).
    """

    sampler: TokenSampler
    seed: int = 0
    guidance: float = 1.0
    negative: TextPrompt | None = None
    text_bias: float = 0.0
    parallel: bool = False


@dataclass
class DecodeResult:
    """Output of a decoding run.

    Attributes:
        frames: ``[B, frames, h, w]`` token ids; given frames are copied unchanged, frames that
            were neither given nor generated hold -1.
        passes: Forward passes per branch, prefix pass included.
        logits: ``[B, seq_len, V]`` logits of every generated slot (others zero), when requested.
    """

    frames: torch.Tensor
    passes: int
    logits: torch.Tensor | None = None


@lru_cache(maxsize=32)
def _cached_schedule(layout, layer_masks, given, generated, parallel) -> WaveSchedule:
    if parallel:
        return wave_schedule(layout, layer_masks, given_frames=given, generated_frames=generated)
    return sequential_schedule(layout, given_frames=given, generated_frames=generated)


def plan_schedule(
    model, given_frames: Sequence[int], generated_frames: Sequence[int], *,
    parallel: bool, use_temporal: bool = True,
) -> WaveSchedule:
    """The schedule a decoding run of ``model`` uses (memoised: masks are hashable)."""
    masks = tuple(model_layer_masks(model, use_temporal=use_temporal))
    return _cached_schedule(model.config.layout, masks, tuple(given_frames), tuple(generated_frames),
                            bool(parallel))


class _Branch:
    """One text condition with its own KV cache."""

    def __init__(self, model, prompt: TextPrompt):
        self.ids = prompt.ids
        self.valid = prompt.mask()
        self.cache = model.new_cache()

    def inputs(self, frame_inputs: torch.Tensor, slots: torch.Tensor, text_len: int) -> torch.Tensor:
        text = self.ids[:, slots.clamp(max=max(text_len - 1, 0))] if text_len else frame_inputs[:, slots]
        return torch.where((slots < text_len).unsqueeze(0), text, frame_inputs[:, slots])


def _check_given(layout: TokenLayout, given: torch.Tensor | None, n_given: int, batch: int) -> None:
    if n_given == 0:
        return
    expected = (batch, n_given, layout.frame_height, layout.frame_width)
    if given is None or tuple(given.shape) != expected:
        got = None if given is None else tuple(given.shape)
        raise ShapeError(
            f"given frames must have shape [batch, given frames, height, width] = {expected}, got "
            f"{got}; pass the token grids of frames in the order of given_frames."
        )


@torch.no_grad()
def decode_frames(
    model,
    prompt: TextPrompt,
    *,
    boi_id: int,
    options: DecodeOptions,
    generated_frames: Sequence[int],
    given_frames: Sequence[int] = (),
    given: torch.Tensor | None = None,
    use_temporal: bool = True,
    streams: torch.Tensor | None = None,
    schedule: WaveSchedule | None = None,
    return_logits: bool = False,
) -> DecodeResult:
    """Generate ``generated_frames`` of ``model``'s layout, given ``given_frames``.

    Args:
        model: A :class:`~cogframe.core.model.CogVideoTransformer` (put in eval mode).
        prompt: ``[B, text_len]`` text condition.
        boi_id: Id of the BOI token.
        options: Sampler, seed, guidance, text bias, parallel waves.
        generated_frames: Frames to generate, in sequential generation order.
        given_frames: Frames whose tokens are given (fed in the prefix pass, in this order).
        given: ``[B, len(given_frames), h, w]`` token ids of the given frames.
        use_temporal: False decodes through the base (spatial) channel only.
        streams: ``LongTensor[B]`` random stream of each batch row (default ``arange(B)``).
        schedule: Explicit schedule (tests, benchmarks); default from ``options.parallel``.
        return_logits: Also return the (guided) logits of every generated slot.
    """
    layout: TokenLayout = model.config.layout
    if model.training:
        raise ConfigError("the model is in training mode (dropout would make decoding random); "
                          "call model.eval() before sampling.")
    prompt.check(layout.text_len)
    batch = prompt.batch
    check_guidance(options.guidance, options.negative is not None)
    _check_given(layout, given, len(given_frames), batch)
    if schedule is None:
        schedule = plan_schedule(model, given_frames, generated_frames, parallel=options.parallel,
                                 use_temporal=use_temporal)
    if not schedule.executable:
        raise ShapeError(f"a '{schedule.kind}' schedule is an analysis bound; decode with a "
                         "sequential or cache-dependency schedule.")
    streams = torch.arange(batch) if streams is None else streams.long().cpu()
    device = prompt.ids.device
    tpf = layout.tokens_per_frame

    frame_inputs = torch.full((batch, layout.seq_len), int(boi_id), dtype=torch.long, device=device)
    frames = torch.full((batch, layout.frames, tpf), -1, dtype=torch.long, device=device)
    for i, t in enumerate(given_frames):
        flat = given[:, i].reshape(batch, tpf).long().to(device)
        frames[:, t] = flat
        start = layout.frame_range(t).start
        frame_inputs[:, start + 1:start + tpf] = flat[:, :-1]

    branches = [_Branch(model, prompt)]
    if options.negative is not None:
        options.negative.check(layout.text_len)
        branches.append(_Branch(model, options.negative.expand(batch)))
    kwargs = dict(use_temporal=use_temporal, text_bias=options.text_bias)
    noise = SlotNoise(options.seed)
    logits_out = None
    fed = torch.zeros(layout.seq_len, dtype=torch.bool)
    passes = 0

    def forward(slots: torch.Tensor) -> list[torch.Tensor]:
        slots_dev = slots.to(device)
        return [model(b.inputs(frame_inputs, slots_dev, layout.text_len), slots=slots_dev,
                      text_valid=b.valid, cache=b.cache, **kwargs) for b in branches]

    pending = tuple(generated_frames)
    if schedule.prefix.numel():
        forward(schedule.prefix)
        fed[schedule.prefix] = True
        passes += 1
    _retain(branches, layout, pending)
    for wave in schedule.waves:
        outs = forward(wave)
        passes += 1
        logits = outs[0] if len(outs) == 1 else combine_guidance(outs[0], outs[1], options.guidance)
        if return_logits:
            if logits_out is None:
                logits_out = logits.new_zeros(batch, layout.seq_len, logits.shape[-1])
            logits_out[:, wave.to(device)] = logits
        n = wave.numel()
        positions = wave.repeat(batch)
        rows = noise.rows(streams.repeat_interleave(n), positions)
        tokens = options.sampler(logits.reshape(batch * n, -1), positions.to(device), rows)
        if tokens.shape != (batch * n,):
            raise ShapeError(f"the token sampler returned shape {tuple(tokens.shape)} for {batch * n} "
                             "rows of logits; it must return one token id per row ([N]).")
        tokens = tokens.reshape(batch, n).to(device)
        coords = layout.coords(wave)
        frames[:, coords.t.to(device), coords.p.to(device)] = tokens
        follows = coords.p < tpf - 1  # the last token of a frame is never an input
        frame_inputs[:, (wave[follows] + 1).to(device)] = tokens[:, follows.to(device)]
        fed[wave] = True
        still = tuple(t for t in pending if not bool(fed[layout.frame_range(t).start:
                                                          layout.frame_range(t).stop].all()))
        if still != pending:
            pending = still
            _retain(branches, layout, pending)
    return DecodeResult(frames.reshape(batch, layout.frames, layout.frame_height, layout.frame_width),
                        passes, logits_out)


def _retain(branches: list[_Branch], layout: TokenLayout, frames: Sequence[int]) -> None:
    """Keep spatial keys of text and unfinished frames only (the limited spatial memory)."""
    for branch in branches:
        branch.cache.retain_spatial_frames(layout, set(frames))
