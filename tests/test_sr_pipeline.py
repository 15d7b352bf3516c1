"""Super-resolution end to end: paired shards, DSR training, the sampling stage, the demo switch."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

from cogframe.core.generation.prompts import TextPrompt
from cogframe.core.generation.super_resolution import SuperResolutionOptions, refine_cells, super_resolve
from cogframe.core.generation.token_sampling import top_k_filter
from cogframe.core.io.token_shards import read_manifest
from cogframe.core.model.presets import build_model
from cogframe.core.model.super_resolution import build_super_resolution_model
from cogframe.errors import ConfigError, DataError
from cogframe.plugins import get_registries
from cogframe.plugins.dataset_moving_shapes import COLOURS, DIRECTIONS, SHAPES, MovingShapes
from cogframe.plugins.tokenizer_sentencepiece import SentencePieceTokenizer
from cogframe.plugins.vqvae import VQVAE

CAPTIONS = [f"a {c} {s} moving {d}" for s, c, d in itertools.product(SHAPES, COLOURS, DIRECTIONS)]
# A 1-layer, 32-wide backbone over 4x4-token frames (16 px through a 4x VQ-VAE): 12x12 high-res cells.
BACKBONE = {"num_layers": 1, "hidden_size": 32, "num_heads": 2, "layout": {"frame_height": 4, "frame_width": 4}}
SR_OVERRIDES = {"backbone_overrides": BACKBONE, "layout": {"low_height": 4, "low_width": 4}}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """Text tokenizer, an untrained VQ-VAE with 256 codes, a random tiny text-to-image backbone."""
    root = tmp_path_factory.mktemp("sr_assets")
    tok = SentencePieceTokenizer.train(CAPTIONS * 3, root / "tok", vocab_size=96)
    torch.manual_seed(0)
    VQVAE(codebook_size=256, code_dim=8, channels=8).save(root / "vq")
    t2i = build_model("tiny_t2i", overrides=BACKBONE)
    save_file({k: v.contiguous() for k, v in t2i.state_dict().items()}, str(root / "t2i.safetensors"))
    return {"tok": str(tok), "vq": str(root / "vq"), "t2i": str(root / "t2i.safetensors"), "root": root}


def _prepare_cfg(out, assets, **changes):
    cfg = OmegaConf.create({
        "task": "prepare", "output_dir": str(out), "seed": 0, "text_len": 16, "shard_size": 8,
        "dataset": {"name": "moving_shapes", "size": 16, "max_seconds": 3},
        "splits": {"train": {"split": "train", "num_clips": 12}, "val": {"split": "val", "num_clips": 4}},
        "high_res": {"scale": 3, "dataset": {"render_scale": 3}},
        "text_tokenizer": {"name": "sentencepiece", "model_path": assets["tok"], "id_offset": 256},
        "image_tokenizer": {"name": "vqvae", "path": assets["vq"]},
        "frame_rate_sampler": {"name": "single_frame"},
    })
    for key, value in changes.items():
        OmegaConf.update(cfg, key, value, merge=False, force_add=True)
    return cfg


def _run(cfg, task_name):
    regs = get_registries()
    task = regs.build("task", {"name": task_name})
    task.validate(cfg, regs)
    task.run(cfg, regs)


@pytest.fixture(scope="module")
def shards(tmp_path_factory, assets):
    out = tmp_path_factory.mktemp("sr_shards")
    _run(_prepare_cfg(out, assets), "prepare")
    return out


# ------------------------------------------------------------------------------------------- data
def test_render_scale_draws_the_same_scene_on_a_finer_grid():
    low = MovingShapes(num_clips=6, size=16, max_seconds=3, speed=2.0)
    high = MovingShapes(num_clips=6, size=16, max_seconds=3, speed=2.0, render_scale=3)
    for i in range(6):
        a, b = low[i], high[i]
        assert a.caption == b.caption and b.frames.shape == (a.num_frames, 48, 48, 3)
        # The centre pixel of each 3x3 block samples the low-res pixel's centre: identical.
        assert np.array_equal(b.frames[:, 1::3, 1::3], a.frames)
    with pytest.raises(ConfigError, match="render_scale"):
        MovingShapes(render_scale=0)


def test_prepare_writes_paired_shards(shards, assets):
    manifest = read_manifest(shards)
    assert manifest["grid"] == [4, 4] and manifest["high_res"] == {"scale": 3, "grid": [12, 12]}
    assert manifest["splits"]["train"]["num_samples"] == 12 and manifest["splits"]["val"]["num_samples"] == 4
    raw = load_file(str(shards / "train-00000.safetensors"))
    assert raw["frames"].shape == (8, 1, 4, 4) and raw["frames_high"].shape == (8, 1, 12, 12)
    vq = VQVAE.load(assets["vq"])
    high = MovingShapes(num_clips=12, size=16, max_seconds=3, render_scale=3)
    captions = json.loads(__import__("safetensors").safe_open(str(shards / "train-00000.safetensors"), "pt")
                          .metadata()["captions"])
    for row in (0, 5):
        index = int(raw["index"][row])
        clip = high[index]
        assert captions[row] == clip.caption
        frames = torch.from_numpy(clip.frames).permute(0, 3, 1, 2).float() / 255.0
        with torch.no_grad():
            codes = vq.encode(frames)
        # The stored high-res grid is one of the clip's frames, tokenised (the sampled frame).
        assert any(torch.equal(codes[t].int(), raw["frames_high"][row, 0]) for t in range(len(codes)))


def test_prepare_refuses_high_res_frames_of_the_wrong_size(tmp_path, assets):
    cfg = _prepare_cfg(tmp_path, assets, **{"high_res.dataset": {"render_scale": 2}})
    with pytest.raises(DataError, match="not 3 x the low-res"):
        _run(cfg, "prepare")
    with pytest.raises(ConfigError, match="high_res.scale"):
        _run(_prepare_cfg(tmp_path / "b", assets, **{"high_res.scale": 1}), "prepare")


# ------------------------------------------------------------------------------------------- training
def _train_cfg(out, shards, assets, **changes):
    cfg = OmegaConf.create({
        "task": "train_super_resolution", "output_dir": str(out),
        "model": {"preset": "tiny_dsr", "overrides": SR_OVERRIDES,
                  "attention": {"base": {"name": "sdpa"}, "plus": {"name": "sr_local_window"}},
                  "init": {"from": assets["t2i"], "freeze_inherited": True}},
        "text_tokenizer": {"name": "sentencepiece", "model_path": assets["tok"], "id_offset": 256},
        "data": {"shards": str(shards), "train_split": "train", "val_split": "val"},
        # decay_steps fixes the cosine span, so a 4-step run is the first half of the 8-step one.
        "train": {"steps": 8, "decay_steps": 8, "batch_size": 4, "lr": 3e-3, "warmup_steps": 0, "threads": 1,
                  "device": "cpu",
                  "log_every": 1, "eval_every": 0, "save_every": 4, "keep_last": 3, "progress": False},
        "loggers": [{"name": "jsonl", "path": str(out / "metrics.jsonl")}],
        "resume": False, "overwrite": False,
    })
    for key, value in changes.items():
        OmegaConf.update(cfg, key, value, merge=False, force_add=True)
    return cfg


def test_training_lowers_the_loss_and_resumes_exactly(tmp_path, shards, assets):
    full = tmp_path / "full"
    _run(_train_cfg(full, shards, assets), "train_super_resolution")
    losses = [json.loads(line)["loss"] for line in (full / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 8 and np.mean(losses[-3:]) < np.mean(losses[:3])
    weights = load_file(str(full / "model.safetensors"))
    assert "attention_plus.dense.0.weight" in weights and not any(k.startswith("inner.") for k in weights)
    # The backbone stayed frozen: identical to the inherited text-to-image model.
    t2i = load_file(assets["t2i"])
    assert all(torch.equal(weights[f"backbone.{k}"], v) for k, v in t2i.items())

    part = tmp_path / "part"
    _run(_train_cfg(part, shards, assets, **{"train.steps": 4}), "train_super_resolution")
    _run(_train_cfg(part, shards, assets, resume=True), "train_super_resolution")
    resumed = load_file(str(part / "model.safetensors"))
    assert all(torch.allclose(resumed[k], weights[k], atol=1e-6) for k in weights)


def test_training_refuses_unpaired_shards_and_missing_backbone(tmp_path, shards, assets):
    plain = tmp_path / "plain"
    _run(_prepare_cfg(plain, assets, high_res=None, **{"splits.train.num_clips": 4}), "prepare")
    with pytest.raises(ConfigError, match="not paired super-resolution shards"):
        _run(_train_cfg(tmp_path / "run", plain, assets), "train_super_resolution")
    with pytest.raises(ConfigError, match="model.init.from"):
        _run(_train_cfg(tmp_path / "run2", shards, assets, **{"model.init.from": str(tmp_path / "no.safetensors")}),
             "train_super_resolution")


# ------------------------------------------------------------------------------------------- sampling
class _TopK:
    def __call__(self, logits, positions, noise):
        from cogframe.core.generation.token_sampling import sample_categorical

        return sample_categorical(top_k_filter(logits, 6), noise.uniform(0))


@pytest.fixture(scope="module")
def sr_model():
    torch.manual_seed(0)
    return build_super_resolution_model("tiny_dsr", overrides=SR_OVERRIDES).eval()


def _prompt(batch):
    ids = torch.randint(256, 300, (batch, 16), generator=torch.Generator().manual_seed(1))
    return TextPrompt(ids, torch.ones(batch, 16, dtype=torch.bool))


def test_super_resolve_keeps_frames_and_is_deterministic_per_seed(sr_model):
    low = torch.randint(0, 256, (2, 3, 4, 4), generator=torch.Generator().manual_seed(0))
    run = lambda seed, **kw: super_resolve(sr_model, low, _prompt(2), placeholder_id=259,  # noqa: E731
                                           options=SuperResolutionOptions(_TopK(), seed=seed, **kw))
    a = run(0)
    assert a.frames.shape == (2, 3, 12, 12) and a.passes == 1
    assert torch.equal(a.frames, run(0, frame_batch=2).frames)  # batching does not change the tokens
    assert not torch.equal(a.frames, run(1).frames)
    refined = run(0, refine_rounds=2)
    assert refined.passes == 3 and refined.frames.shape == a.frames.shape


def test_shared_noise_gives_identical_frames_the_same_tokens(sr_model):
    still = torch.randint(0, 256, (1, 1, 4, 4), generator=torch.Generator().manual_seed(2)).expand(1, 4, 4, 4)
    shared = super_resolve(sr_model, still, _prompt(1), placeholder_id=259,
                           options=SuperResolutionOptions(_TopK(), seed=0)).frames[0]
    assert all(torch.equal(shared[0], shared[t]) for t in range(4))
    independent = super_resolve(sr_model, still, _prompt(1), placeholder_id=259,
                                options=SuperResolutionOptions(_TopK(), seed=0, shared_noise=False)).frames[0]
    assert not all(torch.equal(independent[0], independent[t]) for t in range(4))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9), st.sampled_from([0.1, 0.25, 0.5, 1.0]),
       st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_refine_cells_picks_the_least_confident_share_of_every_block(n, height, width, fraction, block, seed):
    confidence = torch.rand(n, height, width, generator=torch.Generator().manual_seed(seed))
    chosen = refine_cells(confidence, fraction, block)
    for b, x0, y0 in itertools.product(range(n), range(0, height, block), range(0, width, block)):
        cells = confidence[b, x0:x0 + block, y0:y0 + block].flatten()
        picked = chosen[b, x0:x0 + block, y0:y0 + block].flatten()
        assert int(picked.sum()) == max(1, int(np.ceil(cells.numel() * fraction - 1e-9)))
        if not picked.all():
            assert cells[picked].max() <= cells[~picked].min()


# ------------------------------------------------------------------------------------------- stage + demo
@pytest.fixture(scope="module")
def sr_weights(tmp_path_factory):
    """Random weights of the shipped preset tiny_dsr (fits the shipped tiny models' 8x8 frames)."""
    torch.manual_seed(0)
    model = build_super_resolution_model("tiny_dsr")
    path = tmp_path_factory.mktemp("sr_weights") / "sr.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_stage_refuses_missing_weights_before_sampling(tmp_path):
    from cogframe.config.recipes import load_recipe, validate_recipe

    cfg = load_recipe("tiny/sample_sr", [f"super_resolution.model.weights={tmp_path / 'none.safetensors'}",
                                          f"out={tmp_path}/"])
    with pytest.raises(ConfigError, match=r"super-resolution model .*none.safetensors does not exist.*tiny/sr"):
        validate_recipe(cfg, get_registries())


def test_demo_sr_switch_adds_or_skips_the_stage(cli, tmp_path, sr_weights):
    common = ("--recipe", "tiny/sample_sr", "--rounds", "0")
    result = cli("demo", *common, "--out", str(tmp_path / "sr"), f"super_resolution.model.weights={sr_weights}")
    assert result.code == 0, result.err
    record = json.loads(next((tmp_path / "sr").glob("*.json")).read_text())
    assert record["frames"] == 5 and record["size"] == [96, 96]  # 8x8 tokens -> 24x24 -> 96 px
    assert record["passes"]["super_resolution"] == 1
    # --no-sr needs no SR weights at all.
    result = cli("demo", *common, "--no-sr", "--out", str(tmp_path / "plain"),
                 f"super_resolution.model.weights={tmp_path / 'missing.safetensors'}")
    assert result.code == 0, result.err
    record = json.loads(next((tmp_path / "plain").glob("*.json")).read_text())
    assert record["size"] == [32, 32] and "super_resolution" not in record["passes"]
    # The default recipe is tiny/sample_sr (super-resolved); --sr says so explicitly, and --sr with
    # --recipe tiny/sample runs tiny/sample_sr as well.
    for flags, folder in (((), "default"), (("--sr",), "x"), (("--sr", "--recipe", "tiny/sample"), "x2")):
        result = cli("demo", *flags, "--rounds", "0", "--out", str(tmp_path / folder),
                     f"super_resolution.model.weights={sr_weights}")
        assert result.code == 0, result.err
        assert "super-resolved" in result.out
        assert json.loads(next((tmp_path / folder).glob("*.json")).read_text())["size"] == [96, 96]
    # --no-sr with the default recipe runs tiny/sample, which has no super-resolution section at all.
    result = cli("demo", "--no-sr", "--rounds", "0", "--out", str(tmp_path / "low"))
    assert result.code == 0, result.err
    record = json.loads(next((tmp_path / "low").glob("*.json")).read_text())
    assert record["size"] == [32, 32] and "super_resolution" not in record["passes"]
    result = cli("demo", "--sr", "--recipe", "tiny/sample_one_stage", "--rounds", "0", "--out", str(tmp_path / "y"))
    assert result.code == 2 and "lists no super_resolution stage" in result.err


def test_web_switch_follows_the_recipe(tmp_path, sr_weights):
    from cogframe.cli.web_app import WebSettings, generate, options

    assert options()["super_resolution"] is False  # tiny/sample has no super_resolution section
    opts = options("tiny/sample_sr")
    assert opts["super_resolution"] and opts["super_resolution_on"]
    over = (f"super_resolution.model.weights={sr_weights}",)
    result = generate(WebSettings(prompt="a red circle moving left", rounds=0, super_resolution=False), tmp_path,
                      recipe="tiny/sample_sr", overrides=over)
    assert json.loads(Path(result.details).read_text())["size"] == [32, 32]
    with pytest.raises(ConfigError, match="super_resolution"):
        generate(WebSettings(prompt="a red circle moving left", rounds=0, super_resolution=True), tmp_path)


def test_eval_scores_super_resolved_videos_with_the_32_px_classifier(cli, tmp_path, sr_weights):
    # The shipped Fréchet classifier reads 32 px clips; eval averages the 96 px ones (and the real
    # clips beside them) down to it instead of failing after generating.
    report = tmp_path / "sr.json"
    result = cli("eval", "--recipe", "tiny/sample_sr", "--n", 2, "--batch", 2, "--rounds", 0, "--json", report,
                 f"super_resolution.model.weights={sr_weights}")
    assert result.code == 0, result.err
    data = json.loads(report.read_text())
    assert data["frames"] == 5
    assert all(math.isfinite(v) and v >= 0 for v in data["frechet"].values()), data["frechet"]


def test_clips_are_averaged_down_to_the_classifier_size_by_whole_blocks():
    from cogframe.cli.eval import _at_size

    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (2, 3, 32, 32, 3), dtype=np.uint8)
    large = np.repeat(np.repeat(small, 3, axis=2), 3, axis=3)
    assert np.array_equal(_at_size(large, 32), small) and _at_size(small, 32) is small
    half = large.copy()
    half[:, :, 0, 0] = 0  # one pixel of a 3x3 block: the block mean moves by a ninth
    assert abs(int(_at_size(half, 32)[0, 0, 0, 0, 0]) - round(int(small[0, 0, 0, 0, 0]) * 8 / 9)) <= 1
    with pytest.raises(ConfigError, match="whole multiples"):
        _at_size(rng.integers(0, 256, (1, 3, 40, 40, 3), dtype=np.uint8), 32)
