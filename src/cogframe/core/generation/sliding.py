"""One-stage generation: extending a video with the stage-1 model alone, one sliding window at a time.

CogVideo's ablation (arXiv 2205.15868, the ablation table: "1-stage" generation with ``N_overlap``
= 1 or 2 against the hierarchical model) asks what the hierarchy buys: instead of key frames at a
low frame rate and interpolation rounds, the sequential (stage-1) model generates every frame at
the final frame rate and slides forward over frames it generated itself.

A window gives the last ``context`` frames of the video as frames ``0 .. context-1`` of the
model's layout (one teacher-forced prefix pass) and generates frames ``context ..
context+stride-1`` token by token; the next window starts ``stride`` frames later. The stage-1
temporal channel is causal over the flattened frames (every frame sees earlier frames, its own
frame causally), so this prefix-then-generate is exactly the model's own autoregressive
distribution of the new frames given the context; the KV-cached decoder
(:mod:`cogframe.core.generation.decoder`) does the rest, parallel waves included.

Random streams: window rows draw from ``SLIDING_STREAM | prompt << 20 | first new frame``, so no
two windows of a video (nor the key frames, stream = prompt row, nor a stage-2 round, see
:func:`cogframe.core.generation.generate.window_streams`) share random numbers at the same slot.

The planning functions (:func:`window_plan`, :func:`check_window`) import no torch, so a sample
recipe is checked without it; torch and the decoder are imported when :func:`extend_frames` runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cogframe.errors import ConfigError, ShapeError

if TYPE_CHECKING:
    import torch

    from cogframe.core.generation.decoder import DecodeOptions, DecodeResult
    from cogframe.core.generation.prompts import TextPrompt

__all__ = ["MAX_FRAMES", "SLIDING_STREAM", "check_window", "extend_frames", "sliding_streams", "window_plan"]

SLIDING_STREAM = 1 << 62  # above stage 2's round bits (40..) for any round count a video can have
_PROMPT_SHIFT = 20
MAX_FRAMES = 1 << _PROMPT_SHIFT  # frame indices live in the low 20 bits of a window's stream


def _whole(value, key: str, low: int, high: int, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{key}: must be a whole number from {low} to {high}, got {value!r}; {fix}")
    return value


def check_window(layout_frames: int, context: int | None, stride: int | None,
                 num_frames: int) -> tuple[int, int]:
    """Checks a sliding window against a layout of ``layout_frames`` frames; ``(context, stride)``.

    Args:
        layout_frames: Frames of the stage-1 model's layout (5 for CogVideo).
        context: Given frames per window (None: ``layout_frames - 1``, the most the layout holds).
        stride: New frames per window (None: the rest of the layout, ``layout_frames - context``).
        num_frames: Frames of the finished video.

    Raises:
        ConfigError: A value outside its range, naming the key (as the ``sliding_window`` stage
            spells it) and the fix.
    """
    if layout_frames < 2:
        raise ConfigError(f"the model's layout has {layout_frames} frame(s); a sliding window needs at least 2 "
                          "(one given, one generated): use a video (sequential) model")
    context = layout_frames - 1 if context is None else context
    _whole(context, "context_frames", 1, layout_frames - 1,
           f"each window gives this many frames and generates at least one more within the model's "
           f"{layout_frames} frames (the paper's N_overlap)")
    stride = layout_frames - context if stride is None else stride
    _whole(stride, "stride", 1, layout_frames - context,
           f"each window generates this many frames after its {context} context frame(s), within the "
           f"model's {layout_frames} frames: lower stride or context_frames")
    _whole(num_frames, "num_frames", 1, MAX_FRAMES - 1, "the length of the finished video (e.g. 33)")
    return context, stride


def window_plan(start: int, num_frames: int, context: int, stride: int) -> list[tuple[int, int]]:
    """``(first new frame, new frames)`` of every window that takes ``start`` frames to ``num_frames``.

    Window ``i`` gives frames ``[first - context, first)`` of the video and generates
    ``[first, first + new)``; every window but the last generates ``stride`` frames.

    Raises:
        ConfigError: Fewer than ``context`` frames to start from, or more than ``num_frames``.
    """
    if start < context:
        raise ConfigError(f"context_frames: the sliding_window stage gives {context} frames per window but got "
                          f"only {start}; lower context_frames to at most {start} or make more frames first")
    if start > num_frames:
        raise ConfigError(f"num_frames: {num_frames} is fewer than the {start} frames the stages before made; "
                          f"set num_frames to at least {start}")
    plan, first = [], start
    while first < num_frames:
        plan.append((first, min(stride, num_frames - first)))
        first += stride
    return plan


def sliding_streams(batch: int, first_new: int) -> "torch.Tensor":
    """Random stream of each prompt row of the window whose first new frame is ``first_new``."""
    import torch

    if batch >= 1 << (62 - _PROMPT_SHIFT) or not 0 <= first_new < MAX_FRAMES:
        raise ConfigError(f"too many prompts ({batch}) or frames ({first_new}) for the random streams.")
    return SLIDING_STREAM | (torch.arange(batch) << _PROMPT_SHIFT) | first_new


def extend_frames(
    model,
    frames: "torch.Tensor",
    prompt: "TextPrompt",
    *,
    boi_id: int,
    options: "DecodeOptions",
    num_frames: int,
    context: int | None = None,
    stride: int | None = None,
) -> "DecodeResult":
    """Extends ``frames`` to ``num_frames`` with a sequential model, window by window.

    Args:
        model: Stage-1 (sequential) model in eval mode.
        frames: ``[B, N, h, w]`` token grids (kept unchanged as the first ``N`` frames).
        prompt: ``[B, text_len]`` (or one row for all), with the frame-rate prefix of ``frames``.
        boi_id: BOI token id.
        options: Sampling; ``options.negative`` (guidance) applies to every window.
        num_frames: Frames of the result (``>= N``).
        context: Given frames per window (default: the layout's frames - 1).
        stride: New frames per window (default: the rest of the layout).

    Returns:
        ``frames [B, num_frames, h, w]``; ``passes``: forward passes per text branch, all windows.

    Raises:
        ConfigError: Not a sequential model, or a bad context / stride / num_frames.
        ShapeError: ``frames`` that do not fit the layout.
    """
    import torch

    from cogframe.core.generation.decoder import DecodeResult, decode_frames
    from cogframe.core.model.layout import Stage

    if model.config.stage is not Stage.SEQUENTIAL:
        raise ConfigError(f"a sliding window needs a 'sequential' (stage-1) model, got a "
                          f"'{model.config.stage.value}' one; pass the model built from the stage-1 preset.")
    layout = model.config.layout
    if frames.dim() != 4 or tuple(frames.shape[2:]) != (layout.frame_height, layout.frame_width):
        raise ShapeError(f"frames must be [batch, frames, {layout.frame_height}, {layout.frame_width}], "
                         f"got {tuple(frames.shape)}.")
    context, stride = check_window(layout.frames, context, stride, num_frames)
    plan = window_plan(int(frames.shape[1]), num_frames, context, stride)
    batch, start = int(frames.shape[0]), int(frames.shape[1])
    prompt = prompt.expand(batch)
    video = frames.new_full((batch, num_frames, *frames.shape[2:]), -1, dtype=torch.long)
    video[:, :start] = frames
    passes = 0
    for first, new in plan:
        result = decode_frames(
            model, prompt, boi_id=boi_id, options=options, given_frames=tuple(range(context)),
            generated_frames=tuple(range(context, context + new)), given=video[:, first - context:first],
            streams=sliding_streams(batch, first))
        video[:, first:first + new] = result.frames[:, context:context + new]
        passes += result.passes
    return DecodeResult(video, passes)
