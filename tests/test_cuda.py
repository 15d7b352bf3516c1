"""CUDA checks (marker ``cuda``): every attention backend on the GPU against ``naive``.

Skipped without CUDA. ``benchmarks/gpu_check.py`` runs them on a GPU machine; with
``COGFRAME_CUDA_TEST_DEVICE=cpu`` (what ``gpu_check.py --device cpu --quick`` sets in CI) the same
tests run on the CPU, so they cannot rot where no GPU is lent.

Each backend runs the two calls the model makes in training (all slots through the spatial mask,
frame queries through a windowed, shifted temporal mask, with left text padding) in fp32 and bf16,
forward and, where it declares backward on the device, backward; the reference is ``naive`` in
fp32 on the same inputs. TF32 is off so fp32 is compared at 1e-4; bf16 at 3e-2 (8 mantissa bits).
"""

from __future__ import annotations

import os

import pytest
import torch

from cogframe.core.model.layout import Stage, TokenLayout
from cogframe.core.model.masks import TemporalConfig, spatial_mask, temporal_mask
from cogframe.plugins import get_registries

DEVICE = os.environ.get("COGFRAME_CUDA_TEST_DEVICE", "cuda")
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                       reason="no CUDA device (set COGFRAME_CUDA_TEST_DEVICE=cpu to run these on the CPU)"),
]

BACKENDS = ("sdpa", "swin3d", "flex", "flex_compiled", "xformers")
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 3e-2}


@pytest.fixture(autouse=True)
def _no_tf32():
    if DEVICE != "cuda":
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _backend(name: str):
    regs = get_registries()
    base = "flex" if name == "flex_compiled" else name
    reason = regs.get("attention", base).unavailable_reason()
    if reason is not None:
        pytest.skip(f"{base} is unavailable here: {reason}")
    node = {"name": base, **({"compile": True} if name == "flex_compiled" else {})}
    return regs.build("attention", node), regs.get("attention", base)


def _calls(stage: Stage):
    """(mask, q_slots, k_slots) of the model's two training calls on a small layout."""
    text_len, frames, h, w = 8, 3, 6, 6
    tpf = h * w
    layout = TokenLayout(text_len, frames, h, w, text_len, text_len + tpf, (frames - 1) * tpf)
    slots = torch.arange(layout.seq_len)
    temporal = temporal_mask(layout, stage, 1, TemporalConfig((3, 3), (1, 1), None))
    return layout, [(spatial_mask(layout, stage), slots, slots),
                    (temporal, slots[text_len:], slots)]


@pytest.mark.parametrize("stage", [Stage.SEQUENTIAL, Stage.INTERPOLATION], ids=lambda s: s.value)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", BACKENDS)
def test_backend_matches_naive(name, dtype, stage):
    backend, spec = _backend(name)
    if spec.capabilities.dtypes and str(dtype).removeprefix("torch.") not in spec.capabilities.dtypes:
        pytest.skip(f"{spec.name} does not declare {dtype}")
    naive = get_registries().build("attention", {"name": "naive"})
    layout, calls = _calls(stage)
    backward = spec.capabilities.backward_on(torch.device(DEVICE).type)
    g = torch.Generator().manual_seed(0)
    text_valid = torch.ones(2, layout.text_len, dtype=torch.bool)
    text_valid[1, :3] = False  # left padding on one sample
    text_valid = text_valid.to(DEVICE)
    for mask, q_slots, k_slots in calls:
        shape_q, shape_k = (2, 2, len(q_slots), 16), (2, 2, len(k_slots), 16)
        q32, k32, v32 = (torch.randn(s, generator=g).to(DEVICE) for s in (shape_q, shape_k, shape_k))
        upstream = torch.randn(shape_q, generator=g).to(DEVICE)
        results = []
        for fn, cast in ((naive, torch.float32), (backend, dtype)):
            q, k, v = (t.to(cast).requires_grad_(backward) for t in (q32, k32, v32))
            out = fn(q, k, v, mask, q_slots.to(DEVICE), k_slots.to(DEVICE), text_valid)
            grads = ()
            if backward:
                grads = torch.autograd.grad(out, (q, k, v), upstream.to(out.dtype))
            results.append((out.float(), [x.float() for x in grads]))
        (ref, ref_grads), (got, got_grads) = results
        tol = TOLERANCE[dtype]
        where = f"{name} {dtype} {mask.describe()}"
        assert torch.allclose(got, ref, atol=tol, rtol=tol), (where, float((got - ref).abs().max()))
        for label, a, b in zip("qkv", got_grads, ref_grads):
            scale = max(1.0, float(b.abs().max()))  # gradients grow with the sequence length
            assert torch.allclose(a, b, atol=tol * scale, rtol=tol), (where, f"d{label}",
                                                                      float((a - b).abs().max()))
