"""3D shifted-window attention (arXiv 2205.15868, Sec. 3.2), computed window by window.

The temporal channel of CogVideo's interpolation model attends inside ``(rows, cols)`` windows
that span every frame, shifted by half a window on odd layers. Its dense mask is mostly False: at
20x20 tokens and 10x10 windows a frame query can see a quarter of the frame keys at most. This
backend never builds the ``S x S`` mask; it gathers each window's queries and keys (plus the text
keys, joined into the same softmax, as the release's ``attention_localframe_and_text``) and runs one fused
``scaled_dot_product_attention`` over all windows, so time and memory are
``O(frame tokens x (text + frames x window area))`` instead of ``O(S^2)``.

Calls that are not window-shaped fall back to the exact dense path (``scaled_dot_product_attention``
with :func:`~cogframe.core.model.attention.dense_bias`), see :class:`Swin3dAttention`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cogframe.core.model.attention import check_attention_inputs, default_scale, dense_bias, dense_sdpa_attention
from cogframe.core.model.masks import MaskSpec
from cogframe.errors import ShapeError
from cogframe.hookspecs import hookimpl
from cogframe.plugins._bounded_cache import BoundedCache
from cogframe.plugins._swin3d_windows import WindowPartition, build_partition
from cogframe.registry import Capabilities, component

__all__ = ["Swin3dAttention"]


@component(
    "attention",
    "swin3d",
    description="3D shifted-window attention computed per window (O(S x window)); dense fallback.",
    capabilities=Capabilities(
        devices=("cpu", "cuda"), dtypes=("float32", "float64", "bfloat16", "float16"),
        backward=True, masks=("sequential", "interpolation"),
        extra={"fast_path": "temporal rules with a window, whole-frame queries",
               "fallback": "exact dense sdpa for other masks and partial-frame (decoding) queries"},
    ),
)
class Swin3dAttention:
    """Window-by-window attention for the windowed temporal masks; exact for every call.

    Fast path: a temporal rule (``sequential`` / ``interpolation``) with a window, and query rows
    whose frame slots are whole frames, in any order (training: ``arange(seq_len)`` or its frame
    part; stage-2 inference: the reordered full sequence or the given-frame prefix). Keys may be
    any set of distinct slots.

    Fallback, exact: dense ``scaled_dot_product_attention`` with the dense bias, for everything
    else: spatial rules, masks without a window, and queries that cover frames only partly (a
    KV-cached decoding step). Dense is the right tool there: with a handful of queries the
    ``Sq x Sk`` mask is small, and gathering each query's visible keys would need that same
    predicate evaluation plus a K/V copy of the same order as the attention it would save.

    Args:
        cache_size: How many window partitions (index tables plus the per-window mask) to keep. A model
            calls the same mask in every layer of one parity, so two entries serve a whole forward;
            0 rebuilds the partition on every call.
    """

    def __init__(self, cache_size: int = 4):
        self._plans: BoundedCache[WindowPartition | None] = BoundedCache(cache_size)

    def __call__(self, q, k, v, mask: MaskSpec, q_slots, k_slots, text_valid=None, *,
                 scale=None, dropout_p=0.0, text_bias=0.0):
        check_attention_inputs(q, k, v, q_slots, k_slots)
        plan = self._plan(mask, q_slots, k_slots, q.dtype, q.device, float(text_bias))
        if plan is None:
            return dense_sdpa_attention(q, k, v, mask, q_slots, k_slots, text_valid, scale=scale,
                                        dropout_p=dropout_p, text_bias=text_bias)
        return _window_attention(q, k, v, plan, mask, q_slots, k_slots, text_valid,
                                 scale=default_scale(q, scale), dropout_p=dropout_p, text_bias=text_bias)

    def _plan(self, mask, q_slots, k_slots, dtype, device, text_bias) -> WindowPartition | None:
        if mask.window is None or not mask.is_temporal:
            return None  # skip hashing the slot tables for calls that can never be windowed
        key = (mask, dtype, str(device), text_bias, q_slots.cpu().numpy().tobytes(),
               k_slots.cpu().numpy().tobytes())
        return self._plans.get(key, lambda: build_partition(mask, q_slots, k_slots, dtype, device, text_bias))


def _shared_text_valid(mask: MaskSpec, text_valid, batch: int, device) -> torch.Tensor | None:
    """The ``[text_len]`` padding every sample shares, or None when samples differ."""
    text_valid = mask.layout.check_text_valid(text_valid, device=device)
    if text_valid.shape[0] not in (1, batch):
        raise ShapeError(
            f"text_valid has batch {text_valid.shape[0]} but q has batch {batch}: dimension 0 must "
            "match (or be 1 to share one padding pattern)."
        )
    if text_valid.shape[0] == 1 or bool((text_valid == text_valid[:1]).all()):
        return text_valid[0]
    return None


def _keys_and_bias(plan: WindowPartition, mask: MaskSpec, k_slots, text_valid, batch: int):
    """Rows of k/v to gather per window, the additive mask, and whether the batch shares it.

    Shared padding (one sample, or identical rows): padded text keys are simply not gathered,
    so the cached bias serves as a column slice (its text columns are all equal) and no
    per-call mask is allocated. Differing padding: every sample gets a copy of the bias with its
    pad columns at -inf, ``[B * nW, 1, Nq, n_text + Nk]``.
    """
    nw, n_text = plan.windows, plan.text_keys
    shared = _shared_text_valid(mask, text_valid, batch, k_slots.device)
    if shared is not None:
        text_rows = plan.text_k_rows[shared[k_slots[plan.text_k_rows]]]
        bias = plan.bias[..., n_text - text_rows.numel():].unsqueeze(1)
    else:
        text_rows = plan.text_k_rows
        valid = mask.layout.check_text_valid(text_valid)[:, k_slots[text_rows]]
        bias = plan.bias.unsqueeze(0).repeat(batch, 1, 1, 1)
        bias[..., :n_text].masked_fill_(~valid[:, None, None, :], float("-inf"))
        bias = bias.view(batch * nw, 1, plan.q_tokens, -1)
    k_index = torch.cat([text_rows.expand(nw, -1), plan.k_frame_index], dim=1).flatten()
    return k_index, bias, shared is not None


def _to_windows(t: torch.Tensor, fold_batch_into_heads: bool) -> torch.Tensor:
    """``[B, H, nW, N, D]`` -> ``[nW, B*H, N, D]`` (shared mask) or ``[B*nW, H, N, D]``."""
    batch, heads, nw, n, dim = t.shape
    if fold_batch_into_heads:
        return t.permute(2, 0, 1, 3, 4).reshape(nw, batch * heads, n, dim)
    return t.permute(0, 2, 1, 3, 4).reshape(batch * nw, heads, n, dim)


def _from_windows(t: torch.Tensor, batch: int, fold_batch_into_heads: bool) -> torch.Tensor:
    """Inverse of :func:`_to_windows`, flattened to ``[B, H, nW * N, D]``."""
    n, dim = t.shape[-2:]
    if fold_batch_into_heads:
        t = t.view(t.shape[0], batch, -1, n, dim).permute(1, 2, 0, 3, 4)
    else:
        t = t.view(batch, -1, t.shape[1], n, dim).permute(0, 2, 1, 3, 4)
    return t.reshape(batch, t.shape[1], -1, dim)


def _window_attention(q, k, v, plan: WindowPartition, mask, q_slots, k_slots, text_valid, *, scale,
                      dropout_p, text_bias):
    """Per-window attention of the frame queries plus dense text-only attention of text queries."""
    batch, heads, _, dim = q.shape
    nw, nq = plan.windows, plan.q_tokens
    k_index, bias, shared = _keys_and_bias(plan, mask, k_slots, text_valid, batch)
    nk = k_index.numel() // nw
    qw = q.index_select(2, plan.q_index).view(batch, heads, nw, nq, dim)
    kw = k.index_select(2, k_index).view(batch, heads, nw, nk, dim)
    vw = v.index_select(2, k_index).view(batch, heads, nw, nk, dim)
    # With one mask for every sample, fold the batch into the heads so the cached per-window
    # bias broadcasts as is.
    out = F.scaled_dot_product_attention(
        _to_windows(qw, shared), _to_windows(kw, shared), _to_windows(vw, shared),
        attn_mask=bias, dropout_p=dropout_p, scale=scale)
    out = _from_windows(out, batch, shared)
    if plan.text_q_rows.numel():
        # Text queries see only text (the release's text rows): a small dense problem over the text keys.
        text_mask = dense_bias(mask, q_slots[plan.text_q_rows], k_slots[plan.text_k_rows],
                               text_valid, dtype=q.dtype, text_bias=text_bias)
        out_text = F.scaled_dot_product_attention(
            q.index_select(2, plan.text_q_rows), k.index_select(2, plan.text_k_rows),
            v.index_select(2, plan.text_k_rows), attn_mask=text_mask, dropout_p=dropout_p,
            scale=scale)
        out = torch.cat([out, out_text], dim=2)
    return out.index_select(2, plan.out_index)


@hookimpl
def register_components():
    return [Swin3dAttention]
