"""Local-window attention for the high-res rows of CogView2's direct super-resolution model.

A high-res query sees a small window of high-res keys and a small window of low-res keys
(:mod:`cogframe.core.model.sr_masks`); the dense mask of a 60x60 grid over 20x20 + 60x60 keys is
over 98 % False. This backend never builds it, nor any per-query copy of keys: the low-res
window, shared by the ``scale x scale`` queries of one low-res cell, is gathered once per cell
(``unfold`` of the zero-padded low-res grid) and used in small batched matmuls; the high-res
window is a loop over its offsets, each reading one shifted view of the zero-padded high-res
keys/values. A custom backward does the same in reverse and saves only the inputs and the
``[heads, rows, cols, window]`` probabilities. Zero padding is exactly the ``border="zero"`` twin;
``border="mask"`` puts -inf on out-of-grid offsets; ``add_scalar`` is a bias on the low-res
offsets. Time and memory grow with ``cells x window``, not ``cells^2``.

Other calls (text and low-res rows, partial or reordered slots) take the exact dense path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cogframe.core.model.attention import check_attention_inputs, default_scale, dense_sdpa_attention
from cogframe.core.model.sr_masks import Border, SuperResolutionMask, window_span
from cogframe.hookspecs import hookimpl
from cogframe.plugins._bounded_cache import BoundedCache
from cogframe.registry import Capabilities, component

__all__ = ["LocalWindowAttention", "local_window_attention"]


@component(
    "attention",
    "sr_local_window",
    description="Super-resolution local 2-D windows, O(cells x window) time and memory; dense fallback.",
    capabilities=Capabilities(
        devices=("cpu", "cuda"), dtypes=("float32", "float64", "bfloat16", "float16"),
        backward=True, masks=("super_resolution",),
        extra={"fast_path": "high-res queries of a super_resolution mask over [low-res; high-res] keys",
               "fallback": "exact dense sdpa for text and low-res rows",
               "borders": "mask, zero"},
    ),
)
class LocalWindowAttention:
    """Local-window attention for the DSR plus channel; exact for every call.

    Fast path: a :class:`~cogframe.core.model.sr_masks.SuperResolutionMask`, queries = every
    high-res slot in raster order, keys = every low-res slot then every high-res slot (how the
    DSR model calls its plus channel). Both borders and ``add_scalar`` are exact here; dropout
    draws its own keep mask (the same distribution as the dense path, not the same draw).

    Fallback: dense ``scaled_dot_product_attention`` with the dense mask (the base rows, or any
    other slot set); it refuses, with a message, what a boolean mask cannot express.

    Args:
        cache_size: How many offset masks to keep (one per mask, dtype and device).
    """

    def __init__(self, cache_size: int = 4):
        self._biases: BoundedCache[torch.Tensor] = BoundedCache(cache_size)

    def __call__(self, q, k, v, mask, q_slots, k_slots, text_valid=None, *,
                 scale=None, dropout_p=0.0, text_bias=0.0):
        check_attention_inputs(q, k, v, q_slots, k_slots)
        if isinstance(mask, SuperResolutionMask) and _is_tile_call(mask, q_slots, k_slots):
            return local_window_attention(q, k, v, mask, scale=default_scale(q, scale), dropout_p=dropout_p,
                                          bias=self._bias(mask, q.dtype, q.device))
        return dense_sdpa_attention(q, k, v, mask, q_slots, k_slots, text_valid, scale=scale,
                                    dropout_p=dropout_p, text_bias=text_bias)

    def _bias(self, mask: SuperResolutionMask, dtype, device) -> torch.Tensor:
        return self._biases.get((mask, dtype, str(device)), lambda: offset_bias(mask, dtype=dtype, device=device))


def _is_tile_call(mask: SuperResolutionMask, q_slots: torch.Tensor, k_slots: torch.Tensor) -> bool:
    layout = mask.layout
    if q_slots.numel() != layout.high_tokens or k_slots.numel() != layout.low_tokens + layout.high_tokens:
        return False
    high = torch.arange(layout.high_start, layout.seq_len, device=q_slots.device)
    keys = torch.arange(layout.low_start, layout.seq_len, device=k_slots.device)
    return bool(torch.equal(q_slots, high)) and bool(torch.equal(k_slots, keys))


class _Geometry:
    """Grid sizes and window offsets of one mask: what the loops below iterate over."""

    def __init__(self, mask: SuperResolutionMask):
        layout, win = mask.layout, mask.windows
        self.s, self.hl, self.wl = layout.scale, layout.low_height, layout.low_width
        self.hh, self.wh = layout.high_height, layout.high_width
        self.low_win, self.high_win = win.low, win.high
        (lr0, lr1), (lc0, lc1) = window_span(win.low[0]), window_span(win.low[1])
        (hr0, hr1), (hc0, hc1) = window_span(win.high[0]), window_span(win.high[1])
        # F.pad order for [N, rows, cols, D]: (D, D, left, right, top, bottom).
        self.low_pad = (0, 0, -lc0, lc1, -lr0, lr1)
        self.high_pad = (0, 0, -hc0, hc1, -hr0, hr1)
        # Offset o: (row start, col start) of its slice in the padded grid; low-res ones first.
        self.low_offsets = [(a, b) for a in range(win.low[0]) for b in range(win.low[1])]
        self.high_offsets = [(a, b) for a in range(win.high[0]) for b in range(win.high[1])]
        self.n_low = len(self.low_offsets)


def offset_bias(mask: SuperResolutionMask, *, dtype, device) -> torch.Tensor:
    """Additive ``[offsets, high rows, high cols]`` mask of the window offsets.

    Offset columns: the low-res window (row-major), then the high-res window (row-major).
    0 (``add_scalar`` on low-res offsets) where the offset lands in the grid; an out-of-grid offset
    is -inf under ``border="mask"`` and a zero key (score 0, value 0) under ``"zero"``.
    """
    layout, win = mask.layout, mask.windows
    s = layout.scale
    x = torch.arange(layout.high_height, device=device).view(-1, 1, 1)
    y = torch.arange(layout.high_width, device=device).view(1, -1, 1)

    def inside(rows, cols, size, span_r, span_c, step, height, width):
        a = torch.arange(size[0], device=device).repeat_interleave(size[1]).view(1, 1, -1)
        b = torch.arange(size[1], device=device).repeat(size[0]).view(1, 1, -1)
        kx = torch.div(rows, step, rounding_mode="floor") + span_r + a
        ky = torch.div(cols, step, rounding_mode="floor") + span_c + b
        return (kx >= 0) & (kx < height) & (ky >= 0) & (ky < width)

    low_in = inside(x, y, win.low, window_span(win.low[0])[0], window_span(win.low[1])[0], s,
                    layout.low_height, layout.low_width)
    high_in = inside(x, y, win.high, window_span(win.high[0])[0], window_span(win.high[1])[0], 1,
                     layout.high_height, layout.high_width)
    allowed = torch.cat([low_in, high_in], dim=-1)
    bias = torch.zeros(allowed.shape, dtype=dtype, device=device)
    if win.add_scalar:
        bias[..., : low_in.shape[-1]] = win.add_scalar
    if win.border is not Border.ZERO:  # "zero": out-of-grid offsets read zero keys, score 0
        bias = bias.masked_fill(~allowed, float("-inf"))
    return bias.permute(2, 0, 1).contiguous()


def _to_tiles(t: torch.Tensor, geo: _Geometry) -> torch.Tensor:
    """``[N, high rows, high cols, C]`` -> ``[N, low rows, low cols, scale^2, C]`` (one tile per low cell)."""
    n, c = t.shape[0], t.shape[-1]
    return (t.reshape(n, geo.hl, geo.s, geo.wl, geo.s, c).permute(0, 1, 3, 2, 4, 5)
            .reshape(n, geo.hl, geo.wl, geo.s * geo.s, c))


def _from_tiles(t: torch.Tensor, geo: _Geometry) -> torch.Tensor:
    """Inverse of :func:`_to_tiles`."""
    n, c = t.shape[0], t.shape[-1]
    return (t.reshape(n, geo.hl, geo.wl, geo.s, geo.s, c).permute(0, 1, 3, 2, 4, 5)
            .reshape(n, geo.hh, geo.wh, c))


def _low_windows(padded: torch.Tensor, geo: _Geometry) -> torch.Tensor:
    """Zero-padded ``[N, rows, cols, D]`` low-res grid -> ``[N, low rows, low cols, window, D]``."""
    n, dim = padded.shape[0], padded.shape[-1]
    rows, cols = geo.low_win
    return (padded.unfold(1, rows, 1).unfold(2, cols, 1).permute(0, 1, 2, 4, 5, 3)
            .reshape(n, geo.hl, geo.wl, rows * cols, dim))


def _fold_low(windows: torch.Tensor, geo: _Geometry, padded_like: torch.Tensor) -> torch.Tensor:
    """Adjoint of :func:`_low_windows`: sum each window entry back onto its padded cell."""
    out = torch.zeros_like(padded_like)
    per = windows.view(*windows.shape[:3], geo.low_win[0], geo.low_win[1], windows.shape[-1])
    for a, b in geo.low_offsets:
        out[:, a:a + geo.hl, b:b + geo.wl] += per[:, :, :, a, b]
    return out


def _last(offset_major: torch.Tensor) -> torch.Tensor:
    """``[offsets, N, rows, cols]`` -> ``[N, rows, cols, offsets]`` (a view)."""
    return offset_major.permute(1, 2, 3, 0)


class _LocalWindowFunction(torch.autograd.Function):
    """One softmax over the low-res window and the high-res window of every high-res query.

    The low-res window is shared by the ``scale x scale`` queries of a low-res cell, so that part
    runs as small batched matmuls per cell over the gathered low-res window (``unfold`` of the
    zero-padded low-res grid: ``cells x window`` keys, a fraction of the high-res keys). The
    high-res window differs per query: that part loops over its offsets, reading one shifted view
    of the zero-padded high-res keys/values per step, so no per-query key copy is ever built.
    Backward recomputes the small low-res gathers and saves only the inputs and the
    probabilities. Scores and probabilities are stored offset-major, ``[offsets, N, rows, cols]``,
    so each step of the loops reads and writes one contiguous plane.
    """

    @staticmethod
    def forward(ctx, q, k_low, v_low, k_high, v_high, bias, geo: _Geometry, scale: float,
                dropout_p: float):
        hh, wh, n_low = geo.hh, geo.wh, geo.n_low
        kl, vl = F.pad(k_low, geo.low_pad), F.pad(v_low, geo.low_pad)
        kh, vh = F.pad(k_high, geo.high_pad), F.pad(v_high, geo.high_pad)
        qs = q * scale
        scores = q.new_empty(n_low + len(geo.high_offsets), q.shape[0], hh, wh)
        low = _from_tiles(_to_tiles(qs, geo) @ _low_windows(kl, geo).transpose(-1, -2), geo)
        scores[:n_low] = low.permute(3, 0, 1, 2)
        for o, (a, b) in enumerate(geo.high_offsets, start=n_low):
            scores[o] = (qs * kh[:, a:a + hh, b:b + wh]).sum(-1)
        scores += bias.unsqueeze(1)
        # Half-precision scores are normalised in float32; float32/float64 stay as they are.
        if scores.dtype in (torch.float16, torch.bfloat16):
            probs = torch.softmax(scores.float(), dim=0).to(q.dtype)
        else:
            probs = torch.softmax(scores, dim=0)
        keep = None
        weights = probs
        if dropout_p:
            keep = torch.rand_like(probs) >= dropout_p
            weights = probs * keep / (1.0 - dropout_p)
        out = _from_tiles(_to_tiles(_last(weights[:n_low]), geo) @ _low_windows(vl, geo), geo)
        for o, (a, b) in enumerate(geo.high_offsets, start=n_low):
            out.addcmul_(weights[o].unsqueeze(-1), vh[:, a:a + hh, b:b + wh])
        ctx.save_for_backward(q, kl, vl, kh, vh, probs, keep)
        ctx.geo, ctx.scale, ctx.dropout_p = geo, scale, dropout_p
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        q, kl, vl, kh, vh, probs, keep = ctx.saved_tensors
        geo, scale, p = ctx.geo, ctx.scale, ctx.dropout_p
        hh, wh, n_low = geo.hh, geo.wh, geo.n_low
        grad_out = grad_out.contiguous()
        weights = probs if keep is None else probs * keep / (1.0 - p)
        g_tiles = _to_tiles(grad_out, geo)
        d_weights = torch.empty_like(probs)
        d_low = _from_tiles(g_tiles @ _low_windows(vl, geo).transpose(-1, -2), geo)
        d_weights[:n_low] = d_low.permute(3, 0, 1, 2)
        dvl = _fold_low(_to_tiles(_last(weights[:n_low]), geo).transpose(-1, -2) @ g_tiles, geo, vl)
        dvh = torch.zeros_like(vh)
        for o, (a, b) in enumerate(geo.high_offsets, start=n_low):
            d_weights[o] = (grad_out * vh[:, a:a + hh, b:b + wh]).sum(-1)
            dvh[:, a:a + hh, b:b + wh].addcmul_(weights[o].unsqueeze(-1), grad_out)
        d_probs = d_weights if keep is None else d_weights * keep / (1.0 - p)
        # Softmax backward; the scale of the scores goes onto dS once.
        d_scores = probs * (d_probs - (d_probs * probs).sum(0, keepdim=True)) * scale
        ds_low = _to_tiles(_last(d_scores[:n_low]), geo)
        dq = _from_tiles(ds_low @ _low_windows(kl, geo), geo)
        dkl = _fold_low(ds_low.transpose(-1, -2) @ _to_tiles(q, geo), geo, kl)
        dkh = torch.zeros_like(kh)
        for o, (a, b) in enumerate(geo.high_offsets, start=n_low):
            plane = d_scores[o].unsqueeze(-1)
            dq.addcmul_(plane, kh[:, a:a + hh, b:b + wh])
            dkh[:, a:a + hh, b:b + wh].addcmul_(plane, q)

        def unpad(t, pad, height, width):
            return t[:, pad[4]:pad[4] + height, pad[2]:pad[2] + width]

        return (dq, unpad(dkl, geo.low_pad, geo.hl, geo.wl), unpad(dvl, geo.low_pad, geo.hl, geo.wl),
                unpad(dkh, geo.high_pad, hh, wh), unpad(dvh, geo.high_pad, hh, wh),
                None, None, None, None)


def local_window_attention(q, k, v, mask: SuperResolutionMask, *, scale: float, dropout_p: float = 0.0,
                           bias: torch.Tensor | None = None) -> torch.Tensor:
    """High-res queries ``[B, H, Nh, D]`` over ``[low-res; high-res]`` keys ``[B, H, Nl + Nh, D]``."""
    geo = _Geometry(mask)
    batch, heads, _, dim = q.shape
    nl, n = mask.layout.low_tokens, batch * heads
    if bias is None:
        bias = offset_bias(mask, dtype=q.dtype, device=q.device)

    def grid(t, rows, cols):
        return t.reshape(n, rows, cols, dim).contiguous()

    out = _LocalWindowFunction.apply(
        grid(q, geo.hh, geo.wh), grid(k[:, :, :nl], geo.hl, geo.wl), grid(v[:, :, :nl], geo.hl, geo.wl),
        grid(k[:, :, nl:], geo.hh, geo.wh), grid(v[:, :, nl:], geo.hh, geo.wh), bias, geo, scale,
        float(dropout_p))
    return out.view(batch, heads, geo.hh * geo.wh, dim)


@hookimpl
def register_components():
    return [LocalWindowAttention]
