"""The naive attention backend: explicit scores, dense mask, softmax. The fp32 oracle."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cogframe.core.model.attention import check_attention_inputs, default_scale, dense_bias
from cogframe.core.model.masks import MaskSpec
from cogframe.hookspecs import hookimpl
from cogframe.registry import Capabilities, component


@component(
    "attention",
    "naive",
    description="Explicit scores and softmax with the dense mask; the fp32 reference.",
    capabilities=Capabilities(devices=("cpu", "cuda"), dtypes=("float32", "float64", "bfloat16"),
                              backward=True, masks=None),
)
class NaiveAttention:
    """Reference attention that every other backend is tested against.

    Args:
        pb_relax: Optional PB-relax factor (the released temporal channel uses 16 in
            training). Scores are divided by it, shifted by their (detached) maximum over each
            (batch, head) block, and multiplied back: mathematically the same softmax, but the
            intermediate values stay small, which is what mattered for fp16 training.
    """

    def __init__(self, pb_relax: float | None = None):
        if pb_relax is not None and pb_relax <= 0:
            raise ValueError(f"pb_relax must be positive or null, got {pb_relax}")
        self.pb_relax = pb_relax

    def __call__(self, q, k, v, mask: MaskSpec, q_slots, k_slots, text_valid=None, *,
                 scale=None, dropout_p=0.0, text_bias=0.0):
        check_attention_inputs(q, k, v, q_slots, k_slots)
        scale = default_scale(q, scale)
        if self.pb_relax:
            scores = (q * (scale / self.pb_relax)) @ k.transpose(-1, -2)
            block_max = scores.amax(dim=(-1, -2), keepdim=True).detach()
            scores = (scores - block_max) * self.pb_relax
        else:
            scores = (q * scale) @ k.transpose(-1, -2)
        scores = scores + dense_bias(mask, q_slots, k_slots, text_valid, dtype=scores.dtype,
                                     text_bias=text_bias)
        probs = torch.softmax(scores.float(), dim=-1).to(v.dtype)
        if dropout_p:
            probs = F.dropout(probs, p=dropout_p, training=True)
        return probs @ v


@hookimpl
def register_components():
    return [NaiveAttention]
