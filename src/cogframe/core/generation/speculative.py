"""Exact speculative decoding of frames under a deterministic (greedy) sampler.

Sequential decoding feeds one slot per pass: at the tiny width a pass costs about the same for one
query as for dozens (docs/benchmarks.md: a batch-1 pass is bound by moving the weights), so a
frame of 64 tokens costs 64 passes. Yet most of a frame repeats the frame before it (the
background, the parts of the object that did not move). Speculative decoding (Leviathan et al.,
"Fast Inference from Transformers via Speculative Decoding", 2023) drafts several tokens cheaply
and checks them all in one pass of the real model; here the draft is free, with no second network:
each slot's draft is the token at the same place in the frame before (stage 1: the previous key
frame; stage 2: the given frame before the in-between one).

One pass feeds slots ``p .. p+k-1`` of a frame, slot ``p`` with its known input and each later slot
with the draft of the slot before it as input. When the model's masks are causal in slot order
among the generated frames (checked from the masks of every layer, :func:`_mask_problem`), the
logits of slot ``p+j`` depend only on the inputs of slots up to ``p+j``; they are the logits
sequential decoding would compute as long as every draft before ``p+j`` equals the token picked
there. So the pass keeps the tokens picked at ``p`` and at every later slot whose preceding drafts
all matched (across the batch), and drops the keys of the other slots from the cache
(:meth:`~cogframe.core.model.transformer.KVCache.truncate`); the next pass starts at the first slot
not kept. With a sampler whose token depends on the logits alone (``deterministic = True``: greedy),
the tokens are those of one-slot-per-pass decoding, up to the float summation order that any pass
of several queries has (as for parallel waves, :mod:`cogframe.core.generation.decoder`). Sampling
samplers are refused: their draws would need the rejection scheme of the paper to stay exact.
"""

from __future__ import annotations

import contextlib
from functools import lru_cache
from typing import Sequence

import torch

from cogframe.core.generation.decoder import (
    DecodeOptions, DecodeResult, _retain, _unmasked_temporal, check_run, forward_branches, plan_schedule, start_run,
)
from cogframe.core.generation.prompts import TextPrompt
from cogframe.core.generation.token_sampling import RowNoise
from cogframe.core.generation.waves import frame_slots, model_layer_masks
from cogframe.errors import ConfigError

__all__ = ["DRAFT_ROWS", "check_options", "decode_frames_speculative", "draft_length", "is_deterministic"]

# Query rows (drafted slots x batch rows) one speculative pass may carry. A pass's cost is flat in
# its rows only while they are few: on the tiny stage 1 (2-core AMD EPYC, 1 thread; key frames 1-4)
# one prompt went 0.93 s -> 0.36 s with 16 drafted slots a pass and 0.45 s with 64, four prompts
# 1.20 -> 0.84 s with 4 slots and 1.26 s with 64, and sixteen prompts gained 1.06x with 2 slots and
# lost with 8 (2.3 s -> 2.7 s), since the batch already fills a pass (`benchmarks/sampling.py --only g`).
DRAFT_ROWS = 16


def draft_length(batch: int) -> int:
    """Slots a speculative pass drafts for ``batch`` prompts (1: no drafting pays)."""
    return max(1, DRAFT_ROWS // max(1, int(batch)))


def is_deterministic(sampler) -> bool:
    """Whether ``sampler``'s token depends on the logits alone (it declares ``deterministic = True``)."""
    return bool(getattr(sampler, "deterministic", False))


def _check(model, options: DecodeOptions, given_frames: Sequence[int], generated_frames: Sequence[int],
           use_temporal: bool) -> None:
    """What speculation adds to :func:`~cogframe.core.generation.decoder.check_run`."""
    check_options(options)
    known = set(given_frames)
    ordered = list(generated_frames) == sorted(set(generated_frames))
    if not generated_frames or not ordered or any(t - 1 not in known | set(generated_frames[:i])
                                                  for i, t in enumerate(generated_frames)):
        raise ConfigError(f"speculative decoding drafts each frame from the one before it: generate frames in "
                          f"increasing order, each right after a given or generated frame; got given "
                          f"{list(given_frames)}, generated {list(generated_frames)}.")
    masks = tuple(model_layer_masks(model, use_temporal=use_temporal))
    problem = _mask_problem(model.config.layout, masks, tuple(given_frames), tuple(generated_frames))
    if problem:
        raise ConfigError(f"speculative decoding needs masks under which {problem}; this "
                          f"'{model.config.stage.value}' model's masks do not allow that for given frames "
                          f"{list(given_frames)} and generated frames {list(generated_frames)}. Turn "
                          "`speculative` off for it.")


def check_options(options: DecodeOptions) -> None:
    """What speculation needs of the options, checked even where a run would not draft (a full batch).

    Raises:
        ConfigError: A sampler that samples, or ``compile`` on.
    """
    if not is_deterministic(options.sampler):
        raise ConfigError(f"speculative decoding is exact only with a deterministic sampler such as greedy; "
                          f"{type(options.sampler).__name__} samples. Use token_sampler {{name: greedy}} or turn "
                          "`speculative` off.")
    if options.compile:
        raise ConfigError("speculative decoding does not run compiled (its passes change length every pass); "
                          "turn `compile` or `speculative` off.")


@lru_cache(maxsize=32)
def _mask_problem(layout, layer_masks, given_frames: tuple[int, ...], generated_frames: tuple[int, ...]) -> str | None:
    """Why one pass over drafted slots would not equal one pass per slot under these masks (None: it would).

    It does when no given slot sees a generated one (the prefix pass is fed first), no generated
    slot sees a generated slot after it, and no slot sees a frame that is never fed: then slot
    ``q``'s keys and logits depend only on the given frames and the inputs of generated slots up to
    ``q``, layer by layer. Each distinct mask is evaluated once (memoised: masks are hashable).
    """
    # Natural slot order: generated frames come in increasing order (checked before), so this is
    # also their decoding order.
    given, generated = frame_slots(layout, given_frames), frame_slots(layout, generated_frames)
    absent = frame_slots(layout, [t for t in range(layout.frames) if t not in set(given_frames) | set(generated_frames)])
    later = generated.unsqueeze(0) > generated.unsqueeze(1)  # [q, k]: k comes after q
    distinct = list(dict.fromkeys(mask for masks in layer_masks for mask in masks))  # in layer order
    if given.numel() and any(bool(m.dense(given, generated, None).any()) for m in distinct):
        return "no given frame sees a generated one"
    if any(bool((m.dense(generated, generated, None)[0] & later).any()) for m in distinct):
        return "no generated slot sees a later one (causal in slot order)"
    present = torch.cat([given, generated])
    if absent.numel() and any(bool(m.dense(present, absent, None).any()) for m in distinct):
        return "no frame sees a frame that is neither given nor generated"
    return None


@torch.no_grad()
def decode_frames_speculative(
    model,
    prompt: TextPrompt,
    *,
    boi_id: int,
    options: DecodeOptions,
    generated_frames: Sequence[int],
    given_frames: Sequence[int],
    given: torch.Tensor,
    use_temporal: bool = True,
    max_draft: int | None = None,
) -> DecodeResult:
    """Generate ``generated_frames`` given ``given_frames``, each drafted from the frame before it.

    Args:
        model: A :class:`~cogframe.core.model.transformer.CogVideoTransformer` in eval mode whose masks
            are causal in slot order among ``generated_frames`` (stage 1; stage 2's in-between frames).
        prompt: ``[B, text_len]`` text condition.
        boi_id: Id of the BOI token.
        options: A deterministic sampler (greedy), guidance, text bias, ``unmasked_prefix``
            (``parallel`` is not used: the passes are this decoder's own).
        generated_frames: Frames to generate, in increasing order; frame ``t - 1`` of each is given
            or generated before it.
        given_frames: Frames whose tokens are given (fed in the prefix pass).
        given: ``[B, len(given_frames), h, w]`` token ids of the given frames.
        use_temporal: False decodes through the base (spatial) channel only.
        max_draft: Most slots one pass feeds (None: :func:`draft_length` of the batch).

    Returns:
        The frames, and the passes run (per text branch, the prefix pass included).

    Raises:
        ConfigError: As :func:`~cogframe.core.generation.decoder.check_run`; masks that are not causal
            among the generated frames, a sampler that samples, compile on, frames out of order.
        ShapeError: Prompt or given frames that do not fit the layout.
    """
    check_run(model, prompt, options, given_frames, given)
    _check(model, options, given_frames, generated_frames, use_temporal)
    layout = model.config.layout
    batch, device = prompt.batch, prompt.ids.device
    state, branches = start_run(model, prompt, boi_id, options, given_frames, given)
    if any(not hasattr(b.cache, "truncate") for b in branches):
        raise ConfigError(f"speculative decoding needs a KV cache that can drop rejected slots; "
                          f"{type(branches[0].cache).__name__} cannot. Use the default KVCache.")
    schedule = plan_schedule(model, given_frames, generated_frames, parallel=False, use_temporal=use_temporal)
    with _unmasked_temporal(model) if options.unmasked_prefix else contextlib.nullcontext():
        forward_branches(model, branches, state, schedule.prefix.to(device), options, use_temporal)
    passes = 1
    _retain(branches, layout, tuple(generated_frames))
    tpf = layout.tokens_per_frame
    limit = draft_length(batch) if max_draft is None else max(1, int(max_draft))
    for i, t in enumerate(generated_frames):
        start = layout.frame_range(t).start
        draft = state.tokens[:, t - 1]  # [B, tpf]: the previous frame, given or just generated
        j = 0  # next token of frame t to decide
        while j < tpf:
            k = min(tpf - j, limit)
            if k > 1:  # inputs of slots j+1 .. j+k-1: the drafts of tokens j .. j+k-2
                state.inputs[:, start + j + 1:start + j + k] = draft[:, j:j + k - 1]
            slots = torch.arange(start + j, start + j + k, device=device)
            logits = forward_branches(model, branches, state, slots, options, use_temporal,
                                      state.inputs[:, start + j:start + j + k])
            passes += 1
            rows = slots.repeat(batch)
            picked = options.sampler(logits.reshape(batch * k, -1), rows, RowNoise(torch.zeros_like(rows)))
            picked = picked.reshape(batch, k).to(device)
            # Keep token j, then each token whose preceding drafts in this pass all matched.
            match = (picked[:, :k - 1] == draft[:, j:j + k - 1]).all(0)
            kept = 1 + int(match.long().cumprod(0).sum())
            state.tokens[:, t, j:j + kept] = picked[:, :kept]
            inputs = min(kept, tpf - j - 1)  # the kept tokens are the inputs of the slots after them
            if inputs:
                state.inputs[:, start + j + 1:start + j + 1 + inputs] = picked[:, :inputs]
            for branch in branches:
                branch.cache.truncate(k - kept)
            j += kept
        _retain(branches, layout, tuple(generated_frames[i + 1:]))  # frame t ended
    return DecodeResult(state.grids(), passes)
