"""Attention ``chunked``: exact attention over query chunks, so the mask is never S x S.

The dense backends (``naive``, ``sdpa``) build one ``[B, Sq, Sk]`` mask per call. This backend
cuts the queries into chunks of ``chunk_size`` rows and, per chunk, evaluates the mask predicate
for just those rows (``MaskSpec.dense(q_chunk, k_slots)``) and runs
``scaled_dot_product_attention`` on them: the mask and the scores held at a time are
``chunk_size x Sk`` instead of ``Sq x Sk``. Every query row is computed exactly as by the dense
backends (a row's softmax only involves its own scores), so it is exact for every mask, text
padding, text bias and call shape, with gradients through autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cogframe.core.model.attention import check_attention_inputs, default_scale
from cogframe.hookspecs import hookimpl
from cogframe.registry import Capabilities, component

__all__ = ["COMPONENTS", "ChunkedAttention"]


@component(
    "attention",
    "chunked",
    description="Exact attention over query chunks: the mask is built chunk_size x keys at a time.",
    capabilities=Capabilities(devices=("cpu", "cuda"), dtypes=("float32", "float64", "bfloat16"),
                              backward=True, masks=None, extra={"memory": "O(chunk_size x keys) mask per call"}),
)
class ChunkedAttention:
    """Query-chunked exact attention (memory bounded by ``chunk_size``).

    Args:
        chunk_size: Query rows per chunk; smaller bounds memory tighter, larger calls fewer kernels.
    """

    def __init__(self, chunk_size: int = 64) -> None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a whole number >= 1, got {chunk_size!r}")
        self.chunk_size = chunk_size

    def __call__(self, q, k, v, mask, q_slots, k_slots, text_valid=None, *,
                 scale=None, dropout_p=0.0, text_bias=0.0):
        check_attention_inputs(q, k, v, q_slots, k_slots)
        scale = default_scale(q, scale)
        # The text-key bias is the same for every query row: one [Sk] vector for all chunks.
        key_bias = torch.zeros(k_slots.shape, dtype=q.dtype, device=q.device)
        if text_bias:
            key_bias = key_bias.masked_fill(k_slots < mask.layout.text_len, float(text_bias))
        outputs = []
        for start in range(0, q.shape[2], self.chunk_size):
            stop = min(start + self.chunk_size, q.shape[2])
            allowed = mask.dense(q_slots[start:stop], k_slots, text_valid)  # [B or 1, chunk, Sk]
            bias = key_bias.expand(allowed.shape).masked_fill(~allowed, float("-inf")).unsqueeze(1)
            outputs.append(F.scaled_dot_product_attention(q[:, :, start:stop], k, v, attn_mask=bias,
                                                          dropout_p=dropout_p, scale=scale))
        return torch.cat(outputs, dim=2) if len(outputs) != 1 else outputs[0]


COMPONENTS = [ChunkedAttention]


@hookimpl
def register_components():
    return [ChunkedAttention]
