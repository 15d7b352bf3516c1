"""SAT <-> cogframe conversion on tiny checkpoints built with the exact key names of the released
SwissArmyTransformer checkpoints (SAT model/base_model.py, CogVideo models/cogvideo_model.py)."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import torch
import yaml

from cogframe.core.weights.convert import cogframe_to_sat, sat_to_cogframe
from cogframe.core.model.transformer import CogVideoTransformer
from cogframe.core.model.presets import PRESETS, build_model, model_config
from cogframe.core.weights.sat_mapping import cogframe_to_sat_key, preset_from_sat_config, sat_config_from_preset
from cogframe.core.weights.sat_files import read_sat_folder
from cogframe.core.weights.sharded_safetensors import INDEX_FILE, parse_size, plan_shards
from cogframe.core.weights.pretrained import expected_shapes, load_pretrained, read_weights_info
from cogframe.errors import ConfigError, DataError, ShapeError
from cogframe.config.official_weights import check_official_files
from cogframe.config.recipes import load_recipe
from sat_fixtures import LAYER_PARTS, bits, sat_backbone_shapes, sat_mixin_shapes, write_sat_folder

L, D, HEADS, VOCAB, IMAGE_VOCAB, POS, EXTRA = 2, 32, 2, 96, 64, 24, 32


def spec_key_shapes(layers, d, vocab, pos, extra, video, ffn=None):
    """The released state-dict keys and shapes, written out independently of cogframe's table."""
    shapes = sat_backbone_shapes(layers, d, vocab, pos, ffn)
    if video:
        shapes |= sat_mixin_shapes(layers, d, extra, attn_distribution=True)
    return shapes


STAGES = {  # name -> (cogframe stage, SAT cogvideo_stage, SAT window_size, cogframe temporal)
    "t2i": ("text_to_image", None, None, None),
    "stage1": ("sequential", 1, -1, {"window": None}),
    "stage2": ("interpolation", 2, 2, {"window": [2, 2], "shift": [1, 1]}),
}


def tiny_preset(kind):
    """What the tiny SAT config below must mean, written by hand."""
    stage, _, _, temporal = STAGES[kind]
    video = kind != "t2i"
    preset = {"num_layers": L, "hidden_size": D, "num_heads": HEADS, "vocab_size": VOCAB,
              "image_vocab_size": IMAGE_VOCAB, "stage": stage, "hidden_dropout": 0.0, "embedding_dropout": 0.0,
              "attention_dropout": 0.0,
              "layout": {"text_len": 4, "frames": 3 if video else 1, "frame_height": 4, "frame_width": 4,
                         "image_position_offset": 8, "base_position_rows": POS,
                         "extra_position_rows": EXTRA if video else 0}}
    if video:
        preset["temporal"] = temporal
    return preset


def sat_config(kind):
    _, stage_id, window, _ = STAGES[kind]
    config = {"model_class": "CogVideoCacheModel" if stage_id else "CachedAutoregressiveModel",
              "num_layers": L, "hidden_size": D, "num_attention_heads": HEADS, "vocab_size": VOCAB,
              "hidden_dropout": 0.0, "attention_dropout": 0.0, "layernorm_order": "sandwich",
              "model_parallel_size": 1, "max_sequence_length": POS, "image_position_offset": 8,
              "layout": "4, 20, 52" if stage_id else "4, 20, 20"}
    if stage_id:
        config.update(cogvideo_stage=stage_id, window_size=window, additional_seqlen=EXTRA)
    return config


def write_sat(folder, kind, *, dtype=torch.float32, iteration="1000", extra_payload=None, state=None, seed=0):
    """A SAT folder as SwissArmyTransformer saves it: latest, <it>/mp_rank_00_model_states.pt, model_config.json."""
    if state is None:
        gen = torch.Generator().manual_seed(seed)
        state = {k: (torch.randn(s, generator=gen) * 0.2).to(dtype)
                 for k, s in spec_key_shapes(L, D, VOCAB, POS, EXTRA, kind != "t2i").items()}
    write_sat_folder(folder, state, sat_config(kind), iteration=iteration, extra_payload=extra_payload)
    return state


def direct_model(kind, sat_state):
    """The tiny model constructed directly, its tensors copied from SAT names by hand."""
    model = CogVideoTransformer(model_config(tiny_preset(kind))).eval()
    with torch.no_grad():
        model.word_embeddings.weight.copy_(sat_state["transformer.word_embeddings.weight"])
        model.position_embeddings.weight.copy_(sat_state["transformer.position_embeddings.weight"])
        model.final_layernorm.weight.copy_(sat_state["transformer.final_layernorm.weight"])
        model.final_layernorm.bias.copy_(sat_state["transformer.final_layernorm.bias"])
        for i, layer in enumerate(model.layers):
            for part in LAYER_PARTS:
                for p in ("weight", "bias"):
                    layer.get_submodule(part).get_parameter(p).copy_(sat_state[f"transformer.layers.{i}.{part}.{p}"])
            if kind != "t2i":
                for p in ("weight", "bias"):
                    layer.temporal.query_key_value.get_parameter(p).copy_(
                        sat_state[f"mixins.attention_plus.query_key_value.{i}.{p}"])
                    layer.temporal.dense.get_parameter(p).copy_(sat_state[f"mixins.attention_plus.dense.{i}.{p}"])
                layer.temporal.alpha_logit.copy_(sat_state[f"mixins.attention_plus.attn_distribution.{i}"])
        if kind != "t2i":
            model.extra_position_embeddings.weight.copy_(
                sat_state["mixins.extra_position_embedding.position_embeddings.weight"])
    return model


# ------------------------------------------------------------------------------ table and configs
@pytest.mark.parametrize("preset,video,total", [("cogview2_6b", False, 5_902_307_328),
                                                ("cogvideo_9b_stage1", True, 7_721_127_936),
                                                ("cogvideo_9b_stage2", True, 7_721_127_936)])
def test_table_maps_the_full_size_models_onto_the_spec_key_list(preset, video, total):
    cogframe_shapes = expected_shapes(PRESETS[preset])
    sat_shapes = {cogframe_to_sat_key(k): s for k, s in cogframe_shapes.items()}
    assert sat_shapes == spec_key_shapes(48, 3072, 150010, 1024, 2000, video)
    assert sum(int(np.prod(s)) for s in sat_shapes.values()) == total


def _windowed_stage1(preset):
    return preset.get("stage") == "sequential" and (preset.get("temporal") or {}).get("window") is not None


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_sat_config_round_trips_every_builtin_preset(name):
    if _windowed_stage1(PRESETS[name]):
        # SAT's stage 1 is always full causal: a windowed stage 1 has no faithful SAT config.
        with pytest.raises(DataError, match="full causal.*temporal.window=null"):
            sat_config_from_preset(PRESETS[name])
        return
    sat = sat_config_from_preset(PRESETS[name])
    assert model_config(preset_from_sat_config(sat)) == model_config(PRESETS[name])


@pytest.mark.parametrize("window_size", [-1, 10, 4, None])
def test_stage1_sat_config_is_full_causal_whatever_its_window_size(window_size):
    # The release's InferenceModel_Sequential passes window_size=-1 whatever model_config.json holds.
    released = {"num_layers": 48, "hidden_size": 3072, "num_attention_heads": 48, "vocab_size": 150010,
                "max_sequence_length": 1024, "layout": "64, 464, 2064", "additional_seqlen": 2000,
                "cogvideo_stage": 1}
    if window_size is not None:
        released["window_size"] = window_size
    preset = preset_from_sat_config(released)
    assert preset["temporal"] == {"window": None}
    assert model_config(preset) == model_config("cogvideo_9b_stage1")
    assert model_config(preset).temporal.window is None


def test_converting_a_stage1_checkpoint_with_a_window_size_builds_full_causal_attention(tmp_path, convert_cli):
    state = write_sat(tmp_path / "sat", "stage1")
    config = json.loads((tmp_path / "sat" / "model_config.json").read_text())
    (tmp_path / "sat" / "model_config.json").write_text(json.dumps({**config, "window_size": 10}))
    done = convert_cli("sat", tmp_path / "sat", tmp_path / "cf", "--image-vocab-size", IMAGE_VOCAB)
    assert done.code == 0, done.err
    model = load_pretrained(tmp_path / "cf")
    assert model.config == model_config(tiny_preset("stage1")) and model.config.temporal.window is None
    ids = torch.randint(0, VOCAB, (1, model.config.layout.seq_len), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        # Same class, same weights, same input: bit-identical by construction.
        assert torch.equal(model(ids), direct_model("stage1", state)(ids))


def test_released_config_values_mean_the_builtin_presets():
    released = {"num_layers": 48, "hidden_size": 3072, "num_attention_heads": 48, "vocab_size": 150010,
                "max_sequence_length": 1024, "layout": "64, 464, 2064", "additional_seqlen": 2000,
                "layernorm_order": "sandwich", "model_parallel_size": 1}
    stage1 = preset_from_sat_config({**released, "cogvideo_stage": 1, "window_size": -1})
    stage2 = preset_from_sat_config({**released, "cogvideo_stage": 2, "window_size": 10})
    assert model_config(stage1) == model_config("cogvideo_9b_stage1")
    assert model_config(stage2) == model_config("cogvideo_9b_stage2")
    with pytest.raises(DataError, match="model_parallel_size is 2.*Merge"):
        preset_from_sat_config({**released, "model_parallel_size": 2})


# ------------------------------------------------------------------------------ conversion
@pytest.mark.parametrize("kind", ["t2i", "stage1", "stage2"])
def test_converted_model_gives_the_logits_of_a_direct_construction(tmp_path, kind):
    state = write_sat(tmp_path / "sat", kind)
    result = sat_to_cogframe(tmp_path / "sat", tmp_path / "cf", image_vocab_size=IMAGE_VOCAB)
    assert result.tensors == len(state)
    model = load_pretrained(tmp_path / "cf")
    assert model.config == model_config(tiny_preset(kind))
    snippet = yaml.safe_load((tmp_path / "cf" / "config.yaml").read_text())["recipe"]["model"]
    assert model_config(snippet["preset"], snippet["overrides"]) == model.config
    assert snippet["weights"] == str((tmp_path / "cf").resolve())
    ids = torch.randint(0, VOCAB, (2, model.config.layout.seq_len), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = direct_model(kind, state)(ids)
        got = model(ids)
    assert got.shape == (2, model.config.layout.seq_len, IMAGE_VOCAB)
    assert torch.equal(got, expected)


def test_fp16_round_trip_is_bitwise_and_loads_as_float32(tmp_path):
    rng = np.random.RandomState(0).get_state()  # DeepSpeed also pickles numpy RNG state: pure data
    state = write_sat(tmp_path / "sat", "stage2", dtype=torch.float16, iteration="release",
                      extra_payload={"iteration": 5, "np_rng_state": rng, "ds_version": "0.6"})
    sat_to_cogframe(tmp_path / "sat", tmp_path / "cf", shard_size="8KB", image_vocab_size=IMAGE_VOCAB)
    index = json.loads((tmp_path / "cf" / INDEX_FILE).read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert len(index["weight_map"]) == len(state)
    info = read_weights_info(tmp_path / "cf")
    assert (info.dtype, info.source["dtype"], info.source["iteration"]) == ("float32", "float16", "release")

    model = load_pretrained(tmp_path / "cf")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert torch.equal(model.layers[1].temporal.alpha_logit,
                       state["mixins.attention_plus.attn_distribution.1"].float())

    cogframe_to_sat(tmp_path / "cf", tmp_path / "back")
    back = read_sat_folder(tmp_path / "back")
    assert back.iteration == "1" and back.config == sat_config("stage2")
    assert set(back.state_dict) == set(state)
    for key, tensor in state.items():
        assert back.state_dict[key].dtype == torch.float16
        assert torch.equal(bits(back.state_dict[key]), bits(tensor)), key


def test_missing_and_unexpected_keys_are_all_named(tmp_path):
    state = {k: torch.zeros(s) for k, s in spec_key_shapes(L, D, VOCAB, POS, EXTRA, True).items()}
    for key in ("transformer.layers.1.mlp.dense_4h_to_h.bias", "mixins.attention_plus.attn_distribution.0"):
        del state[key]
    state["transformer.layers.0.attention.rotary.weight"] = torch.zeros(2)
    state["transformer.layers.7.input_layernorm.weight"] = torch.zeros(D)
    write_sat(tmp_path / "sat", "stage1", state=state)
    with pytest.raises(DataError) as err:
        sat_to_cogframe(tmp_path / "sat", tmp_path / "cf", image_vocab_size=IMAGE_VOCAB)
    message = str(err.value)
    for name in ("transformer.layers.1.mlp.dense_4h_to_h.bias", "mixins.attention_plus.attn_distribution.0",
                 "transformer.layers.0.attention.rotary.weight", "transformer.layers.7.input_layernorm.weight"):
        assert name in message
    assert "2 missing tensors" in message and "2 unexpected tensors" in message
    assert not (tmp_path / "cf").exists()


def test_wrong_shapes_are_named_with_both_shapes(tmp_path):
    state = {k: torch.zeros(s) for k, s in spec_key_shapes(L, D, VOCAB, POS, EXTRA, True).items()}
    state["transformer.position_embeddings.weight"] = torch.zeros(POS + 1, D)
    write_sat(tmp_path / "sat", "stage1", state=state)
    with pytest.raises(ShapeError, match=r"transformer\.position_embeddings\.weight .*checkpoint \[25, 32\] "
                                         r"vs model \[24, 32\]"):
        sat_to_cogframe(tmp_path / "sat", tmp_path / "cf", image_vocab_size=IMAGE_VOCAB)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_code_running_pickle_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    write_sat(tmp_path / "sat", "t2i", extra_payload={"evil": _RunsCode(marker)})
    with pytest.raises(DataError, match="refusing to load .*'posix.system'.*could run code"):
        sat_to_cogframe(tmp_path / "sat", tmp_path / "cf")
    assert not marker.exists()


def test_destination_must_be_empty_unless_overwrite(tmp_path):
    write_sat(tmp_path / "sat", "t2i")
    sat_to_cogframe(tmp_path / "sat", tmp_path / "cf", shard_size="4KB", image_vocab_size=IMAGE_VOCAB)
    many = {p.name for p in (tmp_path / "cf").glob("model-*")}
    with pytest.raises(DataError, match="not empty.*--overwrite"):
        sat_to_cogframe(tmp_path / "sat", tmp_path / "cf", image_vocab_size=IMAGE_VOCAB)
    sat_to_cogframe(tmp_path / "sat", tmp_path / "cf", image_vocab_size=IMAGE_VOCAB, overwrite=True)
    assert {p.name for p in (tmp_path / "cf").glob("model-*")} == {"model-00001-of-00001.safetensors"}
    assert len(many) > 1


def test_sizes_and_shard_plans():
    assert parse_size("2GB") == 2 * 10**9 and parse_size("1.5GiB") == 3 * 2**29 and parse_size(512) == 512
    with pytest.raises(ConfigError, match="not a size"):
        parse_size("two gigs")
    assert plan_shards([("a", 6), ("b", 6), ("c", 20), ("d", 1)], 10) == [["a"], ["b"], ["c"], ["d"]]
    assert plan_shards([("a", 3), ("b", 3), ("c", 3)], 10) == [["a", "b", "c"]]


def test_cogframe_native_weights_write_a_loadable_sat_config(tmp_path):
    from cogframe.core.weights.pretrained import write_weights_folder

    full_causal = {"window": None, "shift": None}  # SAT's stage 1 has no window
    model = build_model("tiny_stage1", overrides={"num_layers": 1, "temporal": full_causal})
    preset = {**PRESETS["tiny_stage1"], "num_layers": 1, "temporal": full_causal}
    write_weights_folder(tmp_path / "cf", model.state_dict(), model=preset, dtype="float32", max_shard_bytes=10**9)
    cogframe_to_sat(tmp_path / "cf", tmp_path / "sat", dtype="bfloat16")
    back = read_sat_folder(tmp_path / "sat")
    assert model_config(preset_from_sat_config(back.config)) == model.config
    assert {t.dtype for t in back.state_dict.values()} == {torch.bfloat16}


# ------------------------------------------------------------------------------ command line
def test_cli_converts_both_ways(tmp_path, convert_cli):
    write_sat(tmp_path / "sat", "stage1")
    done = convert_cli("sat", tmp_path / "sat", tmp_path / "cf", "--dtype", "bfloat16", "--shard-size", "10KB",
                       "--image-vocab-size", IMAGE_VOCAB)
    assert done.code == 0, done.err
    assert "tensors" in done.out and "bfloat16" in done.out and "weights:" in done.out
    assert read_weights_info(tmp_path / "cf").dtype == "bfloat16"
    back = convert_cli("to-sat", tmp_path / "cf", tmp_path / "back")
    assert back.code == 0, back.err
    assert (tmp_path / "back" / "latest").read_text() == "1"
    assert (tmp_path / "back" / "1" / "mp_rank_00_model_states.pt").is_file()


def _corrupt(folder):
    write_sat(folder, "t2i")
    (folder / "1000" / "mp_rank_00_model_states.pt").write_bytes(b"not a pickle at all")


def _truncated(folder):
    write_sat(folder, "t2i")
    path = folder / "1000" / "mp_rank_00_model_states.pt"
    path.write_bytes(path.read_bytes()[:300])


def _unsafe(folder):
    write_sat(folder, "t2i", extra_payload={"evil": _RunsCode(folder / "pwned")})


def _wrong_shape(folder):
    state = {k: torch.zeros(s) for k, s in spec_key_shapes(L, D, VOCAB, POS, EXTRA, False).items()}
    state["transformer.final_layernorm.bias"] = torch.zeros(D + 3)
    write_sat(folder, "t2i", state=state)


def _no_latest(folder):
    write_sat(folder, "t2i")
    (folder / "latest").unlink()


def _no_states(folder):
    write_sat(folder, "t2i")
    (folder / "latest").write_text("2000")


@pytest.mark.parametrize("make,message", [
    (_no_latest, "no 'latest' file"),
    (_no_states, r"2000/mp_rank_00_model_states\.pt is missing"),
    (_corrupt, "corrupt"),
    (_truncated, "truncated or corrupt"),
    (_unsafe, "refusing to load"),
    (_wrong_shape, r"transformer\.final_layernorm\.bias .*\[35\] vs model \[32\]"),
])
def test_cli_errors_exit_2_with_a_clear_message(tmp_path, convert_cli, make, message):
    make(tmp_path / "sat")
    result = convert_cli("sat", tmp_path / "sat", tmp_path / "cf", "--image-vocab-size", IMAGE_VOCAB)
    assert result.code == 2
    assert result.err.startswith("error: ") and re.search(message, result.err), result.err
    assert "Traceback" not in result.err
    assert not (tmp_path / "sat" / "pwned").exists()


# ------------------------------------------------------------------------------ official recipe
def test_official_recipe_names_every_missing_file_and_how_to_get_it(tmp_path):
    cfg = load_recipe("cogvideo_9b/sample_official", [f"weights_dir={tmp_path}"])
    problems = {p.where: str(p) for p in check_official_files(cfg)}
    assert set(problems) == {"stage1.model.weights", "stage2.model.weights", "text_tokenizer.model_path",
                             "image_tokenizer.path", "first_frame_sampler.clusters", "token_sampler.clusters",
                             "stages.2.sampler.clusters", "super_resolution.model.weights"}
    assert "cogview2-dsr.zip" in problems["super_resolution.model.weights"]
    assert "cogvideo-stage1.zip" in problems["stage1.model.weights"]
    assert "cogframe convert sat cogvideo-stage2/" in problems["stage2.model.weights"]
    assert "ice_text.model" in problems["text_tokenizer.model_path"] and "icetk" in problems["text_tokenizer.model_path"]
    assert "~/.icetk_models" in problems["image_tokenizer.path"]
    assert "cluster_label2.npy" in problems["token_sampler.clusters"]

    write_sat(tmp_path / "cogvideo-stage1", "stage1")  # an unconverted SAT folder
    write_sat(tmp_path / "raw2", "stage2")
    sat_to_cogframe(tmp_path / "raw2", tmp_path / "cogvideo-stage2", image_vocab_size=IMAGE_VOCAB)
    problems = {p.where: str(p) for p in check_official_files(cfg)}
    assert "is a SwissArmyTransformer checkpoint" in problems["stage1.model.weights"]
    assert "cogframe convert sat" in problems["stage1.model.weights"]
    assert "stage2.model.preset" in problems  # tiny weights are not cogvideo_9b_stage2

    sat_to_cogframe(tmp_path / "cogvideo-stage1", tmp_path / "stage1-cf", image_vocab_size=IMAGE_VOCAB)
    for name in ("icetk/ice_text.model", "icetk/ice_image.pt", "cluster_label2.npy"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    from test_convert_sr import write_dsr_sat  # a tiny SAT cogview2-dsr folder

    write_dsr_sat(tmp_path / "raw-dsr", "tiny")
    sat_to_cogframe(tmp_path / "raw-dsr", tmp_path / "cogview2-dsr")
    cfg = load_recipe("cogvideo_9b/sample_official", [f"weights_dir={tmp_path}", "stage1.model.preset=null",
                                                      f"stage1.model.weights={tmp_path / 'stage1-cf'}",
                                                      "stage2.model.preset=null", "super_resolution.model.preset=null"])
    assert check_official_files(cfg) == []


def test_corrupt_or_incomplete_weights_folders_are_reported(tmp_path):
    write_sat(tmp_path / "sat", "t2i")
    sat_to_cogframe(tmp_path / "sat", tmp_path / "cf", image_vocab_size=IMAGE_VOCAB)
    shard = tmp_path / "cf" / "model-00001-of-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(DataError, match="shard is corrupt"):
        load_pretrained(tmp_path / "cf")
    (tmp_path / "cf" / "config.yaml").unlink()
    with pytest.raises(DataError, match="config.yaml is missing.*cogframe convert sat"):
        load_pretrained(tmp_path / "cf")
