"""The transformer: parameter counts, dual-channel semantics, inheritance, KV cache."""

from __future__ import annotations

import math

import pytest
import torch

from cogframe.core.model.inherit import inherit_text_to_image, video_model_from_text_to_image
from cogframe.core.model.transformer import CogVideoTransformer, loss_fn
from cogframe.core.model.presets import build_model, model_config
from cogframe.errors import ConfigError, ShapeError


def test_9b_parameter_counts_on_meta_device():
    # CogView2 6B: 48 layers x 113,298,432 + embeddings + final LN; each CogVideo stage adds
    # 48 x (4 d^2 + 4 d + d) + 2000 d for the attention-plus channel and extra positions.
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
            # Same weights and the same math, but the video model runs 5 frames per pass and the
            # text-to-image model one: matmuls of different sizes sum in different orders, and
            # CPUs with and without AVX-512 differ by ~5e-7 here. Bitwise is not guaranteed.
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


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


# ------------------------------------------------------------------------------ literal reference
# The CogVideo layer (arXiv 2205.15868, Sec. 3.2; THUDM/CogVideo models/cogvideo_model.py,
# attention_forward) written out from its formulas, in float64, sharing nothing with the model's
# code but its weights:
#   u = LN1(x);  base: q0,k0,v0 = W_qkv u;  plus: q1,k1,v1 = W_qkv_plus u (text rows too)
#   text rows:  Dense(Attn(q0, k0[text], v0[text]))
#   frame rows: sigmoid(a) * Dense(Attn(q0, k0[text + own frame])) +
#               (1 - sigmoid(a)) * Dense_plus(Attn(q1, k1[text + temporal set]))
#   h = x + LN3(attn_out);  out = h + LN4(W_4h->h gelu_tanh(W_h->4h LN2(h)))
# with one softmax over text and frame keys per channel, pad text keys masked everywhere.


def _ln(x, module):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + module.eps) * module.weight.double() + module.bias.double()


def _linear(x, module):
    return x @ module.weight.double().t() + module.bias.double()


def _gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(0.7978845608028654 * (x + 0.044715 * x ** 3)))


def _window_bin(c, window, shift, shifted):
    # Swin bins along one axis: [0, A), [A, 2A), ... unshifted; [0, s), [s, s + A), ... shifted
    # (rolling by -s, cutting A x A windows and masking the wrapped regions gives the same sets).
    if not shifted:
        return c // window
    return 0 if c < shift else 1 + (c - shift) // window


def _allowed(config, layer_id):
    """Dense [S, S] key sets of both channels over frame queries, from the paper's rules."""
    L = config.layout
    S, n = L.text_len + L.frames * L.frame_height * L.frame_width, L.frame_height * L.frame_width
    spatial = torch.zeros(S, S, dtype=torch.bool)
    temporal = torch.zeros(S, S, dtype=torch.bool)
    spatial[:, :L.text_len] = True      # every query sees the (non-pad) text
    temporal[:, :L.text_len] = True
    interp = config.stage.value == "interpolation"
    win, shf = config.temporal.window, config.temporal.shift
    shifted = win is not None and layer_id % 2 == 1  # Swin: odd layers shift, by half a window by default
    for qi in range(L.text_len, S):
        qt, qp = divmod(qi - L.text_len, n)
        for ki in range(L.text_len, S):
            kt, kp = divmod(ki - L.text_len, n)
            # Spatial: own frame; causal, except given (even) frames of stage 2 (bidirectional).
            spatial[qi, ki] = kt == qt and (kp <= qp or (interp and qt % 2 == 0))
            if not interp:
                # Stage 1: every earlier frame slot in the flattened frame sequence (the released
                # full-causal mask, window_size=-1), cut to the 3D window when there is one.
                ok = n * kt + kp <= n * qt + qp
            elif qt % 2 == 0:   # stage 2, a given frame: all given frames, bidirectionally
                ok = kt % 2 == 0
            elif kt % 2 == 0:   # a generated frame: all given frames,
                ok = True
            elif kt == qt:      # itself causally,
                ok = kp <= qp
            else:               # and earlier generated frames (F3 sees F1)
                ok = kt < qt
            if win is not None:
                (qx, qy), (kx, ky) = divmod(qp, L.frame_width), divmod(kp, L.frame_width)
                sx, sy = shf if shf is not None else (win[0] // 2, win[1] // 2)
                ok = ok and (_window_bin(qx, win[0], sx, shifted) == _window_bin(kx, win[0], sx, shifted)
                             and _window_bin(qy, win[1], sy, shifted) == _window_bin(ky, win[1], sy, shifted))
            temporal[qi, ki] = ok
    return spatial, temporal


def _attend(q, k, v, allowed):
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.softmax(scores, -1) @ v


def _heads(x, num_heads):
    b, s, d = x.shape
    return x.view(b, s, num_heads, d // num_heads).transpose(1, 2)


def _reference_logits(model, ids, text_valid):
    cfg, L = model.config, model.config.layout
    B, S = ids.shape
    n = L.frame_height * L.frame_width
    # Positions: real text tokens 0..len-1 (left pad 0); frame slot m -> image offset + m; past
    # frame 0 the extra table, row (position - first extra position).
    text_pos = torch.where(text_valid, text_valid.long().cumsum(-1) - 1, 0)
    frame_pos = L.image_position_offset + torch.arange(S - L.text_len)
    emb = model.word_embeddings.weight.double()[ids]
    base_rows = model.position_embeddings.weight.double()
    extra_rows = model.extra_position_embeddings.weight.double()
    first_extra = L.image_position_offset + n
    pos_emb = torch.cat([base_rows[text_pos],
                         torch.stack([base_rows[p] if p < first_extra else extra_rows[p - first_extra]
                                      for p in frame_pos.tolist()]).expand(B, -1, -1)], 1)
    x = emb + pos_emb
    key_ok = torch.cat([text_valid, torch.ones(B, S - L.text_len, dtype=torch.bool)], 1)
    for layer_id, layer in enumerate(model.layers):
        spatial, temporal = _allowed(cfg, layer_id)
        text_rows = torch.zeros(S, S, dtype=torch.bool)
        text_rows[:L.text_len, :L.text_len] = True
        spatial = torch.where(torch.arange(S)[:, None] < L.text_len, text_rows, spatial)
        spatial = spatial[None, None] & key_ok[:, None, None, :]
        temporal = temporal[None, None] & key_ok[:, None, None, :]
        u = _ln(x, layer.input_layernorm)
        q0, k0, v0 = (_heads(t, cfg.num_heads) for t in _linear(u, layer.attention.query_key_value).chunk(3, -1))
        q1, k1, v1 = (_heads(t, cfg.num_heads) for t in _linear(u, layer.temporal.query_key_value).chunk(3, -1))
        ctx0 = _attend(q0, k0, v0, spatial).transpose(1, 2).reshape(B, S, -1)
        ctx1 = _attend(q1, k1, v1, temporal).transpose(1, 2).reshape(B, S, -1)
        base = _linear(ctx0, layer.attention.dense)
        plus = _linear(ctx1, layer.temporal.dense)
        alpha = torch.sigmoid(layer.temporal.alpha_logit.double())
        is_frame = (torch.arange(S) >= L.text_len)[None, :, None]
        attn_out = torch.where(is_frame, alpha * base + (1 - alpha) * plus, base)
        h = x + _ln(attn_out, layer.third_layernorm)
        mlp = _linear(_gelu_tanh(_linear(_ln(h, layer.post_attention_layernorm), layer.mlp.dense_h_to_4h)),
                      layer.mlp.dense_4h_to_h)
        x = h + _ln(mlp, layer.fourth_layernorm)
    x = _ln(x, model.final_layernorm)
    return x @ model.word_embeddings.weight.double()[:cfg.image_vocab_size].t()


@pytest.mark.parametrize("preset,temporal", [
    ("tiny_stage1", {"window": None, "shift": None}),   # the released stage 1: full causal
    ("tiny_stage1", {}),                                # 4x4 windows, shift 2 on odd layers
    ("tiny_stage2", {}),                                # 4x4 windows, shift 2 on odd layers
], ids=["stage1_full_causal", "stage1_window", "stage2_window"])
def test_dual_channel_at_intermediate_alpha_matches_a_literal_reference(preset, temporal):
    torch.manual_seed(0)
    model = build_model(preset, overrides={"num_layers": 2, "temporal": temporal}).eval()
    L = model.config.layout
    with torch.no_grad():
        for layer in model.layers:
            # 0 < alpha < 1 everywhere (alpha in ~(0.12, 0.88)), different per hidden unit; the plus
            # QKV moved off its copy of the base QKV so the two channels cannot be confused.
            layer.temporal.alpha_logit.uniform_(-2.0, 2.0)
            layer.temporal.query_key_value.weight.add_(0.05 * torch.randn_like(layer.temporal.query_key_value.weight))
            layer.temporal.query_key_value.bias.normal_(0.0, 0.05)
            layer.temporal.dense.bias.normal_(0.0, 0.05)
    alphas = torch.cat([torch.sigmoid(layer.temporal.alpha_logit.detach()) for layer in model.layers])
    assert 0.1 < float(alphas.min()) and float(alphas.max()) < 0.9
    g = torch.Generator().manual_seed(5)
    S = L.seq_len
    ids = torch.cat([torch.randint(model.config.image_vocab_size, model.config.vocab_size, (2, L.text_len), generator=g),
                     torch.randint(0, model.config.image_vocab_size, (2, S - L.text_len), generator=g)], 1)
    valid = torch.ones(2, L.text_len, dtype=torch.bool)
    valid[1, :5] = False
    with torch.no_grad():
        got = model(ids, text_valid=valid).double()
        want = _reference_logits(model, ids, valid)
    rows = torch.cat([valid, torch.ones(2, S - L.text_len, dtype=torch.bool)], 1)  # pad rows: no output contract
    # The model runs in float32; the reference in float64.
    torch.testing.assert_close(got[rows], want[rows], atol=2e-5, rtol=1e-5)
    # The check is sharp: the plain alpha = 0.5 model is far from it.
    with torch.no_grad():
        for layer in model.layers:
            layer.temporal.alpha_logit.zero_()
        half = model(ids, text_valid=valid).double()
    assert float((half[rows] - want[rows]).abs().max()) > 1e-3
