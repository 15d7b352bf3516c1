"""The transformer: parameter counts, dual-channel semantics, inheritance, KV cache."""

from __future__ import annotations

import pytest
import torch

from cogframe.core.model.inherit import inherit_text_to_image, video_model_from_text_to_image
from cogframe.core.model.transformer import CogVideoTransformer, loss_fn
from cogframe.core.model.presets import build_model, model_config
from cogframe.errors import ConfigError, ShapeError


def test_9b_parameter_counts_on_meta_device():
    # spec §1.1 / §1.2 arithmetic.
    cogview2 = build_model("cogview2_6b", device="meta")
    assert cogview2.num_parameters() == 5_902_307_328
    for stage in ("cogvideo_9b_stage1", "cogvideo_9b_stage2"):
        model = build_model(stage, device="meta")
        model.freeze_inherited()
        assert model.num_parameters() == 7_721_127_936
        assert model.num_parameters(trainable_only=True) == 1_818_820_608
        assert next(model.parameters()).device.type == "meta"


def _sample(layout, batch=2, seed=0, image_vocab=256, vocab=384):
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(image_vocab, vocab, (batch, layout.text_len), generator=g)
    frames = torch.randint(0, image_vocab, (batch, layout.frames, layout.frame_height,
                                             layout.frame_width), generator=g)
    return text, frames


@pytest.fixture(scope="module")
def t2i_and_video():
    torch.manual_seed(0)
    t2i = build_model("tiny_t2i").eval()
    video = video_model_from_text_to_image(model_config("tiny_stage1"), t2i.state_dict()).eval()
    return t2i, video


def test_alpha_one_layer_equals_plain_cogview2_layer(t2i_and_video):
    t2i, video = t2i_and_video
    layout = video.config.layout
    with torch.no_grad():
        for layer in video.layers:
            layer.temporal.alpha_logit.fill_(1e4)  # sigmoid -> exactly 1.0 in fp32
        text, frames = _sample(layout)
        inp, _ = layout.build_input(text, frames, boi_id=300)
        dual = video(inp)
        base_only = video(inp, use_temporal=False)
        for layer in video.layers:
            layer.temporal.alpha_logit.zero_()
    assert torch.equal(dual, base_only)


def test_inherited_model_without_plus_channel_reproduces_cogview2_frames(t2i_and_video):
    t2i, video = t2i_and_video
    layout, single = video.config.layout, t2i.config.layout
    text, frames = _sample(layout, seed=1)
    inp, _ = layout.build_input(text, frames, boi_id=300)
    with torch.no_grad():
        video_logits = video(inp, use_temporal=False)
        for t in range(layout.frames):
            # Extra positions are tiled from frame 0, so every frame is CogView2's frame.
            one, _ = single.build_input(text, frames[:, t:t + 1], boi_id=300)
            expected = t2i(one)[:, single.text_len:]
            got = video_logits[:, list(layout.frame_range(t))]
            assert torch.equal(got, expected)


def test_inheritance_copies_and_freezes(t2i_and_video):
    t2i, video = t2i_and_video
    for layer_t2i, layer in zip(t2i.layers, video.layers):
        assert torch.equal(layer.temporal.query_key_value.weight,
                           layer_t2i.attention.query_key_value.weight)
        assert torch.equal(layer.temporal.alpha_logit, torch.zeros_like(layer.temporal.alpha_logit))
    layout = video.config.layout
    start = layout.image_position_offset
    rows = t2i.position_embeddings.weight[start:start + layout.tokens_per_frame]
    assert torch.equal(video.extra_position_embeddings.weight[:layout.tokens_per_frame], rows)
    trainable = {n for n, p in video.named_parameters() if p.requires_grad}
    assert trainable and all(".temporal." in n or n.startswith("extra_position") for n in trainable)
    assert not video.word_embeddings.weight.requires_grad


def test_inheritance_reports_every_mismatch():
    video = build_model("tiny_stage1")
    state = build_model("tiny_t2i").state_dict()
    state.pop("final_layernorm.bias")
    state["bogus.weight"] = torch.zeros(1)
    state["layers.0.mlp.dense_h_to_4h.weight"] = torch.zeros(3, 3)
    with pytest.raises(ShapeError) as err:
        inherit_text_to_image(video, state)
    msg = str(err.value)
    assert "final_layernorm.bias" in msg and "bogus.weight" in msg and "dense_h_to_4h" in msg


@pytest.mark.parametrize("preset", ["tiny_stage1", "tiny_stage2"])
def test_kv_cache_forward_equals_full_forward(preset):
    torch.manual_seed(0)
    model = build_model(preset).eval()
    layout = model.config.layout
    text, frames = _sample(layout, seed=2)
    valid = torch.ones(2, layout.text_len, dtype=torch.bool)
    valid[1, :5] = False
    inp, _ = layout.build_input(text, frames, boi_id=300)
    stage = model.config.stage
    slots = layout.inference_slots(stage)
    inp = inp[:, slots]
    # Given frames see each other bidirectionally, so they must arrive in one pass.
    prefix = layout.text_len + len(layout.prefix_frames(stage)) * layout.tokens_per_frame
    with torch.no_grad():
        full = model(inp, slots=slots, text_valid=valid)
        cache = model.new_cache()
        pieces, start = [], 0
        for size in [prefix + 3, 1, 1, 7, 64, 1] + [50] * 10:
            stop = min(start + size, layout.seq_len)
            if start >= stop:
                break
            pieces.append(model(inp[:, start:stop], slots=slots[start:stop], text_valid=valid,
                                cache=cache))
            start = stop
        incremental = torch.cat(pieces, 1)
    assert incremental.shape == full.shape
    assert torch.allclose(incremental, full, atol=1e-5, rtol=1e-5)


def test_retaining_spatial_frames_is_exact():
    torch.manual_seed(0)
    model = build_model("tiny_stage1").eval()
    layout = model.config.layout
    text, frames = _sample(layout, seed=3)
    inp, _ = layout.build_input(text, frames, boi_id=300)
    with torch.no_grad():
        full = model(inp)
        cache = model.new_cache()
        split = layout.frame_range(2).start
        model(inp[:, :split], cache=cache)
        cache.retain_spatial_frames(layout, {2})
        rest = model(inp[:, split:], cache=cache)
    assert cache.spatial_slots.numel() < cache.temporal_slots.numel()
    assert torch.allclose(rest, full[:, split:], atol=1e-5)


def test_training_step_touches_only_new_parameters(t2i_and_video):
    _, video = t2i_and_video
    video.train()
    layout = video.config.layout
    text, frames = _sample(layout, seed=4)
    inp, lab = layout.build_input(text, frames, boi_id=300)
    loss = loss_fn(video(inp), lab, layout.loss_mask("sequential"))
    loss.backward()
    for name, p in video.named_parameters():
        assert (p.grad is not None) == video.is_new_parameter(name), name
    video.zero_grad(set_to_none=True)
    video.eval()


def test_errors_name_the_problem():
    with pytest.raises(ConfigError, match="Did you mean 'tiny_t2i'"):
        model_config("tiny_t2")
    with pytest.raises(ConfigError, match="num_layers"):
        model_config("tiny_t2i", {"num_layer": 3})
    with pytest.raises(ShapeError, match="divisible"):
        model_config("tiny_t2i", {"num_heads": 3})
    model = build_model("tiny_t2i")
    with pytest.raises(ShapeError, match="beyond the layout"):
        model(torch.zeros(1, model.config.layout.seq_len + 1, dtype=torch.long))
    assert isinstance(model, CogVideoTransformer)
