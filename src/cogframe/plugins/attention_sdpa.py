"""Attention through torch's fused ``scaled_dot_product_attention`` with the dense mask."""

from __future__ import annotations

from cogframe.core.model.attention import dense_sdpa_attention
from cogframe.hookspecs import hookimpl
from cogframe.registry import Capabilities, component


@component(
    "attention",
    "sdpa",
    description="torch scaled_dot_product_attention with a dense additive mask.",
    capabilities=Capabilities(devices=("cpu", "cuda"), dtypes=("float32", "float64", "bfloat16"),
                              backward=True, masks=None),
)
class SdpaAttention:
    """Dense-mask attention via ``F.scaled_dot_product_attention`` (O(S^2) memory for the mask)."""

    def __call__(self, q, k, v, mask, q_slots, k_slots, text_valid=None, *,
                 scale=None, dropout_p=0.0, text_bias=0.0):
        return dense_sdpa_attention(q, k, v, mask, q_slots, k_slots, text_valid, scale=scale,
                                    dropout_p=dropout_p, text_bias=text_bias)


@hookimpl
def register_components():
    return [SdpaAttention]
