"""CogVideo's two-stage sampling (arXiv 2205.15868; release ``cogvideo_pipeline.py``), on top of :mod:`cogframe.core.generation.decoder`.

* :func:`generate_first_frame` — frame 0 through the base channel only (plain CogView2), with
  its own prompt and sampler settings.
* :func:`generate_key_frames` — stage 1: frame 0, then frames 1..T-1 autoregressively with the
  KV cache and the duration-prefixed prompt (optionally with guidance and parallel waves).
* :func:`interpolate_round` / :func:`interpolate` — stage 2: windows of given frames
  ``[F0, F2, F4]`` fed as one prefix, ``F1``/``F3`` generated; 5 -> 9 -> 17 -> 33 frames.
* :func:`generate_video` — both stages in one call (a library shortcut; the ``sample`` task runs
  them as stages, :mod:`cogframe.core.generation.stages`).

Core takes token ids: prompts are built by the caller (see :mod:`cogframe.core.generation.prompts`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import torch

from cogframe.core.generation.decoder import DecodeOptions, DecodeResult, decode_frames
from cogframe.core.generation.speculative import check_options, decode_frames_speculative, draft_length
from cogframe.core.generation.interpolation import merge_windows, split_windows
from cogframe.core.model.layout import Stage
from cogframe.core.model.transformer import CogVideoTransformer
from cogframe.core.generation.prompts import TextPrompt, VideoPrompts
from cogframe.errors import ConfigError, ShapeError

__all__ = [
    "VideoResult",
    "generate_first_frame",
    "generate_key_frames",
    "generate_video",
    "interpolate",
    "interpolate_round",
    "window_streams",
]

# Random streams: bits 40.. the stage-2 round (+1; 0 is stage 1), bits 20..39 the prompt, 0..19
# the window. Distinct passes over the same slots thus never share random numbers.
_ROUND_SHIFT, _PROMPT_SHIFT = 40, 20


def _require_stage(model, stage: Stage, what: str) -> None:
    if model.config.stage is not stage:
        raise ConfigError(
            f"{what} needs a '{stage.value}' model, got a '{model.config.stage.value}' one; pass "
            f"the model built from the {stage.value} preset."
        )


def generate_first_frame(
    model, prompt: TextPrompt, *, boi_id: int, options: DecodeOptions, use_temporal: bool = False
) -> DecodeResult:
    """Frame 0 of a stage-1 model: through the base channel only (exactly CogView2), by default.

    Args:
        use_temporal: Also run the temporal channel, as training does for frame 0. The release
            keeps it off (its frozen base is the text-to-image model that draws frame 0); a stage
            1 trained with ``train.first_frame_loss`` (``tiny/stage1``) learnt frame 0 through
            both channels and needs it on.

    Returns:
        A result whose ``frames`` is ``[B, 1, h, w]``.
    """
    _require_stage(model, Stage.SEQUENTIAL, "the first frame")
    result = decode_frames(model, prompt, boi_id=boi_id, options=options, generated_frames=(0,),
                           use_temporal=use_temporal)
    result.frames = result.frames[:, :1]
    return result


def generate_key_frames(
    model,
    prompt: TextPrompt,
    *,
    boi_id: int,
    options: DecodeOptions,
    first_frame: torch.Tensor | None = None,
    first_prompt: TextPrompt | None = None,
    first_options: DecodeOptions | None = None,
    first_frame_temporal: bool = False,
    return_logits: bool = False,
) -> DecodeResult:
    """Stage 1: the key frames of a batch of prompts.

    Args:
        model: Stage-1 (sequential) model in eval mode.
        prompt: Duration-prefixed prompt (``"4.0s" <n> caption``), ``[B, text_len]``.
        boi_id: BOI token id.
        options: Sampling of frames 1..T-1 (``options.speculative``: drafted from the frame before,
            :mod:`cogframe.core.generation.speculative`).
        first_frame: ``[B, h, w]`` tokens of frame 0; None generates it (base channel only).
        first_prompt: Prompt of the first frame (default: ``prompt``).
        first_options: Sampling of the first frame (default: ``options``).
        first_frame_temporal: Generate frame 0 through both channels (see
            :func:`generate_first_frame`).
        return_logits: Keep the logits of frames 1..T-1 (tests).

    Returns:
        ``frames [B, T, h, w]``; ``passes`` counts both passes' forwards (per branch).
    """
    _require_stage(model, Stage.SEQUENTIAL, "key-frame generation")
    layout = model.config.layout
    passes = 0
    if first_frame is None:
        first = generate_first_frame(model, (first_prompt or prompt).expand(prompt.batch), boi_id=boi_id,
                                     options=first_options or options,
                                     use_temporal=first_frame_temporal)
        first_frame, passes = first.frames[:, 0], first.passes
    expected = (prompt.batch, layout.frame_height, layout.frame_width)
    if tuple(first_frame.shape) != expected:
        raise ShapeError(f"first_frame must be [batch, height, width] = {expected}, got "
                         f"{tuple(first_frame.shape)}.")
    rest = _decode(model, prompt, boi_id=boi_id, options=options, return_logits=return_logits,
                   given_frames=layout.given_frames(Stage.SEQUENTIAL),
                   generated_frames=layout.target_frames(Stage.SEQUENTIAL), given=first_frame.unsqueeze(1))
    rest.passes += passes
    return rest


def _decode(model, prompt: TextPrompt, *, boi_id: int, options: DecodeOptions, streams: torch.Tensor | None = None,
            return_logits: bool = False, **frames) -> DecodeResult:
    """:func:`decode_frames`, or the speculative decoder where ``options.speculative`` asks for it and it pays.

    Drafting pays only while a pass has few rows (``speculative.DRAFT_ROWS``): a full batch decodes
    as usual, and is refused alike when the options do not allow speculation. ``frames``: the
    given and generated frames (``given_frames``, ``generated_frames``, ``given``).
    """
    if options.speculative and not return_logits and draft_length(prompt.batch) > 1:
        return decode_frames_speculative(model, prompt, boi_id=boi_id, options=options, **frames)
    if options.speculative:
        check_options(options)
    return decode_frames(model, prompt, boi_id=boi_id, options=options, streams=streams,
                         return_logits=return_logits, **frames)


def window_streams(batch: int, windows: int, round_index: int) -> torch.Tensor:
    """Random stream of each (prompt, window) row of a stage-2 round (prompt-major order)."""
    if windows >= 1 << _PROMPT_SHIFT or batch >= 1 << (_ROUND_SHIFT - _PROMPT_SHIFT):
        raise ConfigError(f"too many windows ({windows}) or prompts ({batch}) for the random streams.")
    b = torch.arange(batch).repeat_interleave(windows)
    w = torch.arange(windows).repeat(batch)
    return ((round_index + 1) << _ROUND_SHIFT) | (b << _PROMPT_SHIFT) | w


def interpolate_round(
    model,
    frames: torch.Tensor,
    prompt: TextPrompt,
    *,
    boi_id: int,
    options: DecodeOptions,
    round_index: int = 0,
    window_batch: int | None = None,
) -> DecodeResult:
    """One stage-2 round: ``N`` frames -> ``2N - 1`` (for the 5-frame CogVideo window).

    The ``N`` frames are split into ``(N - 1) / 2`` overlapping triples; parents ``2i, 2i+1,
    2i+2`` become window frames 0, 2, 4, are fed as one non-autoregressive prefix in the order
    ``[F0, F2, F4]`` with their natural position ids, and window frames 1 and 3 are generated.

    Args:
        model: Stage-2 (interpolation) model in eval mode.
        frames: ``[B, N, h, w]`` token grids.
        prompt: ``[B, text_len]`` (or one prompt for all) with this round's duration prefix.
        boi_id: BOI token id.
        options: Sampling; ``options.negative`` applies to every window.
        round_index: Round number (separates the random streams of the rounds).
        window_batch: Windows per forward batch (None: all at once). Results do not depend on it.

    Returns:
        ``frames [B, 2N - 1, h, w]``; the input frames sit unchanged at the even indices.
    """
    _require_stage(model, Stage.INTERPOLATION, "interpolation")
    layout = model.config.layout
    if frames.dim() != 4 or tuple(frames.shape[2:]) != (layout.frame_height, layout.frame_width):
        raise ShapeError(f"frames must be [batch, frames, {layout.frame_height}, {layout.frame_width}], "
                         f"got {tuple(frames.shape)}.")
    given_frames = layout.prefix_frames(Stage.INTERPOLATION)
    generated = tuple(t for t in layout.inference_frame_order(Stage.INTERPOLATION)
                      if t not in given_frames)
    batch = frames.shape[0]
    windows = split_windows(frames, len(given_frames))  # [B, W, parents, h, w]
    count = windows.shape[1]
    flat = windows.reshape(batch * count, *windows.shape[2:])
    prompt = prompt.expand(batch).repeat_interleave(count)
    negative = options.negative.expand(batch).repeat_interleave(count) if options.negative else None
    streams = window_streams(batch, count, round_index)
    step = window_batch or flat.shape[0]
    outs, passes = [], 0
    for start in range(0, flat.shape[0], step):
        rows = slice(start, start + step)
        chunk_options = dataclasses.replace(
            options, negative=TextPrompt(negative.ids[rows], negative.mask()[rows]) if negative else None)
        result = _decode(model, TextPrompt(prompt.ids[rows], prompt.mask()[rows]), boi_id=boi_id,
                         options=chunk_options, given_frames=given_frames, generated_frames=generated,
                         given=flat[rows], streams=streams[rows])
        outs.append(result.frames)
        passes += result.passes
    filled = torch.cat(outs).reshape(batch, count, *outs[0].shape[1:])
    return DecodeResult(merge_windows(filled), passes)


def interpolate(
    model,
    frames: torch.Tensor,
    prompts: Sequence[TextPrompt],
    *,
    boi_id: int,
    options: DecodeOptions,
    negatives: Sequence[TextPrompt] | None = None,
    window_batch: int | None = None,
    first_round: int = 0,
) -> DecodeResult:
    """Recursive stage-2 interpolation: one round per prompt (5 -> 9 -> 17 -> 33 for three).

    This is the one stage-2 path: the ``interpolation`` stage and :func:`generate_video` call it.

    Args:
        model: Stage-2 model in eval mode.
        frames: ``[B, N, h, w]`` key frames.
        prompts: One prompt per round, with the round's duration prefix (2.0s, 1.0s, 0.5s).
        boi_id: BOI token id.
        options: Sampling (its ``negative`` is replaced per round by ``negatives``).
        negatives: One guidance prompt per round, or None.
        window_batch: Windows per forward batch.
        first_round: Index of the first round (rounds done before, e.g. by an earlier stage);
            keeps the random streams of all rounds of a video distinct.
    """
    if negatives is not None and len(negatives) != len(prompts):
        raise ConfigError(f"got {len(negatives)} negative prompts for {len(prompts)} rounds; give one "
                          "per round or none.")
    passes = 0
    for r, prompt in enumerate(prompts):
        round_options = options if negatives is None else dataclasses.replace(options, negative=negatives[r])
        result = interpolate_round(model, frames, prompt, boi_id=boi_id, options=round_options,
                                   round_index=first_round + r, window_batch=window_batch)
        frames, passes = result.frames, passes + result.passes
    return DecodeResult(frames, passes)


@dataclass
class VideoResult:
    """Output of :func:`generate_video`.

    Attributes:
        key_frames: ``[B, T, h, w]`` stage-1 frames.
        frames: ``[B, T', h, w]`` after interpolation (``key_frames`` without a stage 2).
        passes: Forward passes per branch, both stages.
    """

    key_frames: torch.Tensor
    frames: torch.Tensor
    passes: int


def generate_video(
    stage1,
    stage2,
    prompts: VideoPrompts,
    *,
    boi_id: int,
    options: DecodeOptions,
    first_options: DecodeOptions | None = None,
    stage2_options: DecodeOptions | None = None,
    first_frame: torch.Tensor | None = None,
    window_batch: int | None = None,
) -> VideoResult:
    """Text to video token grids: key frames (stage 1), then recursive interpolation (stage 2).

    A library shortcut for the two model stages; the ``sample`` task runs the same two calls
    (:func:`generate_key_frames`, :func:`interpolate`) as stages (``plugins/stages.py``).

    Args:
        stage1: Stage-1 model in eval mode.
        stage2: Stage-2 (interpolation) model in eval mode, or None for key frames only.
        prompts: All prompts (:func:`cogframe.core.generation.prompts.video_prompts`).
        boi_id: BOI token id.
        options: Stage-1 sampling (``negative``/``guidance`` from ``prompts`` if set there).
        first_options: First-frame sampling (default ``options`` without guidance).
        stage2_options: Stage-2 sampling (default ``options``; negatives from ``prompts``).
        first_frame: ``[B, h, w]`` tokens to use as frame 0 instead of generating it.
        window_batch: Stage-2 windows per forward batch.

    Raises:
        ConfigError: ``stage2`` is not an interpolation model (pixel interpolation runs after
            decoding: the ``repeat`` / ``linear_blend`` stages).
    """
    key_options = options
    if prompts.negative_key_frames is not None and options.negative is None:
        key_options = dataclasses.replace(options, negative=prompts.negative_key_frames)
    if first_options is None:
        first_options = dataclasses.replace(options, guidance=1.0, negative=None)
    key = generate_key_frames(stage1, prompts.key_frames, boi_id=boi_id, options=key_options,
                              first_frame=first_frame, first_prompt=prompts.first_frame,
                              first_options=first_options)
    if stage2 is None or not prompts.rounds:
        return VideoResult(key.frames, key.frames, key.passes)
    if not isinstance(stage2, CogVideoTransformer):
        raise ConfigError(
            f"generate_video interpolates with a stage-2 model, got {type(stage2).__name__}; pixel "
            "interpolation (repeat, linear_blend) runs on decoded frames: list it as a stage after decoding."
        )
    s2_options = stage2_options or dataclasses.replace(options, negative=None)
    negatives = list(prompts.negative_rounds) if prompts.negative_rounds else None
    more = interpolate(stage2, key.frames, prompts.rounds, boi_id=boi_id, options=s2_options,
                       negatives=negatives, window_batch=window_batch)
    return VideoResult(key.frames, more.frames, key.passes + more.passes)
