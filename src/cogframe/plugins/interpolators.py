"""Interpolators (kind ``interpolator``): the stage-2 transformer and two pixel baselines.

All follow the contract of :mod:`cogframe.core.generation.interpolation`::

    more = interpolator(frames, *, rounds, prompts=None, negatives=None, seed=0)

with ``interpolator.space`` telling the sampling recipe where it sits in the pipeline:

* ``transformer`` (``space = "tokens"``): token grids ``[B, T, h, w]`` in and out; interpolate,
  then decode with the image tokenizer. Needs one prompt per round. Its runtime keywords
  ``model`` (the stage-2 model), ``sampler`` (a built token sampler) and ``boi_id`` are passed by
  the task (``spec.runtime_kwargs``).
* ``repeat`` and ``linear_blend`` (``space = "pixels"``): decoded uint8 frames ``[T, H, W, C]``
  or ``[B, T, H, W, C]`` in and out; decode the key frames, then interpolate. No runtime keywords.

Every interpolator maps ``T`` frames to ``(T - 1) * 2**rounds + 1`` (5 -> 33 for 3 rounds) and
keeps the input frames at the even indices, so a recipe can swap them freely.
"""

from __future__ import annotations

from typing import Sequence

import torch

from cogframe.core.generation.decoder import DecodeOptions
from cogframe.core.generation.interpolation import blend_frames, repeat_frames
from cogframe.core.generation.prompts import TextPrompt
from cogframe.core.generation.generate import interpolate
from cogframe.errors import ConfigError
from cogframe.hookspecs import hookimpl
from cogframe.registry import component

__all__ = ["LinearBlendInterpolator", "RepeatInterpolator", "TransformerInterpolator"]


@component("interpolator", "transformer",
           description="CogVideo stage 2: recursive transformer interpolation of token grids.",
           runtime_kwargs=("model", "sampler", "boi_id"))
class TransformerInterpolator:
    """Recursive stage-2 interpolation with the interpolation model (spec §2.3).

    Args:
        model: Stage-2 model (supplied by the task; put in eval mode here).
        sampler: Token sampler (supplied by the task).
        boi_id: BOI token id (supplied by the task).
        parallel: Decode in parallel waves (exact, fewer forward passes).
        guidance: Classifier-free guidance scale (needs negatives at call time unless 1).
        text_bias: Constant added to query->text attention logits.
        window_batch: Windows per forward batch (None: all windows of a round at once).
    """

    space = "tokens"

    def __init__(self, model, sampler, boi_id: int, parallel: bool = False, guidance: float = 1.0,
                 text_bias: float = 0.0, window_batch: int | None = None) -> None:
        self.model = model.eval()
        self.sampler = sampler
        self.boi_id = int(boi_id)
        self.parallel = bool(parallel)
        self.guidance = float(guidance)
        self.text_bias = float(text_bias)
        self.window_batch = window_batch

    def __call__(self, frames: torch.Tensor, *, rounds: int, prompts: Sequence[TextPrompt] | None = None,
                 negatives: Sequence[TextPrompt] | None = None, seed: int = 0) -> torch.Tensor:
        if prompts is None or len(prompts) != rounds:
            got = 0 if prompts is None else len(prompts)
            raise ConfigError(
                f"the transformer interpolator needs one prompt per round ({rounds}), got {got}; build "
                "them with cogframe.core.generation.prompts.video_prompts (durations 2.0s, 1.0s, 0.5s)."
            )
        options = DecodeOptions(self.sampler, seed=seed, guidance=self.guidance,
                                text_bias=self.text_bias, parallel=self.parallel)
        return interpolate(self.model, frames, list(prompts), boi_id=self.boi_id, options=options,
                           negatives=negatives, window_batch=self.window_batch).frames


@component("interpolator", "repeat", description="Baseline: repeat each frame (no new motion).")
class RepeatInterpolator:
    """Pixel baseline: every inserted frame repeats its left neighbour."""

    space = "pixels"

    def __call__(self, frames: torch.Tensor, *, rounds: int, prompts=None, negatives=None,
                 seed: int = 0) -> torch.Tensor:
        return repeat_frames(frames, rounds)


@component("interpolator", "linear_blend", description="Baseline: average of the two neighbours.")
class LinearBlendInterpolator:
    """Pixel baseline: every inserted frame is the rounded mean of its neighbours (cross-fade)."""

    space = "pixels"

    def __call__(self, frames: torch.Tensor, *, rounds: int, prompts=None, negatives=None,
                 seed: int = 0) -> torch.Tensor:
        return blend_frames(frames, rounds)


@hookimpl
def register_components():
    return [TransformerInterpolator, RepeatInterpolator, LinearBlendInterpolator]
