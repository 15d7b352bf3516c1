"""The 9B recipes say what the released CogVideo code and the paper did (arXiv 2205.15868).

Release facts checked here (THUDM/CogVideo, branch CogVideo, scripts/ds_brain_pretrain_cogvideo_
stage{1,2}.sh and ds_config_zero.json, with SwissArmyTransformer's AnnealingLR): Adam 2e-4, a
cosine over ``--train-iters 500000`` after ``--warmup .001`` (500 steps) down to
``--lr-decay-ratio`` 0.1, and the icetk text tokenizer. Paper facts: stage 1 is 76k steps at
lowest frame rate 0.25 fps, then 15k at lowest 1 fps; stage 2 is 78.5k steps at 2, 4 and 8 fps.
"""

from __future__ import annotations

import math

import pytest

from cogframe.config.recipes import list_recipes, load_recipe
from cogframe.core.training.loop import lr_at
from cogframe.plugins.task_train import train_settings


def _sat_cosine(schedule_step: int, peak: float) -> float:
    """SAT AnnealingLR, cosine style, as the release ran it (independent of cogframe's code)."""
    warmup, train_iters, decay_ratio = 500, 500_000, 0.1
    if schedule_step <= warmup:
        return peak * schedule_step / warmup
    ratio = min(1.0, (schedule_step - warmup) / train_iters)
    return peak * (decay_ratio + (1 - decay_ratio) * (math.cos(math.pi * ratio) + 1) / 2)


def test_stage1_phases_follow_the_released_500k_step_cosine():
    phase1 = train_settings(load_recipe("cogvideo_9b/stage1"))
    phase2 = train_settings(load_recipe("cogvideo_9b/stage1_phase2"))
    assert (phase1.steps, phase2.steps, phase2.schedule_offset) == (76_000, 15_000, 76_000)
    peak = phase1.lr
    assert peak == 2e-4 and phase2.lr == peak
    # Warmup: 500 steps (0.1 % of 500k), not a fraction of the 91k steps actually trained.
    assert lr_at(0, phase1) == pytest.approx(peak / 500)
    assert lr_at(499, phase1) == pytest.approx(peak)
    for step in (500, 10_000, 50_000, 75_999):
        assert lr_at(step, phase1) == pytest.approx(_sat_cosine(step + 1, peak), rel=1e-4), step
    # Phase 2 continues the same curve: its first step is phase 1's step 76000.
    assert lr_at(0, phase2) == pytest.approx(lr_at(76_000, phase1), rel=1e-12)
    for step in (0, 7_500, 14_999):
        assert lr_at(step, phase2) == pytest.approx(_sat_cosine(76_000 + step + 1, peak), rel=1e-4), step
    # At step 91k the learning rate is still ~93 % of its peak (the cosine is far from done).
    at_91k = lr_at(15_000, phase2) / peak
    assert 0.92 < at_91k < 0.94, at_91k


def test_stage2_follows_the_released_schedule_for_the_papers_78_5k_steps():
    stage2 = train_settings(load_recipe("cogvideo_9b/stage2"))
    assert (stage2.steps, stage2.warmup_steps, stage2.decay_steps) == (78_500, 500, 500_000)
    assert lr_at(78_499, stage2) == pytest.approx(_sat_cosine(78_500, stage2.lr), rel=1e-4)
    assert lr_at(78_499, stage2) / stage2.lr > 0.9


def test_stage1_phases_chain_weights_and_frame_rates():
    phase1, phase2 = load_recipe("cogvideo_9b/stage1"), load_recipe("cogvideo_9b/stage1_phase2")
    prep1, prep2 = load_recipe("cogvideo_9b/prepare_stage1"), load_recipe("cogvideo_9b/prepare_stage1_phase2")
    prep_s2, stage2 = load_recipe("cogvideo_9b/prepare_stage2"), load_recipe("cogvideo_9b/stage2")
    # Phase 2 starts from phase 1's weights, not from CogView2, and keeps CogView2 frozen.
    assert phase2.model.weights == f"{phase1.output_dir}/model.safetensors"
    assert phase2.model.init["from"] is None and phase2.model.init.freeze_inherited
    assert phase2.output_dir != phase1.output_dir
    # Each training recipe reads the shards its prepare recipe writes.
    assert phase1.data.shards == prep1.output_dir and phase2.data.shards == prep2.output_dir
    assert stage2.data.shards == prep_s2.output_dir
    # Lowest frame rate 0.25 fps, then 1 fps (lowest rate of the set that still gives 5 frames);
    # stage 2 at 2, 4 and 8 fps.
    assert prep1.frame_rate_sampler.name == prep2.frame_rate_sampler.name == "lowest_fps"
    assert min(prep1.frame_rate_sampler.rates) == 0.25 and min(prep2.frame_rate_sampler.rates) == 1
    assert prep_s2.frame_rate_sampler.name == "interpolation_windows"
    assert sorted(prep_s2.frame_rate_sampler.rates) == [2, 4, 8]
    # The release's duration text: "{4/fps}秒".
    assert prep1.frame_rate_sampler.prefix_format == "{:.1f}秒"


def test_every_9b_recipe_uses_the_icetk_text_tokenizer():
    # ice_text.model has no <start_of_image>: the plain sentencepiece tokenizer would fail on it;
    # icetk_text appends icetk's special tokens after the model's pieces, as icetk does.
    names = [name for name, _, _ in list_recipes() if name.startswith("cogvideo_9b/")]
    assert {"cogvideo_9b/stage1", "cogvideo_9b/stage1_phase2", "cogvideo_9b/stage2"} <= set(names)
    for name in names:
        cfg = load_recipe(name, ["weights_dir=/w"] if name.endswith("sample_official") else [])
        tok = cfg.get("text_tokenizer")
        if tok is not None:
            assert tok.name == "icetk_text", name
            assert "id_offset" not in tok, name  # icetk's offset (20000) is built in


def test_bad_schedule_settings_are_reported(cli):
    result = cli("validate", "cogvideo_9b/stage1", "train.decay_steps=0", "+train.schedule_offset=-5")
    assert result.code == 2
    assert "train.decay_steps" in result.err and "500000" in result.err
    assert "train.schedule_offset" in result.err and ">= 0" in result.err
    # Defaults keep the old behaviour: the cosine spans the rest of the run and ends at the floor.
    settings = train_settings(load_recipe("cogvideo_9b/stage2", ["train.decay_steps=null"]))
    assert lr_at(settings.steps - 1, settings) == pytest.approx(settings.lr * settings.min_lr_ratio, rel=1e-6)
