"""Classifier-free guidance for the video stages (THUDM/CogVideo cogvideo_pipeline.py).

CogVideo runs a second, "negative" branch with its own prompt (``"{dur}" <n> "视频"``, just
"video", with no caption) and its own KV cache, and mixes the two next-token logits::

    logits = l_neg + g * (l_cond - l_neg)

There is no condition dropout in training: the generic prompt plays the unconditional role.
"""

from __future__ import annotations

import torch

from cogframe.errors import ConfigError

__all__ = ["combine_guidance", "check_guidance"]


def combine_guidance(cond: torch.Tensor, neg: torch.Tensor, scale: float) -> torch.Tensor:
    """``l_neg + scale * (l_cond - l_neg)``, written as ``l_cond + (scale - 1) * (l_cond - l_neg)``.

    The two forms are equal in exact arithmetic; the second returns ``cond`` bit for bit at
    ``scale = 1`` (``0 * finite = 0``), so guidance 1 is exactly plain decoding even though
    the negative branch still runs.
    """
    if cond.shape != neg.shape:
        raise ConfigError(
            f"the conditional and negative branches produced logits of shapes {tuple(cond.shape)} "
            f"and {tuple(neg.shape)}; both prompts must have the same batch size (or a negative "
            "batch of 1)."
        )
    return cond + (scale - 1.0) * (cond - neg)


def check_guidance(scale: float, has_negative: bool) -> None:
    """Raise ConfigError for a guidance scale that needs a negative prompt that is missing."""
    if float(scale) != 1.0 and not has_negative:
        raise ConfigError(
            f"guidance {scale} needs a negative prompt (CogVideo uses the duration prefix plus "
            "'video'); pass negative=... or set guidance to 1."
        )
