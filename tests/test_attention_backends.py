"""Every available attention backend against the ``naive`` oracle (fp32, 1e-5).

Random small layouts, every mask rule (temporal windows with ragged edges, shifts, extents, both
layer parities, spatial rules), random text padding, and the call shapes the model makes: all
slots, frame queries only, KV-cache tails, whole-frame cache steps, stage-2 inference order and
its given-frame prefix.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cogframe.core.model.layout import Stage, TokenLayout
from cogframe.core.model.masks import MaskSpec, TemporalConfig, spatial_mask, temporal_mask
from cogframe.errors import ConfigError, ShapeError, UnavailableError
from cogframe.plugins import get_registries
from cogframe.plugins._swin3d_windows import axis_partition, build_partition
from cogframe.plugins.attention_xformers import build_attn_bias, xformers_unavailable_reason

ATOL = RTOL = 1e-5
QUERY_MODES = ("all", "frames", "tail", "frame_tail", "inference", "prefix")


def available_backends() -> list[str]:
    regs = get_registries()
    return [s.name for s in regs.specs("attention") if s.name != "naive" and s.unavailable_reason() is None]


def build(name: str):
    return get_registries().build("attention", {"name": name})


# ----------------------------------------------------------------------------- strategies


@st.composite
def cases(draw):
    text_len = draw(st.integers(0, 6))
    frames = draw(st.integers(1, 5))
    h, w = draw(st.integers(2, 6)), draw(st.integers(2, 6))
    tpf = h * w
    layout = TokenLayout(text_len, frames, h, w, text_len, text_len + tpf, (frames - 1) * tpf)
    stage = draw(st.sampled_from([Stage.SEQUENTIAL, Stage.INTERPOLATION]))
    layer = draw(st.integers(0, 3))
    if draw(st.integers(0, 4)) == 0:
        mask = spatial_mask(layout, stage)
    else:
        window = None
        if draw(st.integers(0, 5)):
            window = (draw(st.integers(1, h)), draw(st.integers(1, w)))
        shift = None
        if window is not None and draw(st.booleans()):
            shift = (draw(st.integers(0, window[0] - 1)), draw(st.integers(0, window[1] - 1)))
        extent = draw(st.one_of(st.none(), st.integers(0, 3)))
        mask = temporal_mask(layout, stage, layer, TemporalConfig(window, shift, extent))
    padding = draw(st.sampled_from(["none", "shared", "per_sample"]))
    pads = [draw(st.integers(0, text_len)) for _ in range(2)]
    if padding == "shared":
        pads = pads[:1]
    text_valid = torch.tensor([[i >= p for i in range(text_len)] for p in pads],
                              dtype=torch.bool).reshape(len(pads), text_len)
    if padding == "none":
        text_valid = None
    q_slots, k_slots = query_slots(draw, layout, draw(st.sampled_from(QUERY_MODES)))
    options = {"text_bias": draw(st.sampled_from([0.0, 1.4])),
               "scale": draw(st.sampled_from([None, 0.3]))}
    return mask, q_slots, k_slots, text_valid, options, draw(st.integers(0, 2**31 - 1))


def query_slots(draw, layout: TokenLayout, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q_slots, k_slots)`` of one call shape the model makes."""
    all_slots = layout.all_slots()
    if mode == "all":
        return all_slots, all_slots
    if mode == "frames":
        return all_slots[layout.text_len:], all_slots
    if mode == "tail":  # token-by-token KV-cached decoding: the newest slots against the cache
        end = draw(st.integers(1, layout.seq_len))
        n = draw(st.integers(1, min(end, 7)))
        return all_slots[end - n:end], all_slots[:end]
    if mode == "frame_tail":  # a whole frame against the cache before it
        frame = layout.frame_range(draw(st.integers(0, layout.frames - 1)))
        return all_slots[frame.start:frame.stop], all_slots[:frame.stop]
    order = layout.inference_slots(Stage.INTERPOLATION)
    if mode == "inference":
        return order, order
    prefix = layout.text_len + len(layout.prefix_frames(Stage.INTERPOLATION)) * layout.tokens_per_frame
    return order[:prefix], order[:prefix]  # stage-2 prefix pass over the given frames


def inputs(q_slots, k_slots, seed, heads=2, dim=4):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(2, heads, q_slots.numel(), dim, generator=gen)
    k = torch.randn(2, heads, k_slots.numel(), dim, generator=gen)
    v = torch.randn(2, heads, k_slots.numel(), dim, generator=gen)
    grad = torch.randn(2, heads, q_slots.numel(), dim, generator=gen)
    return q, k, v, grad


def run(backend, q, k, v, mask, q_slots, k_slots, text_valid, options, grad=None):
    """Output and (when ``grad`` is given) the input gradients of one call."""
    q, k, v = (t.clone().requires_grad_(grad is not None) for t in (q, k, v))
    out = backend(q, k, v, mask, q_slots, k_slots, text_valid, **options)
    if grad is None:
        return out.detach(), None
    return out.detach(), torch.autograd.grad(out, (q, k, v), grad)


# ----------------------------------------------------------------------------- equivalence


@settings(max_examples=60, deadline=None)
@given(cases())
def test_backends_match_naive(case):
    mask, q_slots, k_slots, text_valid, options, seed = case
    q, k, v, grad = inputs(q_slots, k_slots, seed)
    naive = build("naive")
    ref_out, ref_grads = run(naive, q, k, v, mask, q_slots, k_slots, text_valid, options, grad)
    for name in available_backends():
        backend = build(name)
        spec = get_registries().get("attention", name)
        if spec.capabilities.backward_on(q.device.type):  # flex: backward on CUDA only
            out, grads = run(backend, q, k, v, mask, q_slots, k_slots, text_valid, options, grad)
            for label, got, want in zip("qkv", grads, ref_grads):
                torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL,
                                           msg=lambda m: f"{name} d{label} ({mask.describe()}): {m}")
        else:
            with torch.no_grad():
                out, _ = run(backend, q, k, v, mask, q_slots, k_slots, text_valid, options)
        torch.testing.assert_close(out, ref_out, atol=ATOL, rtol=RTOL,
                                   msg=lambda m: f"{name} output ({mask.describe()}): {m}")


def test_every_expected_backend_is_registered():
    names = get_registries().names("attention")
    assert {"naive", "sdpa", "swin3d", "flex", "xformers"} <= set(names)
    assert {"sdpa", "swin3d"} <= set(available_backends())


# ----------------------------------------------------------------------------- swin3d


def _stage2_mask(layer=1, grid=(6, 5), window=(4, 3), frames=3, text_len=3):
    h, w = grid
    layout = TokenLayout(text_len, frames, h, w, text_len, text_len + h * w, (frames - 1) * h * w)
    return temporal_mask(layout, Stage.INTERPOLATION, layer, TemporalConfig(window=window))


@pytest.mark.parametrize("size", range(1, 10))
def test_axis_partition_keeps_each_window_bin_in_one_window(size):
    from cogframe.core.model.masks import window_bin

    for window in range(1, size + 2):
        for shift in range(window):
            order, width = axis_partition(size, window, shift)
            coords = [c for c in order if c >= 0]
            assert sorted(coords) == list(range(size))
            part = {c: i // width for i, c in enumerate(order) if c >= 0}
            bins = window_bin(torch.arange(size), window, shift).tolist()
            for a in range(size):
                for b in range(size):
                    if bins[a] == bins[b]:
                        assert part[a] == part[b], (size, window, shift, a, b)


def test_swin3d_takes_the_window_path_for_training_and_stage2_inference():
    mask = _stage2_mask()
    layout = mask.layout
    all_slots = layout.all_slots()
    dense_cells = layout.seq_len ** 2
    for q_slots, k_slots in ((all_slots, all_slots), (all_slots[layout.text_len:], all_slots),
                             (layout.inference_slots("interpolation"),) * 2):
        plan = build_partition(mask, q_slots, k_slots, torch.float32, torch.device("cpu"))
        assert plan is not None
        assert plan.windows == 4 and plan.bias.numel() < dense_cells  # O(S x window), not S^2
    # A decoding step (one new slot) falls back to the dense path.
    assert build_partition(mask, all_slots[-1:], all_slots, torch.float32, torch.device("cpu")) is None
    assert build_partition(spatial_mask(layout, "interpolation"), all_slots, all_slots,
                      torch.float32, torch.device("cpu")) is None


def test_swin3d_rejects_slots_outside_the_layout():
    mask = _stage2_mask()
    q = torch.zeros(1, 1, 2, 4)
    slots = torch.tensor([0, mask.layout.seq_len])
    with pytest.raises(ShapeError, match="outside"):
        build("swin3d")(q, q, q, mask, slots, slots)


def test_swin3d_dropout_is_applied_to_probabilities():
    mask = _stage2_mask()
    slots = mask.layout.all_slots()
    q, k, v, _ = inputs(slots, slots, seed=0)
    backend = build("swin3d")
    torch.manual_seed(0)
    dropped = backend(q, k, v, mask, slots, slots, dropout_p=0.5)
    plain = backend(q, k, v, mask, slots, slots)
    assert torch.isfinite(dropped).all()
    assert not torch.allclose(dropped, plain)
    torch.testing.assert_close(backend(q, k, v, mask, slots, slots, dropout_p=0.0), plain)


def test_swin3d_plan_cache_is_bounded():
    backend = get_registries().build("attention", {"name": "swin3d", "cache_size": 1})
    mask0, mask1 = _stage2_mask(layer=0), _stage2_mask(layer=1)
    slots = mask0.layout.all_slots()
    q, k, v, _ = inputs(slots, slots, seed=1)
    for mask in (mask0, mask1, mask0):
        backend(q, k, v, mask, slots, slots)
    assert len(backend._plans) == 1


# ----------------------------------------------------------------------------- flex


def _flex_or_skip():
    reason = get_registries().available("attention", "flex")
    if reason is not None:
        pytest.skip(reason)
    return build("flex")


def test_flex_refuses_cpu_backward_with_a_clear_message():
    flex = _flex_or_skip()
    mask = _stage2_mask()
    slots = mask.layout.all_slots()
    q, k, v, _ = inputs(slots, slots, seed=2)
    with pytest.raises(UnavailableError, match="no CPU backward.*use sdpa or swin3d"):
        flex(q.requires_grad_(), k, v, mask, slots, slots)


def test_flex_refuses_dropout():
    flex = _flex_or_skip()
    mask = _stage2_mask()
    slots = mask.layout.all_slots()
    q, k, v, _ = inputs(slots, slots, seed=3)
    with pytest.raises(ConfigError, match="dropout"):
        flex(q, k, v, mask, slots, slots, dropout_p=0.1)


# ----------------------------------------------------------------------------- xformers


def test_xformers_reports_why_it_cannot_run():
    reason = xformers_unavailable_reason()
    if reason is None:
        pytest.skip("xformers runs here")
    import importlib.util

    if importlib.util.find_spec("xformers") is None:
        assert reason == "xformers is not installed (pip install 'cogframe[xformers]')"
    elif not torch.cuda.is_available():
        assert reason == "xformers needs a CUDA device; none is available"
    with pytest.raises(UnavailableError, match="xformers"):
        build("xformers")


@settings(max_examples=25, deadline=None)
@given(cases())
def test_xformers_bias_materialises_to_the_mask_library(case):
    pytest.importorskip("xformers.ops.fmha.attn_bias",
                        reason="xformers is not installed (pip install 'cogframe[xformers]')")
    mask, q_slots, k_slots, text_valid, options, _ = case
    bias = build_attn_bias(mask, q_slots, k_slots, text_valid, torch.float32,
                           text_bias=options["text_bias"])
    shape = (2, 3, q_slots.numel(), k_slots.numel())
    want = dense_bias_reference(mask, q_slots, k_slots, text_valid, options["text_bias"])
    torch.testing.assert_close(bias.materialize(shape), want.expand(shape))


def test_xformers_uses_the_structured_causal_bias_for_stage1_decoding():
    pytest.importorskip("xformers.ops.fmha.attn_bias",
                        reason="xformers is not installed (pip install 'cogframe[xformers]')")
    from xformers.ops.fmha.attn_bias import LowerTriangularFromBottomRightMask

    layout = TokenLayout(3, 3, 4, 4, 3, 19, 32)
    mask = temporal_mask(layout, Stage.SEQUENTIAL, 0)
    slots = layout.all_slots()
    for q_slots in (slots[-1:], slots[layout.text_len:]):
        bias = build_attn_bias(mask, q_slots, slots, None, torch.float32)
        assert isinstance(bias, LowerTriangularFromBottomRightMask)
        want = dense_bias_reference(mask, q_slots, slots, None, 0.0)
        torch.testing.assert_close(bias.materialize(tuple(want.shape)), want)


def dense_bias_reference(mask: MaskSpec, q_slots, k_slots, text_valid, text_bias):
    """0 / text_bias / -inf straight from ``MaskSpec.dense`` (independent of dense_bias)."""
    allowed = mask.dense(q_slots, k_slots, text_valid).unsqueeze(1)
    is_text = (k_slots < mask.layout.text_len).float() * text_bias
    return torch.where(allowed, is_text.view(1, 1, 1, -1), torch.tensor(float("-inf")))


# ----------------------------------------------------------------------------- capabilities


def _model_recipe(preset: str, **attention):
    from omegaconf import OmegaConf

    return OmegaConf.create({"model": {"preset": preset, "attention": attention}})


def test_build_refuses_flex_for_training_on_cpu_naming_the_alternatives():
    from cogframe.config.model import build_model_from_recipe

    cfg = _model_recipe("tiny_stage1", temporal={"name": "flex"})
    with pytest.raises(ConfigError) as err:
        build_model_from_recipe(cfg, get_registries(), device="meta", run_device="cpu", training=True)
    text = str(err.value)
    assert "model.attention.temporal: attention 'flex' (from builtin:attention_flex) does not support " \
           "backward on cpu, i.e. training (backward only on cuda)" in text
    assert "meet device cpu, backward (training), mask sequential: naive, sdpa, swin3d" in text
    assert "model.attention.temporal.name=naive" in text
    # Forward only (sampling) on CPU, or training on CUDA, is what flex declares: accepted.
    build_model_from_recipe(cfg, get_registries(), device="meta", run_device="cpu")
    build_model_from_recipe(cfg, get_registries(), device="meta", run_device="cuda", training=True)


def test_build_refuses_a_mask_the_backend_does_not_declare():
    from cogframe.config.model import build_model_from_recipe

    cfg = _model_recipe("tiny_stage2", spatial={"name": "swin3d"}, temporal={"name": "swin3d"})
    with pytest.raises(ConfigError) as err:
        build_model_from_recipe(cfg, get_registries(), device="meta")
    text = str(err.value)
    assert "model.attention.spatial: attention 'swin3d' (from builtin:attention_swin3d) does not support " \
           "mask own_frame_interpolation (it handles sequential, interpolation)" in text
    assert "model.attention.temporal" not in text  # the interpolation rule is swin3d's own
    assert "flex, frame_blocks, naive, sdpa, xformers" in text


def test_build_refuses_a_device_and_a_dtype_the_backend_does_not_declare():
    from cogframe.config.model import build_model_from_recipe

    cfg = _model_recipe("tiny_stage1", spatial={"name": "xformers"}, temporal={"name": "naive"})
    with pytest.raises(ConfigError) as err:
        build_model_from_recipe(cfg, get_registries(), device="meta", run_device="cpu", dtype="float16")
    text = str(err.value)
    assert "attention 'xformers' (from builtin:attention_xformers) does not support device cpu " \
           "(it runs on cuda)" in text
    assert "attention 'naive' (from builtin:attention_naive) does not support dtype float16" in text
    assert "flex, swin3d" in text  # the CPU backends that take float16 (and the mask)


def test_validate_refuses_flex_in_a_cpu_training_recipe(cli, tmp_path):
    recipe = tmp_path / "flex_train.yaml"
    recipe.write_text("base: tiny/t2i\nmodel:\n  attention:\n    spatial: {name: flex}\ntrain:\n  device: cpu\n")
    result = cli("validate", str(recipe))
    assert result.code == 2
    assert "model.attention.spatial: attention 'flex' (from builtin:attention_flex) does not support " \
           "backward on cpu" in result.err
    assert "pick one, e.g. model.attention.spatial.name=frame_blocks" in result.err
    assert cli("validate", "-q", str(recipe), "train.device=cuda").err.count("does not support") == 0


# ----------------------------------------------------------------------------- frame_blocks


@settings(max_examples=40, deadline=None)
@given(text_len=st.integers(0, 5), frames=st.integers(1, 5), h=st.integers(1, 4), w=st.integers(1, 4),
       stage=st.sampled_from([Stage.SEQUENTIAL, Stage.INTERPOLATION, Stage.TEXT_TO_IMAGE]),
       padding=st.sampled_from(["none", "shared", "per_sample"]), pads=st.lists(st.integers(0, 5), min_size=2, max_size=2),
       text_bias=st.sampled_from([0.0, 1.4]), whole=st.integers(1, 5), seed=st.integers(0, 2**31 - 1))
def test_frame_blocks_equals_naive_on_the_training_call(text_len, frames, h, w, stage, padding, pads, text_bias,
                                                       whole, seed):
    # The fast path: a spatial mask, queries = keys = the first text + F whole frames in order.
    frames = 1 if stage is Stage.TEXT_TO_IMAGE else frames
    tpf = h * w
    layout = TokenLayout(text_len, frames, h, w, text_len, text_len + tpf, (frames - 1) * tpf)
    mask = spatial_mask(layout, stage)
    slots = layout.all_slots()[:text_len + min(whole, frames) * tpf]
    text_valid = None
    if padding != "none" and text_len:
        rows = pads[:1] if padding == "shared" else pads
        text_valid = torch.tensor([[i >= min(p, text_len) for i in range(text_len)] for p in rows])
    backend = build("frame_blocks")
    assert backend._whole_frames(mask, slots, slots) == min(whole, frames)
    q, k, v, grad = inputs(slots, slots, seed)
    options = {"text_bias": text_bias}
    want, want_grads = run(build("naive"), q, k, v, mask, slots, slots, text_valid, options, grad)
    got, got_grads = run(backend, q, k, v, mask, slots, slots, text_valid, options, grad)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL)
    for label, a, b in zip("qkv", got_grads, want_grads):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=RTOL, msg=lambda m: f"d{label}: {m}")


def test_frame_blocks_takes_the_dense_path_for_decoding_and_temporal_masks():
    layout = TokenLayout(3, 3, 2, 2, 3, 7, 8)
    backend = build("frame_blocks")
    spatial = spatial_mask(layout, Stage.SEQUENTIAL)
    slots = layout.all_slots()
    assert backend._whole_frames(spatial, slots, slots) == 3
    assert backend._whole_frames(spatial, slots[-1:], slots) is None  # a KV-cached step
    assert backend._whole_frames(spatial, slots[:5], slots[:5]) is None  # a partial frame
    order = layout.inference_slots(Stage.INTERPOLATION)
    assert backend._whole_frames(spatial_mask(layout, Stage.INTERPOLATION), order, order) is None  # reordered
    assert backend._whole_frames(temporal_mask(layout, Stage.SEQUENTIAL, 0, TemporalConfig()), slots, slots) is None


@pytest.mark.parametrize("name", ["swin3d", "sr_local_window", "frame_blocks", "flex"])
def test_backend_caches_refuse_a_negative_size_and_keep_nothing_at_zero(name):
    from cogframe.plugins._bounded_cache import BoundedCache

    with pytest.raises(ConfigError, match="cache_size must be >= 0, got -1"):
        get_registries().build("attention", {"name": name, "cache_size": -1})
    built = []
    cache = BoundedCache(0)
    assert cache.get("a", lambda: built.append(1) or 1) == 1 and cache.get("a", lambda: built.append(2) or 2) == 2
    assert len(cache) == 0 and built == [1, 2]
    lru = BoundedCache(2)
    for key in "abca":
        lru.get(key, lambda: key)
    assert len(lru) == 2 and lru.get("b", lambda: "rebuilt") == "rebuilt"  # b was evicted, a kept
