"""The attention backend interface the model calls.

A backend computes softmax attention of queries over keys under a mask *description*
(:class:`~cogframe.core.model.masks.MaskSpec`) rather than a materialised matrix, so that structured
backends (3D windows, flex_attention) never build ``S x S`` booleans. Backends are registry
components of kind ``attention``; the model receives built instances and calls them as::

    out = backend(q, k, v, mask, q_slots, k_slots, text_valid, scale=..., dropout_p=..., text_bias=...)

* ``q``: ``[B, H, Sq, D]``; ``k``, ``v``: ``[B, H, Sk, D]``.
* ``q_slots`` / ``k_slots``: ``[Sq]`` / ``[Sk]`` natural slot indices of those rows (training:
  ``arange(seq_len)``; KV-cached decoding: the new slots against every cached slot).
* ``text_valid``: ``[B, text_len]`` bool or None (no padding).
* ``text_bias``: a constant added to every query->text logit (the released sampler's
  "log_text_attention_weights", models/cogvideo_cache_model.py); 0 in training.

Text and frame keys always share one softmax (as in the release's ``attention_localframe_and_text``).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Iterator, Protocol

import torch
import torch.nn.functional as F

from cogframe.core.model.masks import MaskSpec
from cogframe.errors import ShapeError

__all__ = [
    "AttentionBackend",
    "check_attention_inputs",
    "default_scale",
    "dense_bias",
    "dense_sdpa_attention",
    "shared_dense_masks",
]

# Dense masks built within the current ``shared_dense_masks`` block (None outside one).
_SHARED_MASKS: contextvars.ContextVar[list | None] = contextvars.ContextVar(
    "cogframe_shared_dense_masks", default=None)


@contextlib.contextmanager
def shared_dense_masks() -> Iterator[None]:
    """Within the block, :func:`dense_bias` builds each distinct mask once and reuses it.

    The model opens one block per forward pass: its layers call their backends with equal
    masks (the spatial mask is the same at every layer) on the same slot tensors, so the
    dense mask of a pass need not be rebuilt per layer. Entries match on an equal
    :class:`MaskSpec` and on the *same* slot and ``text_valid`` tensor objects, which the
    block keeps alive, so nothing built for other inputs is ever reused; they are dropped
    when the block ends. Callers must not modify those tensors inside the block.
    """
    token = _SHARED_MASKS.set([])
    try:
        yield
    finally:
        _SHARED_MASKS.reset(token)


class AttentionBackend(Protocol):
    """What the model needs from an attention backend."""

    def __call__(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: MaskSpec,
        q_slots: torch.Tensor,
        k_slots: torch.Tensor,
        text_valid: torch.Tensor | None = None,
        *,
        scale: float | None = None,
        dropout_p: float = 0.0,
        text_bias: float = 0.0,
    ) -> torch.Tensor:
        """Return ``[B, H, Sq, D]`` attention outputs."""
        ...


def default_scale(q: torch.Tensor, scale: float | None) -> float:
    """``1/sqrt(head_dim)`` unless a scale is given."""
    return 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)


def check_attention_inputs(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_slots: torch.Tensor, k_slots: torch.Tensor
) -> None:
    """Raise a ShapeError naming the dimension when q/k/v/slots disagree."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ShapeError(f"{name} must be [batch, heads, seq, head_dim], got {tuple(t.shape)}.")
    if k.shape != v.shape:
        raise ShapeError(f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}.")
    for dim, label in ((0, "batch"), (1, "heads"), (3, "head_dim")):
        if q.shape[dim] != k.shape[dim]:
            raise ShapeError(
                f"q and k disagree in dimension {dim} ({label}): {q.shape[dim]} vs {k.shape[dim]}."
            )
    if q_slots.shape != (q.shape[2],):
        raise ShapeError(
            f"q_slots must have shape [{q.shape[2]}] (dimension 2 of q), got {tuple(q_slots.shape)}."
        )
    if k_slots.shape != (k.shape[2],):
        raise ShapeError(
            f"k_slots must have shape [{k.shape[2]}] (dimension 2 of k), got {tuple(k_slots.shape)}."
        )


def dense_bias(
    mask: MaskSpec,
    q_slots: torch.Tensor,
    k_slots: torch.Tensor,
    text_valid: torch.Tensor | None,
    *,
    dtype: torch.dtype,
    text_bias: float = 0.0,
) -> torch.Tensor:
    """Additive ``[B, 1, Sq, Sk]`` float mask: 0 (or ``text_bias`` on text keys) / -inf.

    Every row has at least one allowed key (the mask library guarantees it), so -inf never
    produces an all-masked softmax row. Inside :func:`shared_dense_masks` the result is shared
    with later calls of the same inputs: treat it as read-only.
    """
    shared = _SHARED_MASKS.get()
    if shared is not None:
        for entry in shared:
            if (entry[1] is q_slots and entry[2] is k_slots and entry[3] is text_valid
                    and entry[4] == dtype and entry[5] == text_bias and entry[0] == mask):
                return entry[6]
    bias = _dense_bias(mask, q_slots, k_slots, text_valid, dtype=dtype, text_bias=text_bias)
    if shared is not None:
        shared.append((mask, q_slots, k_slots, text_valid, dtype, text_bias, bias))
    return bias


def _dense_bias(mask, q_slots, k_slots, text_valid, *, dtype, text_bias) -> torch.Tensor:
    allowed = mask.dense(q_slots, k_slots, text_valid)
    bias = torch.zeros(allowed.shape, dtype=dtype, device=q_slots.device)
    if text_bias:
        is_text_key = (k_slots < mask.layout.text_len).view(1, 1, -1)
        bias = bias + is_text_key.to(dtype) * text_bias
    bias = bias.masked_fill(~allowed, float("-inf"))
    return bias.unsqueeze(1)


def dense_sdpa_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: MaskSpec,
    q_slots: torch.Tensor,
    k_slots: torch.Tensor,
    text_valid: torch.Tensor | None = None,
    *,
    scale: float | None = None,
    dropout_p: float = 0.0,
    text_bias: float = 0.0,
) -> torch.Tensor:
    """Exact attention with a dense additive mask through ``F.scaled_dot_product_attention``.

    The model's default backend (so core works without the registry) and the body of the
    ``sdpa`` plugin. O(Sq * Sk) memory for the mask.
    """
    check_attention_inputs(q, k, v, q_slots, k_slots)
    bias = dense_bias(mask, q_slots, k_slots, text_valid, dtype=q.dtype, text_bias=text_bias)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p,
                                          scale=default_scale(q, scale))
