"""Parallel-wave decoding: schedules from the masks, and exactness against sequential decoding."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cogframe.core.generation.decoder import DecodeOptions, decode_frames, plan_schedule
from cogframe.core.model.layout import Stage
from cogframe.core.model.masks import window_bin
from cogframe.core.model.presets import build_model, model_config
from cogframe.core.generation.prompts import TextPrompt
from cogframe.core.generation.waves import (
    cache_dependencies,
    config_layer_masks,
    frame_slots,
    layer_dependencies,
    model_layer_masks,
    sequential_schedule,
    wave_schedule,
)
from cogframe.errors import ShapeError
from cogframe.plugins.token_samplers import (
    ClusterSampler,
    GreedySampler,
    TemperatureSampler,
    TopKSampler,
    TopPSampler,
)

BOI = 300
SMALL = {"num_layers": 2, "hidden_size": 32, "num_heads": 2}


def _model(preset: str, frames: int = 5, grid=(8, 8), window=(4, 4), seed: int = 0):
    h, w = grid
    overrides = dict(SMALL, layout={"frames": frames, "frame_height": h, "frame_width": w,
                                    "extra_position_rows": (frames - 1) * h * w})
    overrides["temporal"] = ({"window": None, "shift": None} if window is None
                             else {"window": list(window), "shift": [window[0] // 2, window[1] // 2]})
    torch.manual_seed(seed)
    # float64: logits of a wave and of a single-slot pass differ only by summation order
    # (~1e-16 here), so an argmax flip between the two decoders is practically impossible.
    return build_model(preset, overrides=overrides).eval().double()


def _prompt(model, batch: int = 2, seed: int = 1) -> TextPrompt:
    g = torch.Generator().manual_seed(seed)
    text_len = model.config.layout.text_len
    ids = torch.randint(256, 384, (batch, text_len), generator=g)
    valid = torch.ones(batch, text_len, dtype=torch.bool)
    valid[0, :3] = False  # a left-padded prompt in the batch
    return TextPrompt(ids, valid)


def _frames(layout, batch: int, count: int, seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, count, layout.frame_height, layout.frame_width), generator=g)


def _decode_both(model, sampler, given_frames, generated_frames, given=None, seed=0):
    prompt = _prompt(model)
    results = []
    for parallel in (False, True):
        options = DecodeOptions(sampler, seed=seed, parallel=parallel)
        results.append(decode_frames(model, prompt, boi_id=BOI, options=options, given_frames=given_frames,
                                     generated_frames=generated_frames, given=given))
    return results


# ------------------------------------------------------------------------------ exactness
@settings(max_examples=4, deadline=None, derandomize=True)
@given(grid=st.sampled_from([(4, 4), (5, 6), (6, 4), (8, 8)]),
       window=st.sampled_from([(2, 2), (3, 2), (4, 4)]), frames=st.sampled_from([3, 4]))
def test_greedy_waves_equal_sequential_stage1(grid, window, frames):
    model = _model("tiny_stage1", frames=frames, grid=grid, window=window)
    seq, par = _decode_both(model, GreedySampler(), (), tuple(range(frames)))
    assert torch.equal(seq.frames, par.frames)
    assert par.passes < seq.passes


@settings(max_examples=4, deadline=None, derandomize=True)
@given(grid=st.sampled_from([(4, 4), (5, 6), (8, 8)]), window=st.sampled_from([(2, 2), (3, 4), (4, 4)]))
def test_greedy_waves_equal_sequential_stage2(grid, window):
    model = _model("tiny_stage2", grid=grid, window=window)
    layout = model.config.layout
    given = _frames(layout, 2, 3)
    seq, par = _decode_both(model, GreedySampler(), (0, 2, 4), (1, 3), given=given)
    assert torch.equal(seq.frames, par.frames)
    assert torch.equal(par.frames[:, [0, 2, 4]], given)
    assert par.passes < seq.passes


@pytest.mark.parametrize("sampler", [TopKSampler(k=20, temperature=1.3), TemperatureSampler(0.7),
                                     TopPSampler(p=0.8)], ids=["top_k", "temperature", "top_p"])
def test_seeded_sampler_waves_equal_sequential(sampler):
    model = _model("tiny_stage1", frames=4, grid=(6, 6), window=(3, 3))
    seq, par = _decode_both(model, sampler, (0,), (1, 2, 3), given=_frames(model.config.layout, 2, 1), seed=7)
    assert torch.equal(seq.frames, par.frames)
    # Sampling really is random: another seed gives other tokens.
    other = decode_frames(model, _prompt(model), boi_id=BOI, options=DecodeOptions(sampler, seed=8),
                          given_frames=(0,), generated_frames=(1, 2, 3),
                          given=_frames(model.config.layout, 2, 1))
    assert not torch.equal(other.frames, seq.frames)


def test_cluster_sampler_waves_equal_sequential(tmp_path):
    import numpy as np

    path = tmp_path / "clusters.npy"
    np.save(path, np.arange(256) % 16)
    sampler = ClusterSampler(top_k=4, temperature=1.05, temperature2=0.89, clusters=str(path))
    model = _model("tiny_stage2", grid=(5, 5), window=(3, 3))
    given = _frames(model.config.layout, 2, 3)
    seq, par = _decode_both(model, sampler, (0, 2, 4), (1, 3), given=given, seed=3)
    assert torch.equal(seq.frames, par.frames)


# ------------------------------------------------------------------------------ schedules
def test_full_causal_temporal_channel_allows_no_parallelism():
    model = _model("tiny_stage1", window=None)
    layout = model.config.layout
    seq = plan_schedule(model, (0,), (1, 2, 3, 4), parallel=False)
    par = plan_schedule(model, (0,), (1, 2, 3, 4), parallel=True)
    # One slot per pass, except that a frame's last slot and the next frame's BOI slot share a
    # pass: the last token of a frame is never an input (BOI-shift), so nothing waits for it.
    assert seq.generation_passes == 4 * layout.tokens_per_frame
    assert par.generation_passes == seq.generation_passes - 3
    assert max(w.numel() for w in par.waves) == 2


def test_windows_need_fewer_passes_than_full_causal():
    passes = {}
    for window in (None, (4, 4), (2, 2)):
        model = _model("tiny_stage1", window=window)
        passes[window] = plan_schedule(model, (0,), (1, 2, 3, 4), parallel=True).generation_passes
    assert passes[(2, 2)] < passes[(4, 4)] < passes[None]


def test_every_wave_feeds_a_set_closed_under_attention():
    """Independent check of the closure: every key a pass's queries see, at any layer, is
    already fed or fed in that pass, and its input token is known."""
    model = _model("tiny_stage2", grid=(5, 6), window=(3, 4))
    layout = model.config.layout
    schedule = plan_schedule(model, (0, 2, 4), (1, 3), parallel=True)
    everything = layout.all_slots()
    specs = {mask for masks in model_layer_masks(model) for mask in masks}
    fed = torch.zeros(layout.seq_len, dtype=torch.bool)
    fed[schedule.prefix] = True
    for spec in specs:  # the prefix only sees itself
        assert bool(fed[spec.dense(schedule.prefix, everything)[0].any(0)].all())
    is_boi = layout.coords(everything).p == 0
    for wave in schedule.waves:
        now = fed.clone()
        now[wave] = True
        input_known = fed | is_boi | fed.roll(1)  # given, BOI, or the previous slot was sampled
        for spec in specs:
            seen = spec.dense(wave, everything)[0].any(0)
            assert bool(now[seen].all()) and bool(input_known[seen].all())
        fed = now
    assert bool(fed.all())


def test_logit_dependencies_are_within_cache_dependencies():
    model = _model("tiny_stage1", grid=(6, 6), window=(3, 3))
    masks = model_layer_masks(model)
    slots = frame_slots(model.config.layout, range(5))
    logits, cache = layer_dependencies(masks, slots), cache_dependencies(masks, slots)
    assert bool((logits <= cache).all())
    assert bool(logits.diagonal().all())


def test_given_frame_that_sees_a_generated_frame_is_refused():
    model = _model("tiny_stage2")
    layout, masks = model.config.layout, model_layer_masks(model)
    with pytest.raises(ShapeError, match="given frame attends to a generated frame"):
        wave_schedule(layout, masks, given_frames=(1, 3), generated_frames=(0, 2, 4))
    with pytest.raises(ShapeError, match="neither given nor generated"):
        wave_schedule(layout, masks, given_frames=(0, 2), generated_frames=(1,))


def _closed_form_passes(x: int, y: int, a: tuple[int, int], frames: int) -> int:
    """Passes for ``frames`` windowed frames, from a scalar argument independent of the matrices.

    Slot p of frame t+1 needs frame t (through the spatial channel's causal prefix) up to the
    largest raster index in the windows of p at either shift parity, need(p). Its input there is
    the token of slot need(p) - 1, so frame t+1 trails frame t by lag = max_p (need(p) - p)
    passes, and passes = X*Y + (frames - 1) * lag.
    """
    def bins(coord, size, shift):
        return int(window_bin(torch.tensor(coord), size, shift))

    lag = 0
    for p in range(x * y):
        px, py = divmod(p, y)
        need = 0
        for sx, sy in ((0, 0), (a[0] // 2, a[1] // 2)):
            rows = [r for r in range(x) if bins(r, a[0], sx) == bins(px, a[0], sx)]
            cols = [c for c in range(y) if bins(c, a[1], sy) == bins(py, a[1], sy)]
            need = max(need, max(rows) * y + max(cols))
        lag = max(lag, need - p)
    return x * y + (frames - 1) * lag


def test_9b_layout_wave_schedule_matches_the_closed_form():
    """Mask-only schedules of the 48-layer, 20x20x5 CogVideo layouts (no model is built)."""
    stage1 = model_config("cogvideo_9b_stage1", {"temporal": {"window": [10, 10]}})
    stage2 = model_config("cogvideo_9b_stage2")
    layout = stage1.layout
    s1 = wave_schedule(layout, config_layer_masks(stage1), given_frames=(0,), generated_frames=(1, 2, 3, 4))
    s2 = wave_schedule(layout, config_layer_masks(stage2), given_frames=(0, 2, 4), generated_frames=(1, 3))
    released = wave_schedule(layout, config_layer_masks(model_config("cogvideo_9b_stage1")),
                             given_frames=(0,), generated_frames=(1, 2, 3, 4))
    assert _closed_form_passes(20, 20, (10, 10), 4) == s1.generation_passes == 400 + 3 * 189
    assert _closed_form_passes(20, 20, (10, 10), 2) == s2.generation_passes == 400 + 189
    assert released.generation_passes == 1600 - 3  # full causal: only the BOI-shift overlap
    ratio1 = 1600 / s1.generation_passes
    ratio2 = 800 / s2.generation_passes
    five = _closed_form_passes(20, 20, (10, 10), 5)
    print(f"\n9B stage 1, 10x10 windows: {s1.generation_passes} passes for 1600 tokens ({ratio1:.3f}x); "
          f"stage 2: {s2.generation_passes} for 800 ({ratio2:.3f}x); released full-causal stage 1: "
          f"{released.generation_passes}. Five windowed frames: {five} for 2000 ({2000 / five:.3f}x).")
    assert ratio1 == pytest.approx(1.6546, abs=1e-4)
    # With 48 layers the logit dependencies reach as far as the cache closure: no lost parallelism.
    logits = wave_schedule(layout, config_layer_masks(stage1), given_frames=(0,),
                           generated_frames=(1, 2, 3, 4), dependencies="logits")
    assert logits.generation_passes == s1.generation_passes


def test_sequential_schedule_follows_the_given_frame_order():
    layout = model_config("tiny_stage2").layout
    schedule = sequential_schedule(layout, given_frames=(0, 2, 4), generated_frames=(1, 3))
    order = torch.cat(schedule.waves)
    assert torch.equal(order, torch.cat([frame_slots(layout, [1]), frame_slots(layout, [3])]))
    assert torch.equal(schedule.prefix[layout.text_len:], layout.inference_slots(Stage.INTERPOLATION)[
        layout.text_len:layout.text_len + 3 * layout.tokens_per_frame])
