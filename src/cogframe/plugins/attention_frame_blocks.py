"""The spatial channel computed frame by frame: each frame's queries against the text and its own frame.

In CogVideo the spatial (base, CogView2) channel of a video layer lets a frame query see the
text and its own frame only (THUDM/CogVideo models/cogvideo_model.py: the base attention runs on
each frame with the text prepended). Over a whole training sequence its dense mask is block
diagonal: with 5 frames of 8x8 tokens and 16 text slots, 86 % of the ``336 x 336`` entries are
False, yet dense ``scaled_dot_product_attention`` computes every one of them, forward and
backward. This backend folds the frames into the batch instead: queries ``[B * F, H, tpf, D]``
against keys ``[text; own frame]`` (``[B * F, H, text + tpf, D]``), one fused call, so time and
memory grow with ``frames x tpf x (text + tpf)`` instead of ``(text + frames x tpf)^2``. Text
queries (which see only text) are one small dense call.

The per-frame mask is the mask library's own predicate (:meth:`MaskSpec.dense` on each frame's
slots), so both spatial rules are exact: own frame causal (stage 1, text-to-image) and the
stage-2 rule (given frames bidirectional). Calls that are not the whole layout in natural order
(a KV-cached decoding step, a reordered stage-2 pass) and temporal masks take the exact dense
path, as every backend's fallback.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cogframe.core.model.attention import check_attention_inputs, default_scale, dense_sdpa_attention
from cogframe.core.model.masks import FrameRule, MaskSpec
from cogframe.hookspecs import hookimpl
from cogframe.plugins._bounded_cache import BoundedCache
from cogframe.registry import Capabilities, component

__all__ = ["FrameBlockAttention"]

_SPATIAL_RULES = (FrameRule.OWN_FRAME_CAUSAL, FrameRule.OWN_FRAME_INTERPOLATION)


@component(
    "attention",
    "frame_blocks",
    description="Spatial channel frame by frame (text + own frame per query), O(frames x tpf x (text + tpf)); dense fallback.",
    capabilities=Capabilities(
        devices=("cpu", "cuda"), dtypes=("float32", "float64", "bfloat16", "float16"),
        backward=True, masks=("own_frame_causal", "own_frame_interpolation"),
        extra={"fast_path": "spatial rules over the whole layout in natural slot order (training, full forwards)",
               "fallback": "exact dense sdpa for other slot sets (KV-cached decoding) and other masks"},
    ),
)
class FrameBlockAttention:
    """Frame-by-frame attention for the spatial masks; exact for every call.

    Fast path: a spatial rule, queries and keys both the first ``text_len + F * tpf`` slots of
    the layout in natural order (``F >= 1`` whole frames), how a training forward calls the
    spatial channel. Dropout draws its own keep mask (the same distribution as the dense path,
    not the same draw).

    Args:
        cache_size: How many per-frame masks to keep (one per mask, frame count, dtype, device
            and text bias).
    """

    def __init__(self, cache_size: int = 4):
        self._biases: BoundedCache[torch.Tensor] = BoundedCache(cache_size)

    def __call__(self, q, k, v, mask: MaskSpec, q_slots, k_slots, text_valid=None, *,
                 scale=None, dropout_p=0.0, text_bias=0.0):
        check_attention_inputs(q, k, v, q_slots, k_slots)
        frames = self._whole_frames(mask, q_slots, k_slots)
        if frames is None:
            return dense_sdpa_attention(q, k, v, mask, q_slots, k_slots, text_valid, scale=scale,
                                        dropout_p=dropout_p, text_bias=text_bias)
        return self._by_frame(q, k, v, mask, frames, q_slots, text_valid, scale=default_scale(q, scale),
                              dropout_p=dropout_p, text_bias=float(text_bias))

    @staticmethod
    def _whole_frames(mask: MaskSpec, q_slots: torch.Tensor, k_slots: torch.Tensor) -> int | None:
        """The number of whole frames when the call is the fast path's shape, else None."""
        if mask.rule not in _SPATIAL_RULES:
            return None
        layout = mask.layout
        n = int(q_slots.numel())
        frames, rest = divmod(n - layout.text_len, layout.tokens_per_frame)
        if frames < 1 or rest or n > layout.seq_len or k_slots.numel() != n:
            return None
        natural = torch.arange(n, device=q_slots.device)
        if not (torch.equal(q_slots, natural) and (k_slots is q_slots or torch.equal(k_slots, natural))):
            return None
        return frames

    def _frame_bias(self, mask: MaskSpec, frames: int, dtype, device, text_bias: float) -> torch.Tensor:
        """:func:`_frame_bias` of this call, kept per mask, frame count, dtype, device and text bias."""
        return self._biases.get((mask, frames, dtype, str(device), text_bias),
                                lambda: _frame_bias(mask, frames, dtype, device, text_bias))

    def _by_frame(self, q, k, v, mask, frames, slots, text_valid, *, scale, dropout_p, text_bias):
        layout = mask.layout
        batch, heads, _, dim = q.shape
        n_text, tpf = layout.text_len, layout.tokens_per_frame

        def per_frame(t: torch.Tensor) -> torch.Tensor:  # [B, H, F*tpf, D] -> [B, F, H, tpf, D]
            return t[:, :, n_text:].reshape(batch, heads, frames, tpf, dim).transpose(1, 2)

        kf, vf = per_frame(k), per_frame(v)
        if n_text:  # every frame's keys are [text; own frame]
            kt = k[:, None, :, :n_text].expand(batch, frames, heads, n_text, dim)
            vt = v[:, None, :, :n_text].expand(batch, frames, heads, n_text, dim)
            kf, vf = torch.cat([kt, kf], dim=3), torch.cat([vt, vf], dim=3)
        bias = self._frame_bias(mask, frames, q.dtype, q.device, text_bias).unsqueeze(1)  # [F, 1, tpf, text+tpf]
        if n_text and text_valid is not None:
            valid = layout.check_text_valid(text_valid, device=q.device)  # [B or 1, text]
            pad = torch.zeros(valid.shape, dtype=q.dtype, device=q.device).masked_fill(~valid, float("-inf"))
            pad = F.pad(pad, (0, tpf))[:, None, None, None, :]  # [B, 1, 1, 1, text + tpf]
            bias = (bias.unsqueeze(0) + pad).expand(batch, -1, -1, -1, -1)
        else:
            bias = bias.unsqueeze(0).expand(batch, -1, -1, -1, -1)
        out = F.scaled_dot_product_attention(
            per_frame(q).reshape(batch * frames, heads, tpf, dim),
            kf.reshape(batch * frames, heads, n_text + tpf, dim),
            vf.reshape(batch * frames, heads, n_text + tpf, dim),
            attn_mask=bias.reshape(batch * frames, 1, tpf, n_text + tpf), dropout_p=dropout_p, scale=scale)
        out = out.view(batch, frames, heads, tpf, dim).transpose(1, 2).reshape(batch, heads, frames * tpf, dim)
        if not n_text:
            return out
        text_slots = slots[:n_text]
        out_text = dense_sdpa_attention(q[:, :, :n_text], k[:, :, :n_text], v[:, :, :n_text], mask, text_slots,
                                        text_slots, text_valid, scale=scale, dropout_p=dropout_p, text_bias=text_bias)
        return torch.cat([out_text, out], dim=2)


def _frame_bias(mask: MaskSpec, frames: int, dtype, device, text_bias: float) -> torch.Tensor:
    """``[F, tpf, text + tpf]`` additive mask of each frame's queries over [text; own frame], all text valid.

    Read from the mask predicate (:meth:`MaskSpec.dense`) frame by frame, so it is the dense mask's
    own entries; text padding is applied per call.
    """
    layout = mask.layout
    text = torch.arange(layout.text_len, device=device)
    rows = []
    for t in range(frames):
        r = layout.frame_range(t)
        own = torch.arange(r.start, r.stop, device=device)
        allowed = mask.dense(own, torch.cat([text, own]))[0]  # [tpf, text + tpf]
        bias = torch.zeros(allowed.shape, dtype=dtype, device=device)
        bias[:, :layout.text_len] += text_bias
        rows.append(bias.masked_fill(~allowed, float("-inf")))
    return torch.stack(rows)


@hookimpl
def register_components():
    return [FrameBlockAttention]
