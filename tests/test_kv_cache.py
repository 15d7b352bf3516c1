"""The preallocated KV cache: same tokens as the growing ``torch.cat`` cache, in place, bounded."""

from __future__ import annotations

import pytest
import torch

from cogframe.core.generation.decoder import DecodeOptions, decode_frames
from cogframe.core.generation.prompts import TextPrompt
from cogframe.core.generation.token_sampling import SlotNoise
from cogframe.core.model.presets import build_model
from cogframe.core.model.transformer import ConcatKVCache, KVCache
from cogframe.errors import ShapeError
from cogframe.plugins.token_samplers import TopKSampler

BOI = 300


def _prompt(layout, batch=2) -> TextPrompt:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(256, 384, (batch, layout.text_len), generator=g)
    valid = torch.ones(batch, layout.text_len, dtype=torch.bool)
    valid[1, :3] = False
    return TextPrompt(ids, valid)


@pytest.mark.parametrize("preset,given,generated", [
    ("tiny_stage1", (0,), (1, 2, 3, 4)),
    ("tiny_stage2", (0, 2, 4), (1, 3)),
])
@pytest.mark.parametrize("parallel", [False, True])
def test_preallocated_cache_gives_the_tokens_of_the_cat_cache(preset, given, generated, parallel):
    torch.manual_seed(0)
    model = build_model(preset).eval()
    layout = model.config.layout
    prompt = _prompt(layout)
    frames = torch.randint(0, 256, (2, len(given), layout.frame_height, layout.frame_width),
                           generator=torch.Generator().manual_seed(2))
    options = DecodeOptions(TopKSampler(k=10), seed=3, parallel=parallel)
    runs = {}
    for cls in (ConcatKVCache, KVCache):
        model.cache_class = cls
        runs[cls] = decode_frames(model, prompt, boi_id=BOI, options=options, given_frames=given,
                                  generated_frames=generated, given=frames, return_logits=True)
    old, new = runs[ConcatKVCache], runs[KVCache]
    assert torch.equal(old.frames, new.frames)  # fp32: identical token ids
    assert (new.frames[:, list(generated)] >= 0).all()
    assert old.passes == new.passes
    assert torch.allclose(old.logits, new.logits, atol=1e-5, rtol=1e-5)


def test_cache_appends_in_place_and_compacts_once_per_dropped_frame():
    torch.manual_seed(0)
    model = build_model("tiny_stage1").eval()
    layout = model.config.layout
    ids = torch.randint(0, 256, (1, layout.seq_len))
    cache = model.new_cache()
    assert isinstance(cache, KVCache) and cache.capacity == layout.seq_len
    with torch.no_grad():
        model(ids[:, :20], cache=cache)
        buffer = cache.layers[0].temporal_k
        ptr = buffer.data_ptr()
        model(ids[:, 20:21], cache=cache)
        model(ids[:, 21:30], cache=cache)
    # The same storage, never reallocated: appends write in place.
    assert cache.layers[0].temporal_k is buffer and buffer.data_ptr() == ptr
    assert buffer.shape[2] == layout.seq_len and len(cache) == 30
    assert torch.equal(cache.temporal_slots, torch.arange(30))
    # Frame 0 (slots 16..) finished: only text stays in the spatial channel, already a prefix.
    cache.retain_spatial_frames(layout, set())
    assert torch.equal(cache.spatial_slots, torch.arange(layout.text_len))
    assert len(cache) == 30 and cache.temporal_slots.numel() == 30


def test_compaction_keeps_the_keys_of_unfinished_frames():
    torch.manual_seed(0)
    model = build_model("tiny_stage1").eval()
    layout = model.config.layout
    ids = torch.randint(0, 256, (1, layout.seq_len))
    f1, f2 = layout.frame_range(1), layout.frame_range(2)
    with torch.no_grad():
        full = model(ids)
        caches = [KVCache(model.config.num_layers, layout.seq_len), ConcatKVCache(model.config.num_layers)]
        outs = []
        for cache in caches:
            model(ids[:, :f1.start + 10], cache=cache)
            model(ids[:, f1.start + 10:f2.start + 5], cache=cache)
            # Frames 0 and 1 dropped: frame 2's first 5 keys move to the front, after the text.
            cache.retain_spatial_frames(layout, {2, 3})
            outs.append(model(ids[:, f2.start + 5:], cache=cache))
    expected = torch.cat([torch.arange(layout.text_len), torch.arange(f2.start, f2.start + layout.tokens_per_frame),
                          torch.arange(layout.frame_range(3).start, layout.frame_range(3).stop)])
    assert torch.equal(caches[0].spatial_slots, caches[1].spatial_slots)
    assert torch.equal(caches[0].spatial_slots[:layout.text_len + layout.tokens_per_frame],
                       expected[:layout.text_len + layout.tokens_per_frame])
    for out in outs:
        assert torch.allclose(out, full[:, f2.start + 5:], atol=1e-5, rtol=1e-5)


def test_feeding_past_the_capacity_is_refused_naming_the_fix():
    torch.manual_seed(0)
    model = build_model("tiny_stage1").eval()
    layout = model.config.layout
    cache = model.new_cache()
    ids = torch.randint(0, 256, (1, layout.seq_len))
    with torch.no_grad():
        model(ids, cache=cache)
        with pytest.raises(ShapeError, match="new cache"):
            model(ids[:, :1], slots=torch.tensor([0]), cache=cache)


def test_slot_noise_hash_values_are_unchanged():
    # Known answers of the position-keyed noise (computed with the torch implementation it
    # replaced): the same seed, stream and slot must keep giving the same uniforms.
    noise = SlotNoise(12345678901).rows(torch.tensor([0, 1, 7, 2**40]), torch.tensor([0, 16, 335, 99]))
    assert noise.keys.tolist() == [3402373026, 3474925440, 3302700456, 1699625044]
    assert [float(u).hex() for u in noise.uniform(0)] == [
        "0x1.c3364c0d9f17ep-2", "0x1.56ccd82535577p-1", "0x1.05523cb5c8038p-4", "0x1.fdf05ba369abbp-1"]
    assert [float(u).hex() for u in noise.uniform(3)] == [
        "0x1.bcae180c8d6b0p-4", "0x1.26a1a153c6c1ep-1", "0x1.aac127b5d1dc4p-1", "0x1.4ef3f911771b0p-5"]
    noise = SlotNoise(0).rows(torch.tensor([0, 5]), torch.tensor([17, 18]))
    assert noise.keys.tolist() == [463274251, 4277677880]
    assert [float(u).hex() for u in noise.uniform(1)] == ["0x1.2cd9643f3ea42p-2", "0x1.e965e997fd464p-2"]


@pytest.mark.parametrize("parallel", [False, True])
def test_windowed_passes_attend_to_the_visible_keys_only_with_the_tokens_of_every_key(parallel, monkeypatch):
    """Past VISIBLE_KEYS_MIN cached keys a windowed pass reads only what its queries may see; the
    tokens equal those of the cache that attends to every key, masked."""
    from cogframe.core.model import transformer

    grid, frames, text = 12, 5, 8  # 8 + 5 x 144 = 728 slots, more than VISIBLE_KEYS_MIN
    tpf = grid * grid
    overrides = {"num_layers": 2, "hidden_size": 32, "num_heads": 2,
                 "temporal": {"window": [2, 2], "shift": [1, 1]},
                 "layout": {"text_len": text, "frames": frames, "frame_height": grid, "frame_width": grid,
                            "image_position_offset": 2 * text, "base_position_rows": 2 * text + tpf,
                            "extra_position_rows": (frames - 1) * tpf}}
    torch.manual_seed(0)
    model = build_model("tiny_stage1", overrides=overrides).eval()
    layout = model.config.layout
    assert layout.seq_len > transformer.VISIBLE_KEYS_MIN
    prompt = _prompt(layout)
    given = torch.randint(0, 256, (2, 1, grid, grid), generator=torch.Generator().manual_seed(2))
    kept: list[tuple[int, int]] = []
    visible = transformer.KVCache.visible

    def spy(self, channel, mask, q_slots, k_slots):
        keep = visible(self, channel, mask, q_slots, k_slots)
        if keep is not None:
            kept.append((int(keep.numel()), int(k_slots.numel())))
        return keep

    monkeypatch.setattr(transformer.KVCache, "visible", spy)
    options = DecodeOptions(TopKSampler(k=10), seed=3, parallel=parallel)
    runs = {}
    for cls in (ConcatKVCache, KVCache):
        model.cache_class = cls
        runs[cls] = decode_frames(model, prompt, boi_id=BOI, options=options, given_frames=(0,),
                                  generated_frames=(1, 2, 3, 4), given=given, return_logits=True)
    old, new = runs[ConcatKVCache], runs[KVCache]
    assert torch.equal(old.frames, new.frames) and old.passes == new.passes
    assert torch.allclose(old.logits, new.logits, atol=1e-5, rtol=1e-5)
    # The gathers happened, and late in the run a pass read a small share of the cached keys.
    assert kept and max(total for _, total in kept) > 600
    assert min(n / total for n, total in kept) < 0.1
