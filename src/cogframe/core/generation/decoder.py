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
import weakref
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import torch

from cogframe.core.generation.guidance import check_guidance, combine_guidance
from cogframe.core.model.layout import TokenLayout
from cogframe.core.model.transformer import eager_decode_helpers
from cogframe.core.generation.prompts import TextPrompt
from cogframe.core.generation.token_sampling import RowNoise, SlotNoise, TokenSampler
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
        compile: ``torch.compile`` the decode step: every layer's forward (norms, projections,
            MLP, the channel mix) is compiled (inductor: C++ on the CPU, Triton on CUDA), the
            KV-cache writes and the attention calls stay eager between the compiled pieces. The
            first run pays the compilation (and a recompile when the pass shape first changes);
            fused kernels round differently from eager ones, so logits differ by float rounding.
            ``benchmarks/sampling.py --only f`` measures whether it pays (on the CPU it does not).
        speculative: Where the caller supports it (key frames 1..T-1, stage 2's in-between frames),
            decode with drafts from the frame before, checked in one pass
            (:mod:`cogframe.core.generation.speculative`): the same tokens in fewer passes; needs a
            deterministic sampler (greedy) and no ``compile``.
    """

    sampler: TokenSampler
    seed: int = 0
    guidance: float = 1.0
    negative: TextPrompt | None = None
    text_bias: float = 0.0
    parallel: bool = False
    unmasked_prefix: bool = False
    compile: bool = False
    speculative: bool = False


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

    def give(self, frame: int, grid: torch.Tensor) -> None:
        """Copy a given frame's tokens and set its inputs ``[BOI, f[0], ..., f[-2]]``."""
        tpf = self.layout.tokens_per_frame
        flat = grid.reshape(grid.shape[0], tpf).long().to(self.tokens.device)
        self.tokens[:, frame] = flat
        start = self.layout.frame_range(frame).start
        self.inputs[:, start + 1:start + tpf] = flat[:, :-1]

    def write(self, wave: "_Wave", tokens: torch.Tensor) -> None:
        """Store the ``[B, n]`` tokens sampled in ``wave``; each becomes the next slot's input."""
        self.tokens.view(self.tokens.shape[0], -1)[:, wave.token_index] = tokens
        if wave.follow_rows is not None:
            self.inputs[:, wave.follow_slots] = tokens.index_select(1, wave.follow_rows)

    def grids(self) -> torch.Tensor:
        layout = self.layout
        return self.tokens.reshape(-1, layout.frames, layout.frame_height, layout.frame_width)


class _Wave:
    """The index tensors of one generation pass, cut from :class:`_WavePlan`'s (no per-pass ops).

    Attributes:
        slots: ``[n]`` slots fed and sampled (on the model's device).
        token_index: ``[n]`` their positions in the flattened ``[B, frames * tpf]`` token grids.
        follow_rows / follow_slots: Which of the ``n`` sampled tokens are inputs of a next slot
            (every one but a frame's last token), and that slot; None when none is.
        positions: ``[B * n]`` slot of each sampled row (batch-major), for the sampler.
        noise: The rows' position-keyed noise (:class:`RowNoise`), computed for the whole run.
        retain: The generated frames that still have slots to feed after this pass when a frame
            ends with it (its spatial keys can go), else None.
    """

    __slots__ = ("slots", "token_index", "follow_rows", "follow_slots", "positions", "noise", "retain")


class _WavePlan:
    """Everything a run's generation passes index with, computed once from the schedule.

    Per pass, the decoder used to derive coordinates, next-slot targets, noise keys and the
    frames left to feed from the wave's slots (~40 small ops and a scan of every pending frame);
    here they are computed for all waves at once and each pass takes its slices.
    """

    def __init__(self, layout: TokenLayout, schedule: WaveSchedule, generated_frames: Sequence[int],
                 seed: int, streams: torch.Tensor, device: torch.device):
        waves = schedule.waves
        tpf = layout.tokens_per_frame
        sizes = [int(w.numel()) for w in waves]
        flat = torch.cat([w.long().reshape(-1) for w in waves]) if waves else torch.zeros(0, dtype=torch.long)
        if flat.numel() and int(flat.min()) < layout.text_len:
            raise ShapeError("a schedule's waves may only hold frame slots (text is fed in the prefix "
                             f"pass), got slot {int(flat.min())} < text_len {layout.text_len}.")
        token_index = flat - layout.text_len
        follows = token_index % tpf < tpf - 1  # a frame's last token is never an input
        batch = int(streams.numel())
        # Noise keys of every (stream, slot) pair of the run, batch-major within each wave.
        keys = SlotNoise(seed).rows(streams.repeat_interleave(flat.numel()), flat.repeat(batch)).keys
        keys = keys.reshape(batch, -1)
        positions = flat.to(device).expand(batch, -1)
        flat_dev, token_index_dev = flat.to(device), token_index.to(device)
        retain = self._retention(layout, schedule, generated_frames)
        self.waves: list[_Wave] = []
        start = 0
        for i, n in enumerate(sizes):
            stop = start + n
            wave = _Wave()
            wave.slots = flat_dev[start:stop]
            wave.token_index = token_index_dev[start:stop]
            rows = follows[start:stop].nonzero().squeeze(-1)
            wave.follow_rows = rows.to(device) if rows.numel() else None
            wave.follow_slots = (flat[start:stop][rows] + 1).to(device) if rows.numel() else None
            wave.positions = positions[:, start:stop].reshape(-1)
            wave.noise = RowNoise(keys[:, start:stop].reshape(-1))
            wave.retain = retain.get(i)
            self.waves.append(wave)
            start = stop

    @staticmethod
    def _retention(layout: TokenLayout, schedule: WaveSchedule,
                   generated_frames: Sequence[int]) -> dict[int, tuple[int, ...]]:
        """Pass index -> the generated frames left to feed, for each pass that ends a frame.

        A frame ends with the last pass that feeds one of its slots (the prefix pass counts as
        before pass 0); a frame some of whose slots are never fed never ends.
        """
        fed_at = torch.full((layout.seq_len,), -2, dtype=torch.long)  # -2: never fed
        fed_at[schedule.prefix.long()] = -1
        for i, wave in enumerate(schedule.waves):
            fed_at[wave.long()] = i
        ends: dict[int, int | None] = {}
        for t in generated_frames:
            r = layout.frame_range(t)
            block = fed_at[r.start:r.stop]
            ends[t] = None if bool((block == -2).any()) else max(int(block.max()), 0)
        out: dict[int, tuple[int, ...]] = {}
        for i in sorted({e for e in ends.values() if e is not None}):
            out[i] = tuple(t for t in generated_frames if ends[t] is None or ends[t] > i)
        return out


def check_run(model, prompt: TextPrompt, options: DecodeOptions, given_frames: Sequence[int],
              given: torch.Tensor | None) -> None:
    """What every decoding run needs: eval mode, a prompt and given frames that fit, guidance with its prompt.

    Raises:
        ConfigError: Model in training mode, empty prompt, guidance without a negative prompt.
        ShapeError: Prompt or given frames that do not fit the layout.
    """
    layout = model.config.layout
    if model.training:
        raise ConfigError("the model is in training mode (dropout would make decoding random); "
                          "call model.eval() before sampling.")
    prompt.check(layout.text_len)
    check_guidance(options.guidance, options.negative is not None)
    _check_given(layout, given, len(given_frames), prompt.batch)


def start_run(model, prompt: TextPrompt, boi_id: int, options: DecodeOptions, given_frames: Sequence[int],
              given: torch.Tensor | None) -> "tuple[_Frames, list[_Branch]]":
    """The frame state (given frames in place) and the text branches, each with a new KV cache."""
    layout = model.config.layout
    state = _Frames(layout, prompt.batch, boi_id, prompt.ids.device)
    for i, t in enumerate(given_frames):
        state.give(t, given[:, i])
    branches = [_Branch(model, prompt)]
    if options.negative is not None:
        options.negative.check(layout.text_len)
        branches.append(_Branch(model, options.negative.expand(prompt.batch)))
    return state, branches


def forward_branches(model, branches: "list[_Branch]", state: _Frames, slots: torch.Tensor, options: DecodeOptions,
                     use_temporal: bool, frame_inputs: torch.Tensor | None = None) -> torch.Tensor:
    """One pass of every text branch over ``slots``; the (guided) ``[B, n, V]`` logits.

    ``frame_inputs``: the inputs of ``slots`` when they are all frame slots (shared by the
    branches, which differ in their text only).
    """
    text_len = model.config.layout.text_len
    outs = [model(frame_inputs if frame_inputs is not None else b.inputs(state.inputs, slots, text_len),
                  slots=slots, text_valid=b.valid, cache=b.cache, use_temporal=use_temporal,
                  text_bias=options.text_bias)
            for b in branches]
    return outs[0] if len(outs) == 1 else combine_guidance(outs[0], outs[1], options.guidance)


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


def _sample(options: DecodeOptions, logits: torch.Tensor, wave: _Wave) -> torch.Tensor:
    """Sample ``[B, n]`` tokens from ``[B, n, V]`` logits; row noise keyed by (stream, slot)."""
    batch, n = logits.shape[:2]
    tokens = options.sampler(logits.reshape(batch * n, -1), wave.positions, wave.noise)
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
    check_run(model, prompt, options, given_frames, given)
    batch = prompt.batch
    if schedule is None:
        schedule = plan_schedule(model, given_frames, generated_frames, parallel=options.parallel,
                                 use_temporal=use_temporal)
    if not schedule.executable:
        raise ShapeError(f"a '{schedule.kind}' schedule is an analysis bound; decode with a "
                         "sequential or cache-dependency schedule.")
    streams = torch.arange(batch) if streams is None else streams.long().cpu()
    device = prompt.ids.device
    state, branches = start_run(model, prompt, boi_id, options, given_frames, given)

    def forward(slots: torch.Tensor, frame_inputs: torch.Tensor | None = None) -> torch.Tensor:
        return forward_branches(model, branches, state, slots, options, use_temporal, frame_inputs)

    compiled = _compiled_layers(model) if options.compile else contextlib.nullcontext()
    with compiled:  # the passes: prefix, then every wave (sample, write, drop finished frames)
        passes, logits_out = 0, None
        if schedule.prefix.numel():
            with _unmasked_temporal(model) if options.unmasked_prefix else contextlib.nullcontext():
                forward(schedule.prefix.to(device))
            passes += 1
        plan = _WavePlan(layout, schedule, generated_frames, options.seed, streams, device)
        _retain(branches, layout, tuple(generated_frames))
        for wave in plan.waves:
            logits = forward(wave.slots, state.inputs.index_select(1, wave.slots))
            passes += 1
            if return_logits:
                if logits_out is None:
                    logits_out = logits.new_zeros(batch, layout.seq_len, logits.shape[-1])
                logits_out[:, wave.slots] = logits
            state.write(wave, _sample(options, logits, wave))
            if wave.retain is not None:  # a frame ended: its spatial keys are no longer needed
                _retain(branches, layout, wave.retain)
    return DecodeResult(state.grids(), passes, logits_out)


# One torch.compile wrapper per layer, kept for the layer's lifetime: later runs reuse its
# compiled code instead of compiling again.
_COMPILED_LAYERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def _compiled_layers(model):
    """Within the block, ``model``'s layers run compiled (``DecodeOptions.compile``).

    The attention backends are called through ``torch.compiler.disable`` (their dense masks are
    built by Python-level mask logic and shared within a pass), and so are the KV-cache writes
    and the mask lookup (``eager_decode_helpers``). Everything is restored afterwards, also when
    a pass fails, so training and uncompiled decoding never see compiled layers.
    """
    saved = model.spatial_attention, model.temporal_attention
    layers = [layer for layer in model.layers if getattr(layer, "_compiled_call_impl", None) is None]
    with eager_decode_helpers():
        model.spatial_attention, model.temporal_attention = (torch.compiler.disable(fn) for fn in saved)
        try:
            for layer in layers:
                if layer not in _COMPILED_LAYERS:
                    _COMPILED_LAYERS[layer] = torch.compile(layer._call_impl, dynamic=None)
                layer._compiled_call_impl = _COMPILED_LAYERS[layer]
            yield
        finally:
            model.spatial_attention, model.temporal_attention = saved
            for layer in layers:
                layer._compiled_call_impl = None


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
