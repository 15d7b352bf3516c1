"""SAT <-> cogframe conversion of CogView2's direct super-resolution model (``cogview2-dsr``) on tiny
checkpoints built with the release's key names (THUDM/CogView2 sr_pipeline/dsr_model.py: the
CogView2 backbone ``transformer.*`` plus the ``extra_position_embedding`` and ``attention_plus``
mixins of SAT's ``BaseModel.add_mixin``), and the converted model's logits against a literal
transcription of the release's forward pass (``DsrModel`` + ``sparse_attention_2d_light`` with the
Image-Local-Attention kernel's window and -10000 border fill)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from cogframe.core.model.config import SR_PRESETS
from cogframe.core.model.sr_config import sr_model_config
from cogframe.core.model.super_resolution import build_super_resolution_model
from cogframe.core.weights.convert import cogframe_to_sat, sat_to_cogframe
from cogframe.core.weights.pretrained import (
    expected_shapes,
    load_pretrained,
    load_super_resolution,
    read_weights_info,
    write_weights_folder,
)
from cogframe.core.weights.sat_files import read_sat_folder
from cogframe.core.weights.sat_mapping import SUPER_RESOLUTION, cogframe_to_sat_key
from cogframe.core.weights.sat_sr_config import sat_model_kind, sr_preset_from_sat_config
from cogframe.errors import DataError
from sat_fixtures import bits, sat_backbone_shapes, sat_mixin_shapes, write_sat_folder


def dsr_key_shapes(layers, d, vocab, pos, high_tokens, ffn=None):
    """The released DSR state-dict keys and shapes, written out from the release, not from cogframe's table."""
    # PositionEmbeddingMixin(new_sequence_length - max_sequence_length, hidden) and
    # AttentionMixin(num_layers, hidden): ModuleLists query_key_value / dense, no attn_distribution.
    return sat_backbone_shapes(layers, d, vocab, pos, ffn) | sat_mixin_shapes(layers, d, high_tokens,
                                                                               attn_distribution=False)


# Two tiny DSR models, each as (SAT model_config.json, what it must mean). "tiny" is the tiny_dsr
# preset; "release_like" keeps the release's low-res position shift (513 + p) and odd kernels 3/3.
CASES = {
    "tiny": {
        "sat": {"model_class": "DsrModel", "num_layers": 4, "hidden_size": 128, "num_attention_heads": 4,
                "vocab_size": 384, "hidden_dropout": 0.0, "attention_dropout": 0.0, "layernorm_order": "sandwich",
                "model_parallel_size": 1, "max_sequence_length": 96, "layout": "16, 80, 656", "kernel_size": 5,
                "kernel_size2": 5, "new_sequence_length": 672, "image_vocab_size": 256, "image_position_offset": 32,
                "backbone_text_len": 16, "lowres_position_shift": 0},
        "preset": "tiny_dsr",
    },
    "release_like": {
        "sat": {"model_class": "DsrModel", "num_layers": 2, "hidden_size": 32, "num_attention_heads": 2,
                "vocab_size": 96, "hidden_dropout": 0.0, "attention_dropout": 0.0, "layernorm_order": "sandwich",
                "model_parallel_size": 1, "max_sequence_length": 33, "layout": "6, 22, 166", "kernel_size": 3,
                "kernel_size2": 3, "new_sequence_length": 177, "image_vocab_size": 64, "image_position_offset": 16,
                "backbone_text_len": 6},
        "preset": {"backbone": {"num_layers": 2, "hidden_size": 32, "num_heads": 2, "vocab_size": 96,
                                "image_vocab_size": 64, "stage": "text_to_image", "hidden_dropout": 0.0,
                                "embedding_dropout": 0.0, "attention_dropout": 0.0,
                                "layout": {"text_len": 6, "frames": 1, "frame_height": 4, "frame_width": 4,
                                           "image_position_offset": 16, "base_position_rows": 33,
                                           "extra_position_rows": 0}},
                   "layout": {"text_len": 6, "low_height": 4, "low_width": 4, "scale": 3, "lowres_position_shift": 1},
                   "windows": {"high": [5, 3], "low": [3, 3], "border": "mask", "add_scalar": 0.0,
                               "lowres": "bidirectional"}},
    },
}


def _shapes_for(sat_cfg):
    text_len, low_end, high_end = (int(p) for p in sat_cfg["layout"].split(","))
    return dsr_key_shapes(sat_cfg["num_layers"], sat_cfg["hidden_size"], sat_cfg["vocab_size"],
                          sat_cfg["max_sequence_length"], high_end - low_end)


def write_dsr_sat(folder, case, *, dtype=torch.float32, state=None, iteration="1000", seed=0):
    """A SAT DSR folder as SwissArmyTransformer saves it: latest, <it>/mp_rank_00_model_states.pt, model_config.json."""
    sat_cfg = CASES[case]["sat"]
    if state is None:
        gen = torch.Generator().manual_seed(seed)
        state = {k: (torch.randn(s, generator=gen) * 0.2).to(dtype) for k, s in _shapes_for(sat_cfg).items()}
    write_sat_folder(folder, state, sat_cfg, iteration=iteration)
    return state


# ------------------------------------------------------------------------------ literal reference
def _gelu(x):  # SAT mpu/utils.py gelu_impl
    return 0.5 * x * (1.0 + torch.tanh(0.7978845608028654 * x * (1.0 + 0.044715 * x * x)))


def _ln(x, sat, name, eps=1e-5):
    return torch.nn.functional.layer_norm(x, x.shape[-1:], sat[f"{name}.weight"], sat[f"{name}.bias"], eps)


def _linear(x, sat, name):
    return x @ sat[f"{name}.weight"].t() + sat[f"{name}.bias"]


def _f_similar(q, k, kh, kw):
    """Image-Local-Attention ``f_similar``: q [N, c, H, W], k [N, c, h, w] -> [N, H, W, kh*kw].

    Query cell (X, Y) scores the keys at (X // (H/h) - kh//2 + a, Y // (W/w) - kw//2 + b), window
    index a*kw + b; out-of-grid positions score -10000 (kernels.cuh ``cc2k``, fill_neginf).
    """
    n, c, big_h, big_w = q.shape
    h, w = k.shape[-2:]
    xs = torch.arange(big_h) // (big_h // h)
    ys = torch.arange(big_w) // (big_w // w)
    out = torch.full((n, big_h, big_w, kh * kw), -10000.0)
    for a in range(kh):
        for b in range(kw):
            kx, ky = xs - kh // 2 + a, ys - kw // 2 + b
            vx, vy = (kx >= 0) & (kx < h), (ky >= 0) & (ky < w)
            gathered = k[:, :, kx.clamp(0, h - 1)][:, :, :, ky.clamp(0, w - 1)]  # [N, c, H, W]
            score = (q * gathered).sum(1)
            inside = vx[:, None] & vy[None, :]
            out[..., a * kw + b] = torch.where(inside, score, out[..., a * kw + b])
    return out


def _f_weighting(v, probs, kh, kw):
    """``f_weighting``: v [N, c, h, w], probs [N, H, W, kh*kw] -> [N, c, H, W]; out-of-grid adds nothing."""
    n, c, h, w = v.shape
    big_h, big_w = probs.shape[1:3]
    xs = torch.arange(big_h) // (big_h // h)
    ys = torch.arange(big_w) // (big_w // w)
    out = torch.zeros(n, c, big_h, big_w)
    for a in range(kh):
        for b in range(kw):
            kx, ky = xs - kh // 2 + a, ys - kw // 2 + b
            inside = (((kx >= 0) & (kx < h))[:, None] & ((ky >= 0) & (ky < w))[None, :]).float()
            gathered = v[:, :, kx.clamp(0, h - 1)][:, :, :, ky.clamp(0, w - 1)]
            out += gathered * (probs[..., a * kw + b] * inside)[:, None]
    return out


def release_logits(sat, sat_cfg, text, n_pad, low, placeholder):
    """One sample through the release's DsrModel, transcribed line by line (no cogframe code).

    ``text`` holds the real text tokens (``layout[0] - n_pad`` of them); the input is
    ``[0]*n_pad + text + low + [placeholder]*high_tokens`` as in ``filling_sequence_dsr``.
    """
    t_len, low_end, high_end = (int(p) for p in sat_cfg["layout"].split(","))
    heads, d = sat_cfg["num_attention_heads"], sat_cfg["hidden_size"]
    max_seq, offset = sat_cfg["max_sequence_length"], sat_cfg.get("image_position_offset", 512)
    shift = sat_cfg.get("lowres_position_shift", 1)
    k_size, k2 = sat_cfg["kernel_size"], sat_cfg["kernel_size2"]
    image_vocab = sat_cfg.get("image_vocab_size", 20000)
    l0, l1 = math.isqrt(low_end - t_len), math.isqrt(high_end - low_end)
    tokens = torch.cat([torch.zeros(n_pad, dtype=torch.long), text, low.flatten(),
                        torch.full((l1 * l1,), placeholder)])
    position_ids = torch.cat([torch.zeros(n_pad, dtype=torch.long), torch.arange(0, t_len - n_pad),
                              torch.arange(offset + shift, offset + shift + low_end - t_len),
                              torch.arange(max_seq, max_seq + high_end - low_end)])
    mask = torch.ones(low_end, low_end)
    mask[:t_len, t_len:] = 0
    mask[n_pad:, :n_pad] = 0
    # position_embedding_forward: the first layout[1] from the base table, the rest from the extra one
    h = sat["transformer.word_embeddings.weight"][tokens] + torch.cat([
        sat["transformer.position_embeddings.weight"][position_ids[:low_end]],
        sat["mixins.extra_position_embedding.position_embeddings.weight"][position_ids[low_end:] - max_seq]])
    h = h[None]
    hd = d // heads
    for i in range(sat_cfg["num_layers"]):
        pre = f"transformer.layers.{i}"
        x = _ln(h, sat, f"{pre}.input_layernorm")
        q0, k0, v0 = _linear(x[:, :low_end], sat, f"{pre}.attention.query_key_value").chunk(3, -1)
        q1, k1, v1 = _linear(x[:, low_end:], sat, f"mixins.attention_plus.query_key_value.{i}").chunk(3, -1)
        # sparse_attention_2d_light
        b, s0, s1 = 1, low_end, high_end - low_end
        q0 = q0.reshape(b, s0, heads, hd).permute(0, 2, 1, 3)
        v0 = v0.reshape(b, s0, heads, hd).permute(0, 2, 1, 3)
        k0t = k0.reshape(b, s0, heads, hd).permute(0, 2, 3, 1)
        scores = torch.matmul(q0 / math.sqrt(hd), k0t)
        scores = torch.mul(scores, mask) - 10000.0 * (1.0 - mask)
        probs0 = torch.softmax(scores, -1)
        q1 = (q1.view(b, s1, heads, hd).permute(0, 2, 3, 1) / math.sqrt(hd)).reshape(b * heads, hd, l1, l1)
        k1 = k1.view(b, s1, heads, hd).permute(0, 2, 3, 1).reshape(b * heads, hd, l1, l1)
        v1 = v1.view(b, s1, heads, hd).permute(0, 2, 3, 1).reshape(b * heads, hd, l1, l1)
        scores_11 = _f_similar(q1, k1, 2 * k_size - 1, k_size)
        k0_img = k0t[..., -l0 ** 2:].reshape(b * heads, hd, l0, l0)
        scores_10 = _f_similar(q1, k0_img, k2, k2)
        scores1 = torch.cat([scores_10.view(b * heads, -1, scores_10.shape[3]) + 0.0,
                             scores_11.view(b * heads, -1, scores_11.shape[3])], -1)
        probs1 = torch.softmax(scores1, -1)
        context0 = torch.matmul(probs0, v0)
        probs_11 = probs1[:, :, -scores_11.shape[3]:].reshape(scores_11.shape)
        context1 = _f_weighting(v1, probs_11, 2 * k_size - 1, k_size).reshape(b, heads * hd, l1 * l1)
        probs_10 = probs1[:, :, :scores_10.shape[3]].reshape(scores_10.shape)
        v0_img = v0[:, :, -l0 ** 2:].transpose(-1, -2).reshape(b * heads, hd, l0, l0)
        context1 = context1 + _f_weighting(v0_img, probs_10, k2, k2).reshape(b, heads * hd, l1 * l1)
        ctx0 = context0.transpose(1, 2).reshape(b, s0, d)
        ctx1 = context1.transpose(-1, -2)
        attn = torch.cat([_linear(ctx0, sat, f"{pre}.attention.dense"),
                          _linear(ctx1, sat, f"mixins.attention_plus.dense.{i}")], 1)
        # layer_forward_default, sandwich order
        h = h + _ln(attn, sat, f"{pre}.third_layernorm")
        mlp = _linear(_gelu(_linear(_ln(h, sat, f"{pre}.post_attention_layernorm"), sat,
                                    f"{pre}.mlp.dense_h_to_4h")), sat, f"{pre}.mlp.dense_4h_to_h")
        h = h + _ln(mlp, sat, f"{pre}.fourth_layernorm")
    h = _ln(h, sat, "transformer.final_layernorm")
    return (h @ sat["transformer.word_embeddings.weight"][:image_vocab].t())[0]  # final_forward


# ------------------------------------------------------------------------------ table and configs
def test_table_maps_the_released_dsr_model_onto_the_release_key_list():
    shapes = expected_shapes(SR_PRESETS["cogview2_dsr"], SUPER_RESOLUTION)
    sat = {cogframe_to_sat_key(k, SUPER_RESOLUTION): s for k, s in shapes.items()}
    assert sat == dsr_key_shapes(48, 3072, 150010, 1024, 3600)
    # CogView2 6B (5,902,307,328) + 48 x (QKV + dense) + 3600 x 3072 extra positions
    assert sum(int(np.prod(s)) for s in sat.values()) == 5_902_307_328 + 48 * (4 * 3072 ** 2 + 4 * 3072) + 3600 * 3072


def test_a_dsr_config_without_dsr_arguments_gets_the_release_pipeline_values():
    # direct_sr.py sets kernel_size 5, kernel_size2 5, layout [96,496,4096] in code.
    released = {"model_class": "DsrModel", "num_layers": 48, "hidden_size": 3072, "num_attention_heads": 48,
                "vocab_size": 150010, "max_sequence_length": 1024}
    preset = sr_preset_from_sat_config(released)
    assert sr_model_config(preset) == sr_model_config("cogview2_dsr")
    as_list = dict(released, layout=[96, 496, 4096], kernel_size=5, kernel_size2=5, new_sequence_length=4624)
    assert sr_model_config(sr_preset_from_sat_config(as_list)) == sr_model_config("cogview2_dsr")


@pytest.mark.parametrize("config,keys,kind", [
    ({"model_class": "DsrModel"}, [], "super_resolution"),
    ({"model_class": "CogVideoCacheModel", "cogvideo_stage": 1}, [], "cogvideo"),
    ({}, ["transformer.final_layernorm.weight"], "cogvideo"),
    ({}, ["mixins.attention_plus.dense.0.weight"], "super_resolution"),
    ({}, ["mixins.attention_plus.dense.0.weight", "mixins.attention_plus.attn_distribution.0"], "cogvideo"),
    ({"kernel_size2": 5}, [], "super_resolution"),
])
def test_the_model_kind_comes_from_the_config_or_the_tensor_names(config, keys, kind):
    assert sat_model_kind(config, keys) == kind


def test_a_config_that_says_dsr_and_cogvideo_is_refused():
    with pytest.raises(DataError, match="DsrModel.*cogvideo_stage"):
        sat_model_kind({"model_class": "DsrModel", "cogvideo_stage": 2}, [])


@pytest.mark.parametrize("change,message", [
    ({"layout": "96, 496, 4000"}, "square high-res grid"),
    ({"layout": "96,496"}, "three integers"),
    ({"kernel_size": 0}, "kernel_size is 0"),
])
def test_bad_dsr_configs_are_reported(change, message):
    with pytest.raises(DataError, match=message):
        sr_preset_from_sat_config({**CASES["tiny"]["sat"], **change})


# ------------------------------------------------------------------------------ conversion
@pytest.mark.parametrize("case", sorted(CASES))
def test_convert_reads_the_dsr_folder_and_the_model_matches_the_release_forward(tmp_path, convert_cli, case):
    sat = write_dsr_sat(tmp_path / "sat", case)
    result = convert_cli("sat", tmp_path / "sat", tmp_path / "cf")
    assert result.code == 0, result.err
    assert "super-resolution model" in result.out and "super_resolution.model.weights:" in result.out
    info = read_weights_info(tmp_path / "cf")
    want = CASES[case]["preset"]
    assert info.kind == "super_resolution"
    assert sr_model_config(info.model) == sr_model_config(want)
    assert info.preset == (want if isinstance(want, str) else None)
    import yaml

    snippet = yaml.safe_load((tmp_path / "cf" / "config.yaml").read_text())["recipe"]["super_resolution"]["model"]
    assert sr_model_config(snippet["preset"], snippet.get("overrides")) == sr_model_config(want)

    from cogframe.plugins.attention_local_window import LocalWindowAttention

    dense = load_super_resolution(tmp_path / "cf")
    sparse = load_super_resolution(tmp_path / "cf", plus_attention=LocalWindowAttention())
    assert all(not p.requires_grad for n, p in dense.named_parameters() if n.startswith("backbone."))
    layout = dense.config.layout
    placeholder = CASES[case]["sat"]["vocab_size"] - 1
    gen = torch.Generator().manual_seed(1)
    vocab, image_vocab = CASES[case]["sat"]["vocab_size"], dense.config.backbone.image_vocab_size
    for n_pad in (0, 3):
        text = torch.randint(image_vocab, vocab, (layout.text_len - n_pad,), generator=gen)
        low = torch.randint(0, image_vocab, (layout.low_height, layout.low_width), generator=gen)
        want_logits = release_logits(sat, CASES[case]["sat"], text, n_pad, low, placeholder)
        padded = torch.cat([torch.zeros(n_pad, dtype=torch.long), text])[None]
        valid = torch.ones(1, layout.text_len, dtype=torch.bool)
        valid[0, :n_pad] = False
        ids, _ = layout.build_input(padded, low[None], placeholder)
        for model in (dense, sparse):
            with torch.no_grad():
                got = model(ids, text_valid=valid)[0]
            # Pad rows differ by construction (the release lets a pad row see the whole text,
            # cogframe only itself) and no other row reads them.
            torch.testing.assert_close(got[n_pad:], want_logits[n_pad:], atol=2e-4, rtol=1e-4)


def test_sat_to_cogframe_to_sat_is_bit_exact(tmp_path):
    state = write_dsr_sat(tmp_path / "sat", "tiny", dtype=torch.float16, iteration="release")
    sat_to_cogframe(tmp_path / "sat", tmp_path / "cf")
    assert read_weights_info(tmp_path / "cf").source["dtype"] == "float16"
    cogframe_to_sat(tmp_path / "cf", tmp_path / "back")
    back = read_sat_folder(tmp_path / "back")
    assert set(back.state_dict) == set(state)
    for key, tensor in state.items():
        assert back.state_dict[key].dtype == torch.float16
        assert torch.equal(bits(back.state_dict[key]), bits(tensor)), key
    assert back.config == CASES["tiny"]["sat"]


def test_cogframe_to_sat_to_cogframe_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    model = build_super_resolution_model("tiny_dsr")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    tensors = model.state_dict()
    write_weights_folder(tmp_path / "cf", tensors, model=SR_PRESETS["tiny_dsr"], dtype="float32",
                         max_shard_bytes=200_000, kind="super_resolution")
    cogframe_to_sat(tmp_path / "cf", tmp_path / "sat")
    sat = read_sat_folder(tmp_path / "sat")
    assert sat.config["model_class"] == "DsrModel" and sat.config["kernel_size"] == 5
    assert set(sat.state_dict) == set(_shapes_for(sat.config))
    sat_to_cogframe(tmp_path / "sat", tmp_path / "cf2")
    info = read_weights_info(tmp_path / "cf2")
    assert (info.kind, info.preset) == ("super_resolution", "tiny_dsr")
    again = load_super_resolution(tmp_path / "cf2").state_dict()
    assert set(again) == set(tensors)
    for name, tensor in tensors.items():
        assert torch.equal(bits(again[name]), bits(tensor)), name


# ------------------------------------------------------------------------------ errors
def _drop(state):
    del state["mixins.attention_plus.dense.1.weight"]
    del state["transformer.layers.0.fourth_layernorm.bias"]


def _extra(state):
    state["mixins.attention_plus.attn_distribution.0"] = torch.zeros(128)
    state["mixins.cross_attention.dense.0.weight"] = torch.zeros(2, 2)


def _misshape(state):
    state["mixins.extra_position_embedding.position_embeddings.weight"] = torch.zeros(400, 128)


@pytest.mark.parametrize("edit,patterns", [
    (_drop, [r"2 missing tensors", r"mixins\.attention_plus\.dense\.1\.weight",
             r"transformer\.layers\.0\.fourth_layernorm\.bias"]),
    (_extra, [r"2 unexpected tensors", r"mixins\.attention_plus\.attn_distribution\.0 \(no row of SAT_KEY_TABLE",
              r"mixins\.cross_attention\.dense\.0\.weight"]),
    (_misshape, [r"wrong shapes", r"mixins\.extra_position_embedding\.position_embeddings\.weight .*"
                                  r"checkpoint \[400, 128\] vs model \[576, 128\]"]),
])
def test_missing_extra_and_misshaped_keys_exit_2_naming_them(tmp_path, convert_cli, edit, patterns):
    import re

    gen = torch.Generator().manual_seed(0)
    state = {k: torch.randn(s, generator=gen) for k, s in _shapes_for(CASES["tiny"]["sat"]).items()}
    edit(state)
    write_dsr_sat(tmp_path / "sat", "tiny", state=state)
    result = convert_cli("sat", tmp_path / "sat", tmp_path / "cf")
    assert result.code == 2 and result.err.startswith("error: ") and "Traceback" not in result.err
    assert "direct super-resolution" in result.err
    for pattern in patterns:
        assert re.search(pattern, result.err), (pattern, result.err)
    assert not (tmp_path / "cf" / "config.yaml").exists()


def test_each_loader_refuses_the_other_kind_of_folder(tmp_path):
    write_dsr_sat(tmp_path / "sat", "tiny")
    sat_to_cogframe(tmp_path / "sat", tmp_path / "cf")
    with pytest.raises(DataError, match="super_resolution model.*load_super_resolution"):
        load_pretrained(tmp_path / "cf")
    tensors = build_super_resolution_model("tiny_dsr").backbone.state_dict()
    from cogframe.core.model.config import PRESETS

    write_weights_folder(tmp_path / "t2i", tensors, model=PRESETS["tiny_t2i"], dtype="float32",
                         max_shard_bytes=10 ** 7)
    with pytest.raises(DataError, match="cogvideo model.*load_pretrained"):
        load_super_resolution(tmp_path / "t2i")


# ------------------------------------------------------------------------------ official recipe and plan
def test_the_official_recipe_ends_with_the_release_super_resolution_stage(tmp_path):
    from cogframe.config.official_weights import check_official_files
    from cogframe.config.recipes import load_recipe

    cfg = load_recipe("cogvideo_9b/sample_official", [f"weights_dir={tmp_path}"])
    stage = cfg.stages[-1]
    assert stage.name == "super_resolution" and stage.refine_rounds == 0
    # dsr_sampling.py: cluster top-k 6, temperature frozen at 1.0, in-cluster temperature 0.6
    assert (stage.sampler.name, stage.sampler.top_k, stage.sampler.temperature, stage.sampler.temperature2) == \
        ("cluster", 6, 1.0, 0.6)
    assert cfg.super_resolution.model.preset == "cogview2_dsr"
    layout = sr_model_config("cogview2_dsr").layout
    assert (layout.high_height, layout.high_width) == (60, 60)  # x8 icetk decoding: 480x480
    problems = {p.where: str(p) for p in check_official_files(cfg)}
    assert "does not exist" in problems["super_resolution.model.weights"]
    write_dsr_sat(tmp_path / "raw", "tiny")
    sat_to_cogframe(tmp_path / "raw", tmp_path / "cogview2-dsr")
    problems = {p.where: str(p) for p in check_official_files(cfg)}
    assert "super_resolution.model.weights" not in problems
    assert "tiny_dsr" in problems["super_resolution.model.preset"]  # the folder's kind and preset are read


def test_plan_prints_the_dsr_parameters_and_memory(cli):
    result = cli("plan", "cogvideo_9b/sample_official", "weights_dir=/nonexistent", "--devices", "1", "8", "--json")
    assert result.code == 0, result.err
    plan = json.loads(result.out)
    total, trainable = 7_725_895_680, 48 * (4 * 3072 ** 2 + 4 * 3072) + 3600 * 3072
    assert plan["model_kind"] == "super_resolution" and plan["preset"] == "cogview2_dsr"
    assert (plan["parameters"]["total"], plan["parameters"]["trainable"]) == (total, trainable)
    assert plan["inference_bytes"]["weights"] == 2 * total  # bf16
    one, eight = plan["memory_bytes"]
    assert one["optimizer"] == 8 * trainable and eight["parameters"] == 4 * total // 8
    text = cli("plan", "cogvideo_9b/sample_official", "weights_dir=/nonexistent", "--devices", "1")
    assert text.code == 0 and "super-resolution model cogview2_dsr" in text.out and "7,725,895,680" in text.out
    assert "inference memory" in text.out and "training memory of the plus channel" in text.out
