"""The KV-cached frame decoder shared by both stages (THUDM/CogVideo cogvideo_pipeline.py,
``my_filling_sequence``, and the cache model models/cogvideo_cache_model.py).

One decoding run fills some frames of a layout given others:

1. **Prefix pass.** The text slots and every given frame are fed in one forward (stage 2's
   given frames see each other bidirectionally, so they must arrive together).
2. **Generation passes.** Each pass feeds a set of slots (one slot for sequential decoding, a
   wave for parallel decoding, see :mod:`cogframe.core.generation.waves`) as a batch of queries against
   the cache, and samples the token of every slot it fed. The token sampled at slot ``(t, j)``
   is written as the input of slot ``(t, j + 1)``; slot ``(t, 0)`` holds BOI (the release's
   BOI-shift, pretrain_cogvideo.py ``get_batch``).

Cache layout: one :class:`~cogframe.core.model.transformer.KVCache` per text branch (the prompt, plus the
negative prompt under guidance). The temporal channel keeps text and every frame slot fed so
far; the spatial channel keeps text and the frames that still have slots to feed (it only ever
looks at the query's own frame), trimmed with ``retain_spatial_frames`` whenever a frame ends.

Exactness: every pass feeds a set of slots closed under the cache dependencies, so each query
attends to exactly the keys of the full forward, with the same values. Logits then agree with
the full forward up to floating-point summation order (BLAS blocking differs with the number of
queries in a pass), and the sampled tokens agree bit for bit: samplers are row-wise and draw
their randomness from (seed, stream, slot), see :mod:`cogframe.core.generation.token_sampling`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import torch

from cogframe.core.generation.guidance import check_guidance, combine_guidance
from cogframe.core.model.layout import TokenLayout
from cogframe.core.generation.prompts import TextPrompt
from cogframe.core.generation.token_sampling import SlotNoise, TokenSampler
from cogframe.core.generation.waves import WaveSchedule, model_layer_masks, sequential_schedule, wave_schedule
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
        unmasked_prefix: Run the prefix pass (text + given frames) with the temporal channel
            unmasked among the given frames: no window, no shift, every given slot sees every
            given slot. This is what the released stage-2 cache model does
            (``cogvideo_cache_model.py``: ``attention_extra_NAR_inference`` masks only in stage 1),
            so converted weights reproduce the release with it; False (default) uses the
            training mask in every pass. The generation passes always use the training mask.
    """

    sampler: TokenSampler
    seed: int = 0
    guidance: float = 1.0
    negative: TextPrompt | None = None
    text_bias: float = 0.0
    parallel: bool = False
    unmasked_prefix: bool = False


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
        """Input ids of ``slots``: this branch's text, the shared frame inputs elsewhere."""
        if not text_len:
            return frame_inputs[:, slots]
        text = self.ids[:, slots.clamp(max=text_len - 1)]
        return torch.where((slots < text_len).unsqueeze(0), text, frame_inputs[:, slots])


class _Frames:
    """Token grids and the shared frame inputs of a run (BOI-shift), natural slot order."""

    def __init__(self, layout: TokenLayout, batch: int, boi_id: int, device: torch.device):
        self.layout = layout
        tpf = layout.tokens_per_frame
        # Every frame slot starts as BOI: right for slot (t, 0), overwritten elsewhere.
        self.inputs = torch.full((batch, layout.seq_len), int(boi_id), dtype=torch.long, device=device)
        self.tokens = torch.full((batch, layout.frames, tpf), -1, dtype=torch.long, device=device)
        self.fed = torch.zeros(layout.seq_len, dtype=torch.bool)

    def give(self, frame: int, grid: torch.Tensor) -> None:
        """Copy a given frame's tokens and set its inputs ``[BOI, f[0], ..., f[-2]]``."""
        tpf = self.layout.tokens_per_frame
        flat = grid.reshape(grid.shape[0], tpf).long().to(self.tokens.device)
        self.tokens[:, frame] = flat
        start = self.layout.frame_range(frame).start
        self.inputs[:, start + 1:start + tpf] = flat[:, :-1]

    def write(self, slots: torch.Tensor, tokens: torch.Tensor) -> None:
        """Store tokens sampled at ``slots``; each becomes the input of the next slot."""
        coords = self.layout.coords(slots)
        device = self.tokens.device
        self.tokens[:, coords.t.to(device), coords.p.to(device)] = tokens
        follows = coords.p < self.layout.tokens_per_frame - 1  # a frame's last token is never an input
        self.inputs[:, (slots[follows] + 1).to(device)] = tokens[:, follows.to(device)]

    def unfinished(self, frames: Sequence[int]) -> tuple[int, ...]:
        """The frames of ``frames`` that still have slots to feed."""
        return tuple(t for t in frames
                     if not bool(self.fed[self.layout.frame_range(t).start:
                                          self.layout.frame_range(t).stop].all()))

    def grids(self) -> torch.Tensor:
        layout = self.layout
        return self.tokens.reshape(-1, layout.frames, layout.frame_height, layout.frame_width)


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


def _sample(options: DecodeOptions, logits: torch.Tensor, slots: torch.Tensor,
            streams: torch.Tensor) -> torch.Tensor:
    """Sample ``[B, n]`` tokens from ``[B, n, V]`` logits; row noise keyed by (stream, slot)."""
    batch, n = logits.shape[:2]
    positions = slots.repeat(batch)
    rows = SlotNoise(options.seed).rows(streams.repeat_interleave(n), positions)
    tokens = options.sampler(logits.reshape(batch * n, -1), positions.to(logits.device), rows)
    if tokens.shape != (batch * n,):
        raise ShapeError(f"the token sampler returned shape {tuple(tokens.shape)} for {batch * n} "
                         "rows of logits; it must return one token id per row ([N]).")
    return tokens.reshape(batch, n).to(logits.device)


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
        model: A :class:`~cogframe.core.model.transformer.CogVideoTransformer` (put in eval mode).
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

    Raises:
        ConfigError: Model in training mode, empty prompt, guidance without a negative prompt.
        ShapeError: Prompt or given frames that do not fit the layout; a non-executable schedule.
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
    state = _Frames(layout, batch, boi_id, device)
    for i, t in enumerate(given_frames):
        state.give(t, given[:, i])
    branches = [_Branch(model, prompt)]
    if options.negative is not None:
        options.negative.check(layout.text_len)
        branches.append(_Branch(model, options.negative.expand(batch)))

    def forward(slots: torch.Tensor) -> torch.Tensor:
        """One pass of every branch over ``slots``; the (guided) logits."""
        state.fed[slots] = True
        slots = slots.to(device)
        outs = [model(b.inputs(state.inputs, slots, layout.text_len), slots=slots, text_valid=b.valid,
                      cache=b.cache, use_temporal=use_temporal, text_bias=options.text_bias)
                for b in branches]
        return outs[0] if len(outs) == 1 else combine_guidance(outs[0], outs[1], options.guidance)

    passes, logits_out = 0, None
    if schedule.prefix.numel():
        with _unmasked_temporal(model) if options.unmasked_prefix else contextlib.nullcontext():
            forward(schedule.prefix)
        passes += 1
    pending = tuple(generated_frames)
    _retain(branches, layout, pending)
    for wave in schedule.waves:
        logits = forward(wave)
        passes += 1
        if return_logits:
            if logits_out is None:
                logits_out = logits.new_zeros(batch, layout.seq_len, logits.shape[-1])
            logits_out[:, wave.to(device)] = logits
        state.write(wave, _sample(options, logits, wave, streams))
        still = state.unfinished(pending)
        if still != pending:  # a frame ended: its spatial keys are no longer needed
            pending = still
            _retain(branches, layout, pending)
    return DecodeResult(state.grids(), passes, logits_out)


@contextlib.contextmanager
def _unmasked_temporal(model):
    """Within the block, every layer's temporal mask drops its window and temporal extent.

    Among given frames the frame rule already lets every given frame see every other one, so
    without the window the prefix pass is unmasked among text and given frames, as in the
    release. The layers' masks are restored afterwards, also when the pass fails.
    """
    layers = [layer for layer in model.layers if getattr(layer, "temporal_mask", None) is not None]
    saved = [layer.temporal_mask for layer in layers]
    try:
        for layer, mask in zip(layers, saved):
            layer.temporal_mask = dataclasses.replace(mask, window=None, shift=(0, 0), temporal_extent=None)
        yield
    finally:
        for layer, mask in zip(layers, saved):
            layer.temporal_mask = mask


def _retain(branches: list[_Branch], layout: TokenLayout, frames: Sequence[int]) -> None:
    """Keep spatial keys of text and unfinished frames only (the limited spatial memory)."""
    for branch in branches:
        branch.cache.retain_spatial_frames(layout, set(frames))
