"""The super-resolution attention: the sparse ``sr_local_window`` backend against the naive dense
oracle (forward and backward, 1e-5) and against a literal transcription of the release's
``sparse_attention_2d_light`` (THUDM/CogView2 sr_pipeline/dsr_model.py) with the local-attention
kernel's window and border semantics (Sleepychord/Image-Local-Attention src/kernels.cuh)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cogframe.core.model.sr_layout import SuperResolutionLayout
from cogframe.core.model.sr_masks import LocalWindows, SuperResolutionMask
from cogframe.plugins import get_registries
from cogframe.plugins.attention_local_window import LocalWindowAttention
from cogframe.plugins.attention_naive import NaiveAttention
from cogframe.registry import Needs

TOL = 1e-5


def make_layout(low_h=3, low_w=4, scale=3, text_len=2) -> SuperResolutionLayout:
    return SuperResolutionLayout(text_len, low_h, low_w, scale, 8, 64, 1)


def plus_call(layout, batch=2, heads=2, dim=8, seed=0, dtype=torch.float32):
    """Inputs shaped like the DSR model's plus-channel call: high-res queries, [low; high] keys."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, layout.high_tokens, dim, generator=g, dtype=dtype)
    k = torch.randn(batch, heads, layout.low_tokens + layout.high_tokens, dim, generator=g, dtype=dtype)
    v = torch.randn(batch, heads, layout.low_tokens + layout.high_tokens, dim, generator=g, dtype=dtype)
    q_slots = torch.arange(layout.high_start, layout.seq_len)
    k_slots = torch.arange(layout.low_start, layout.seq_len)
    return q, k, v, q_slots, k_slots


def forward_backward(backend, mask, q, k, v, q_slots, k_slots, grad):
    q, k, v = (t.clone().requires_grad_(True) for t in (q, k, v))
    out = backend(q, k, v, mask, q_slots, k_slots)
    out.backward(grad)
    return out.detach(), q.grad, k.grad, v.grad


def assert_close(a, b, tol=TOL):
    for x, y in zip(a, b):
        assert (x - y).abs().max().item() <= tol


@settings(max_examples=25, deadline=None)
@given(low_h=st.integers(1, 4), low_w=st.integers(1, 4), scale=st.integers(1, 3),
       high=st.tuples(st.integers(1, 9), st.integers(1, 6)), low=st.tuples(st.integers(1, 5), st.integers(1, 5)),
       seed=st.integers(0, 2**16))
def test_local_window_equals_naive_forward_and_backward(low_h, low_w, scale, high, low, seed):
    layout = make_layout(low_h, low_w, scale)
    mask = SuperResolutionMask(layout, LocalWindows(high=high, low=low))
    q, k, v, qs, ks = plus_call(layout, seed=seed)
    grad = torch.randn(q.shape, generator=torch.Generator().manual_seed(seed + 1))
    sparse = forward_backward(LocalWindowAttention(), mask, q, k, v, qs, ks, grad)
    dense = forward_backward(NaiveAttention(), mask, q, k, v, qs, ks, grad)
    assert_close(sparse, dense)


def release_reference(q, k, v, layout, windows):
    """``sparse_attention_2d_light`` for the high-res rows, written out query by query.

    Scores: ``f_similar`` over a ``kH x kW`` window at ``centre - (k >> 1) + i``; the high-res
    one at the query's cell, the low-res one at ``cell // scale`` with ``add_scalar`` added. The
    CUDA kernel writes -10000 for out-of-grid cells (``border="mask"``); the pure-torch unfold twin
    reads zero padding (``"zero"``): score 0 and value 0. One softmax over both; ``f_weighting``
    skips out-of-grid cells (their value is 0 either way).
    """
    nl, s = layout.low_tokens, layout.scale
    hh, wh, hl, wl = layout.high_height, layout.high_width, layout.low_height, layout.low_width
    scale_q = q / q.shape[-1] ** 0.5
    out = torch.zeros_like(q)
    for x in range(hh):
        for y in range(wh):
            qi = scale_q[:, :, x * wh + y]
            scores, values = [], []
            for grid, centre, size, rows, cols, offset, add in (
                    ("low", (x // s, y // s), windows.low, hl, wl, 0, windows.add_scalar),
                    ("high", (x, y), windows.high, hh, wh, nl, 0.0)):
                for i in range(size[0]):
                    for j in range(size[1]):
                        kx, ky = centre[0] - (size[0] >> 1) + i, centre[1] - (size[1] >> 1) + j
                        if 0 <= kx < rows and 0 <= ky < cols:
                            idx = offset + kx * cols + ky
                            scores.append((qi * k[:, :, idx]).sum(-1) + add)
                            values.append(v[:, :, idx])
                        else:
                            fill = -10000.0 if windows.border.value == "mask" else 0.0 + add
                            scores.append(torch.full(qi.shape[:2], fill, dtype=q.dtype))
                            values.append(torch.zeros_like(v[:, :, 0]))
            probs = torch.softmax(torch.stack(scores, -1), -1)
            out[:, :, x * wh + y] = (probs.unsqueeze(-1) * torch.stack(values, -2)).sum(-2)
    return out


@pytest.mark.parametrize("border", ["mask", "zero"])
@pytest.mark.parametrize("add_scalar", [0.0, 0.7])
def test_local_window_equals_the_release_kernel_semantics(border, add_scalar):
    layout = make_layout(3, 4, 3)
    windows = LocalWindows(high=(9, 5), low=(5, 5), border=border, add_scalar=add_scalar)
    mask = SuperResolutionMask(layout, windows)
    q, k, v, qs, ks = plus_call(layout, dtype=torch.float64)
    q, k, v = (t.requires_grad_(True) for t in (q, k, v))
    got = LocalWindowAttention()(q, k, v, mask, qs, ks)
    want = release_reference(q, k, v, layout, windows)
    assert (got - want).abs().max().item() < 1e-10
    grad = torch.randn_like(got)
    g_got = torch.autograd.grad(got, (q, k, v), grad)
    g_want = torch.autograd.grad(want, (q, k, v), grad)
    assert_close(g_got, g_want, 1e-10)


def test_zero_border_differs_from_mask_at_the_edge_only():
    layout = make_layout(6, 6, 3)
    q, k, v, qs, ks = plus_call(layout)
    masked = LocalWindowAttention()(q, k, v, SuperResolutionMask(layout, LocalWindows()), qs, ks)
    zero = LocalWindowAttention()(q, k, v, SuperResolutionMask(layout, LocalWindows(border="zero")), qs, ks)
    n_low, n_high = SuperResolutionMask(layout, LocalWindows()).phantom_keys(qs)
    inner = (n_low + n_high) == 0
    assert bool(inner.any()) and not bool(inner.all())
    assert torch.allclose(masked[:, :, inner], zero[:, :, inner])
    assert not torch.allclose(masked[:, :, ~inner], zero[:, :, ~inner])


def test_fallback_rows_equal_naive():
    """Text and low-res rows (and any non-standard slot set) take the exact dense path."""
    layout = make_layout()
    mask = SuperResolutionMask(layout, LocalWindows(lowres="causal"))
    g = torch.Generator().manual_seed(3)
    base = torch.arange(layout.high_start)
    q = torch.randn(1, 2, base.numel(), 8, generator=g)
    k, v = torch.randn_like(q), torch.randn_like(q)
    valid = torch.tensor([[False, True]])
    got = LocalWindowAttention()(q, k, v, mask, base, base, valid)
    want = NaiveAttention()(q, k, v, mask, base, base, valid)
    assert (got - want).abs().max().item() <= TOL
    sub = torch.arange(layout.high_start + 2, layout.seq_len)  # partial high-res rows
    all_keys = layout.all_slots()
    q2 = torch.randn(1, 2, sub.numel(), 8, generator=g)
    k2, v2 = torch.randn(1, 2, all_keys.numel(), 8, generator=g), torch.randn(1, 2, all_keys.numel(), 8, generator=g)
    assert (LocalWindowAttention()(q2, k2, v2, mask, sub, all_keys)
            - NaiveAttention()(q2, k2, v2, mask, sub, all_keys)).abs().max().item() <= TOL


def test_dropout_and_bfloat16_run():
    layout = make_layout()
    mask = SuperResolutionMask(layout)
    q, k, v, qs, ks = plus_call(layout)
    q.requires_grad_(True)
    out = LocalWindowAttention()(q, k, v, mask, qs, ks, dropout_p=0.5)
    out.sum().backward()
    assert bool(torch.isfinite(q.grad).all())
    assert not torch.allclose(out, LocalWindowAttention()(q, k, v, mask, qs, ks))
    qb, kb, vb = (t.detach().bfloat16() for t in (q, k, v))
    low = LocalWindowAttention()(qb, kb, vb, mask, qs, ks)
    ref = NaiveAttention()(q.detach(), k, v, mask, qs, ks)
    assert low.dtype == torch.bfloat16 and (low.float() - ref).abs().max().item() < 0.05


def test_registered_with_its_capabilities():
    regs = get_registries()
    spec = regs.get("attention", "sr_local_window")
    assert spec.capabilities.masks == ("super_resolution",)
    need = Needs(device="cpu", dtype="float32", backward=True, mask="super_resolution")
    assert spec.capabilities.unmet(need) == []
    assert regs.get("attention", "swin3d").capabilities.unmet(need)  # it does not claim this mask
    assert regs.get("attention", "sdpa").capabilities.unmet(need) == []  # dense: every mask
    assert isinstance(regs.build("attention", {"name": "sr_local_window"}), LocalWindowAttention)
