"""The direct super-resolution model (THUDM/CogView2 sr_pipeline/dsr_model.py ``DsrModel``) on the
tiny preset: shapes, parameter groups, the release's initialisation, the frozen backbone, and the
sparse and dense backends giving the same logits."""

from __future__ import annotations

import pytest
import torch

from cogframe.core.model.presets import build_model
from cogframe.core.model.super_resolution import (
    SuperResolutionTransformer,
    build_super_resolution_model,
    inherit_text_to_image_backbone,
    super_resolution_from_text_to_image,
)
from cogframe.core.model.transformer import loss_fn
from cogframe.errors import ShapeError
from cogframe.plugins.attention_local_window import LocalWindowAttention
from cogframe.plugins.attention_naive import NaiveAttention

PLACEHOLDER = 300


def t2i_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    t2i = build_model("tiny_t2i")
    with torch.no_grad():  # non-trivial LayerNorms and biases, so copies are really checked
        for p in t2i.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return t2i.state_dict()


def sample(layout, batch=2, seed=0, pad=3):
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(256, 384, (batch, layout.text_len), generator=g)
    low = torch.randint(0, 256, (batch, layout.low_height, layout.low_width), generator=g)
    high = torch.randint(0, 256, (batch, layout.high_height, layout.high_width), generator=g)
    valid = torch.ones(batch, layout.text_len, dtype=torch.bool)
    valid[0, :pad] = False
    return text, low, high, valid


@pytest.fixture(scope="module")
def model() -> SuperResolutionTransformer:
    return super_resolution_from_text_to_image("tiny_dsr", t2i_state(),
                                               plus_attention=LocalWindowAttention()).eval()


def test_shapes_and_high_only(model):
    layout = model.config.layout
    text, low, high, valid = sample(layout)
    ids, _ = layout.build_input(text, low, PLACEHOLDER, high)
    logits = model(ids, text_valid=valid)
    assert logits.shape == (2, layout.seq_len, model.config.backbone.image_vocab_size)
    high_rows = model(ids, text_valid=valid, high_only=True)
    assert high_rows.shape == (2, layout.high_tokens, 256)
    assert torch.allclose(high_rows, logits[:, layout.high_start:], atol=1e-5)
    with pytest.raises(ShapeError, match="seq_len"):
        model(ids[:, :-1])


def test_parameter_groups_and_freezing(model):
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    layers = model.config.backbone.num_layers
    assert names == ({"extra_position_embeddings.weight"}
                     | {f"attention_plus.{m}.{i}.{w}" for m in ("query_key_value", "dense")
                        for i in range(layers) for w in ("weight", "bias")})
    assert frozen == {f"backbone.{n}" for n in t2i_state()}


@pytest.mark.parametrize("position_init", ["tile", "nearest"])
def test_release_initialisation(position_init):
    """Plus channel = copy of the base attention; extra positions tile the frame positions (the
    release) or repeat each low-res cell's position over its scale x scale block (``nearest``)."""
    model = build_super_resolution_model("tiny_dsr", overrides={"position_init": position_init})
    for layer, qkv, dense in zip(model.backbone.layers, model.attention_plus.query_key_value,
                                 model.attention_plus.dense):
        assert torch.equal(qkv.weight, layer.attention.query_key_value.weight)
        assert torch.equal(qkv.bias, layer.attention.query_key_value.bias)
        assert torch.equal(dense.weight, layer.attention.dense.weight)
        assert torch.equal(dense.bias, layer.attention.dense.bias)
    layout = model.config.layout
    base = model.backbone.position_embeddings.weight
    extra = model.extra_position_embeddings.weight
    for x in range(layout.high_height):
        for y in range(layout.high_width):
            if position_init == "tile":
                lx, ly = x % layout.low_height, y % layout.low_width
            else:
                lx, ly = x // layout.scale, y // layout.scale
            src = layout.image_position_offset + lx * layout.low_width + ly
            assert torch.equal(extra[x * layout.high_width + y], base[src])


def test_an_unknown_position_init_is_refused():
    from cogframe.errors import ConfigError

    with pytest.raises(ConfigError, match="position_init must be 'tile'"):
        build_super_resolution_model("tiny_dsr", overrides={"position_init": "random"})


def test_base_rows_equal_the_text_to_image_model():
    """With the t2i model's own low-res rule and positions, text and low-res rows are exactly it."""
    state = t2i_state(1)
    sr = super_resolution_from_text_to_image(
        "tiny_dsr", state, overrides={"windows": {"lowres": "causal"}, "layout": {"lowres_position_shift": 0}},
        plus_attention=LocalWindowAttention()).eval()
    t2i = build_model("tiny_t2i").eval()
    t2i.load_state_dict(state)
    layout = sr.config.layout
    text, low, high, valid = sample(layout, seed=4)
    ids, _ = layout.build_input(text, low, PLACEHOLDER, high)
    got = sr(ids, text_valid=valid)[:, : layout.high_start]
    want = t2i(ids[:, : layout.high_start], text_valid=valid)
    assert (got - want).abs().max().item() < 1e-5


def test_base_rows_never_see_the_high_res_rows(model):
    layout = model.config.layout
    text, low, high, valid = sample(layout, seed=5)
    a, _ = layout.build_input(text, low, PLACEHOLDER, high)
    b = a.clone()
    b[:, layout.high_start:] = torch.randint(0, 256, b[:, layout.high_start:].shape)
    la, lb = model(a, text_valid=valid), model(b, text_valid=valid)
    assert torch.allclose(la[:, : layout.high_start], lb[:, : layout.high_start], atol=1e-6)
    assert not torch.allclose(la[:, layout.high_start:], lb[:, layout.high_start:])


def test_sparse_and_dense_backends_give_the_same_logits(model):
    dense = build_super_resolution_model("tiny_dsr", plus_attention=NaiveAttention()).eval()
    dense.load_state_dict(model.state_dict())
    sdpa = build_super_resolution_model("tiny_dsr").eval()  # default: dense sdpa, dense mask
    sdpa.load_state_dict(model.state_dict())
    layout = model.config.layout
    text, low, high, valid = sample(layout, seed=6)
    ids, _ = layout.build_input(text, low, PLACEHOLDER, high)
    ref = dense(ids, text_valid=valid)
    assert (model(ids, text_valid=valid) - ref).abs().max().item() < 1e-4
    assert (sdpa(ids, text_valid=valid) - ref).abs().max().item() < 1e-4


def test_gradients_reach_only_the_trainable_parameters():
    model = super_resolution_from_text_to_image("tiny_dsr", t2i_state(2),
                                                plus_attention=LocalWindowAttention()).train()
    layout = model.config.layout
    text, low, high, valid = sample(layout, seed=7)
    ids, labels = layout.build_input(text, low, PLACEHOLDER, high)
    loss_fn(model(ids, text_valid=valid), labels, layout.loss_mask()).backward()
    for name, p in model.named_parameters():
        if name.startswith("backbone."):
            assert p.grad is None, name
        else:
            assert p.grad is not None and bool(p.grad.abs().sum() > 0), name


def test_inheritance_errors_name_the_keys():
    model = build_super_resolution_model("tiny_dsr")
    state = t2i_state()
    bad = dict(state)
    del bad["final_layernorm.bias"]
    bad["extra.weight"] = torch.zeros(1)
    bad["word_embeddings.weight"] = torch.zeros(3, 3)
    with pytest.raises(ShapeError) as info:
        inherit_text_to_image_backbone(model, bad)
    text = str(info.value)
    assert "final_layernorm.bias" in text and "extra.weight" in text and "word_embeddings.weight" in text
    names = inherit_text_to_image_backbone(model, state, freeze=False)
    assert "layers.0.attention.query_key_value.weight" in names
    assert all(p.requires_grad for p in model.parameters())


def test_the_released_size_builds_on_meta():
    model = build_super_resolution_model("cogview2_dsr", device="meta")
    assert model.config.layout.seq_len == 4096
    assert model.extra_position_embeddings.weight.shape == (3600, 3072)
    assert len(model.attention_plus.query_key_value) == 48
