"""The one-stage baseline: the ``sliding_window`` stage, its core (core/generation/sliding.py), the
tiny/sample_one_stage recipe and how ``cogframe eval`` scores it beside the hierarchical pipeline.

Random 1-layer models stand in for the shipped ones (their tokens are never asserted); a naive
reference built from full forwards checks the KV-cached windows.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cogframe.config.recipes import load_recipe
from cogframe.core.generation.decoder import DecodeOptions, decode_frames
from cogframe.core.generation.generate import generate_key_frames
from cogframe.core.generation.prompts import TextPrompt
from cogframe.core.generation.sliding import check_window, extend_frames, sliding_streams, window_plan
from cogframe.core.model.presets import build_model
from cogframe.errors import ConfigError
from cogframe.plugins import get_registries
from cogframe.plugins.token_samplers import GreedySampler, TopKSampler
from sample_fixtures import make_assets

BOI = 300
ONE_LAYER = {"num_layers": 1, "hidden_size": 32, "num_heads": 2}
# Overrides that make the tiny recipes build the 1-layer stage-1 model of the fixture below.
SMALL = ["+stage1.model.overrides={num_layers: 1, hidden_size: 32, num_heads: 2}",
         "+stage2.model.overrides={num_layers: 2, hidden_size: 32, num_heads: 2}", "display_scale=1"]
ONE_STAGE = ["+stage1.model.overrides={num_layers: 1, hidden_size: 32, num_heads: 2}", "display_scale=1"]


@pytest.fixture(scope="module")
def stage1():
    torch.manual_seed(0)
    return build_model("tiny_stage1", overrides=ONE_LAYER).eval()


@pytest.fixture(scope="module")
def asset_root(tmp_path_factory):
    """make_assets' files, with a 1-layer stage-1 model in place of the 2-layer one."""
    from cogframe.core.training.checkpoint import save_model_weights

    root = make_assets(tmp_path_factory.mktemp("assets"))
    torch.manual_seed(3)
    save_model_weights(root / "tiny" / "stage1.safetensors", build_model("tiny_stage1", overrides=ONE_LAYER).state_dict())
    return root


@pytest.fixture
def assets(asset_root, monkeypatch):
    monkeypatch.setenv("COGFRAME_ASSETS", str(asset_root))
    return asset_root


def _prompt(layout, batch=2, seed=1) -> TextPrompt:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(256, 384, (batch, layout.text_len), generator=g)
    valid = torch.ones(batch, layout.text_len, dtype=torch.bool)
    valid[0, :3] = False  # one left-padded row
    return TextPrompt(ids, valid)


def _frames(layout, batch=2, count=5, seed=2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, count, layout.frame_height, layout.frame_width), generator=g)


# ------------------------------------------------------------------------------ the window plan
@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.integers(2, 6), st.data())
def test_windows_cover_every_new_frame_once_from_frames_already_there(layout_frames, data):
    context = data.draw(st.integers(1, layout_frames - 1))
    stride = data.draw(st.integers(1, layout_frames - context))
    start = data.draw(st.integers(context, 12))
    num_frames = data.draw(st.integers(start, 40))
    assert check_window(layout_frames, context, stride, num_frames) == (context, stride)
    plan = window_plan(start, num_frames, context, stride)
    made = [f for first, new in plan for f in range(first, first + new)]
    assert made == list(range(start, num_frames))  # each new frame once, in order
    for first, new in plan:
        assert first - context >= 0 and 1 <= new <= stride and context + new <= layout_frames
    assert all(new == stride for _, new in plan[:-1])


def test_defaults_give_the_most_context_and_fill_the_layout():
    assert check_window(5, None, None, 33) == (4, 1)
    assert check_window(5, 1, None, 33) == (1, 4)  # the paper's N_overlap = 1
    assert check_window(5, 2, None, 33) == (2, 3)
    assert len(window_plan(5, 33, 4, 1)) == 28 and window_plan(5, 5, 4, 1) == []


@pytest.mark.parametrize("context,stride,num_frames,message", [
    (0, None, 33, r"context_frames: must be a whole number from 1 to 4, got 0"),
    (5, None, 33, r"context_frames: must be a whole number from 1 to 4, got 5"),
    (2.5, None, 33, r"context_frames: must be a whole number"),
    (4, 2, 33, r"stride: must be a whole number from 1 to 1, got 2.*lower stride or context_frames"),
    (1, 0, 33, r"stride: must be a whole number from 1 to 4, got 0"),
    (None, None, 0, r"num_frames: must be a whole number from 1 to"),
    (None, None, True, r"num_frames: must be a whole number"),
])
def test_bad_window_settings_name_the_key_and_the_range(context, stride, num_frames, message):
    with pytest.raises(ConfigError, match=message):
        check_window(5, context, stride, num_frames)


def test_too_few_frames_for_the_context_or_too_many_already():
    with pytest.raises(ConfigError, match=r"context_frames: .*gives 4 frames per window but got only 2"):
        window_plan(2, 33, 4, 1)
    with pytest.raises(ConfigError, match=r"num_frames: 9 is fewer than the 17 frames the stages before made"):
        window_plan(17, 9, 4, 1)


def test_window_streams_are_distinct_from_key_frames_and_stage_2_rounds():
    from cogframe.core.generation.generate import window_streams

    sliding = {int(s) for first in range(5, 33) for s in sliding_streams(16, first)}
    assert len(sliding) == 28 * 16
    stage1 = set(range(16))  # key frames: stream = prompt row
    stage2 = {int(s) for r in range(6) for s in window_streams(16, 16, r)}
    assert not sliding & stage1 and not sliding & stage2


# ------------------------------------------------------------------------------ core: extend_frames
def _naive_greedy(model, frames, prompt, num_frames, context, stride):
    """The sliding window from full forwards: one full forward per generated token, argmax."""
    layout = model.config.layout
    video = [frames[:, t] for t in range(frames.shape[1])]
    with torch.no_grad():
        for first, new in window_plan(len(video), num_frames, context, stride):
            window = torch.zeros(frames.shape[0], layout.frames, *frames.shape[2:], dtype=torch.long)
            window[:, :context] = torch.stack(video[first - context:first], dim=1)
            for t in range(context, context + new):
                for j in range(layout.tokens_per_frame):
                    inputs, _ = layout.build_input(prompt.ids, window, boi_id=BOI)
                    logits = model(inputs, text_valid=prompt.mask())
                    token = logits[:, layout.frame_slot(t, j)].argmax(-1)  # image logits only
                    window.view(frames.shape[0], layout.frames, -1)[:, t, j] = token
            video += [window[:, t] for t in range(context, context + new)]
    return torch.stack(video, dim=1)


@pytest.mark.parametrize("context,stride,parallel", [(4, 1, True), (2, 3, True), (1, 4, False)])
def test_windows_equal_a_naive_full_forward_reference(stage1, context, stride, parallel):
    layout = stage1.config.layout
    prompt, frames = _prompt(layout), _frames(layout)
    num_frames = 5 + min(max(stride, 2), 3)  # two windows of one, or one (partial) window of several
    reference = _naive_greedy(stage1, frames, prompt, num_frames, context, stride)
    result = extend_frames(stage1, frames, prompt, boi_id=BOI, options=DecodeOptions(GreedySampler(), parallel=parallel),
                           num_frames=num_frames, context=context, stride=stride)
    assert torch.equal(result.frames, reference)


def test_the_given_frames_stay_and_exactly_num_frames_come_out(stage1):
    layout = stage1.config.layout
    frames = _frames(layout)
    options = DecodeOptions(TopKSampler(k=10), seed=4, parallel=True)
    result = extend_frames(stage1, frames, _prompt(layout), boi_id=BOI, options=options, num_frames=8)
    assert result.frames.shape == (2, 8, layout.frame_height, layout.frame_width)
    assert torch.equal(result.frames[:, :5], frames)
    assert int(result.frames.min()) >= 0 and int(result.frames.max()) < stage1.config.image_vocab_size
    assert result.passes >= 3 * 2  # each window: a prefix pass and at least one generation pass
    same = extend_frames(stage1, frames, _prompt(layout), boi_id=BOI, options=options, num_frames=8)
    assert torch.equal(same.frames, result.frames)  # position-keyed noise: deterministic per seed
    sequential = extend_frames(stage1, frames, _prompt(layout), boi_id=BOI, num_frames=8,
                               options=DecodeOptions(TopKSampler(k=10), seed=4, parallel=False))
    assert torch.equal(sequential.frames, result.frames)  # waves are exact, with sampling too
    other = extend_frames(stage1, frames, _prompt(layout), boi_id=BOI, num_frames=8,
                          options=DecodeOptions(TopKSampler(k=10), seed=5, parallel=True))
    assert not torch.equal(other.frames[:, 5:], result.frames[:, 5:])


def test_the_first_window_is_what_key_frames_generate_from_the_same_prefix(stage1):
    """A teacher-forced prefix F0..F3 then F4 is exactly key-frame generation (the model is causal)."""
    layout = stage1.config.layout
    prompt = _prompt(layout)
    options = DecodeOptions(GreedySampler(), parallel=True)
    keys = generate_key_frames(stage1, prompt, boi_id=BOI, options=options, return_logits=True,
                               first_frame=_frames(layout, count=1)[:, 0])
    # context 4: F0..F3 given in one prefix pass, F4 generated, as key_frames made it.
    slid = extend_frames(stage1, keys.frames[:, :4], prompt, boi_id=BOI, options=options, num_frames=5)
    assert torch.equal(slid.frames, keys.frames)
    # context 1, stride 4: from F0 alone the window is key_frames' pass over frames 1..4.
    slid = extend_frames(stage1, keys.frames[:, :1], prompt, boi_id=BOI, options=options, num_frames=5, context=1)
    assert torch.equal(slid.frames, keys.frames)
    # and the logits of F4 agree with key_frames' (float summation order differs: tolerance).
    window = decode_frames(stage1, prompt, boi_id=BOI, options=options, given_frames=(0, 1, 2, 3),
                           generated_frames=(4,), given=keys.frames[:, :4], return_logits=True)
    f4 = torch.arange(layout.frame_range(4).start, layout.frame_range(4).stop)
    assert torch.allclose(window.logits[:, f4], keys.logits[:, f4], atol=1e-5, rtol=1e-5)


def test_extend_frames_refuses_an_interpolation_model_and_frames_of_another_size(stage1):
    torch.manual_seed(1)
    stage2 = build_model("tiny_stage2", overrides=ONE_LAYER).eval()
    layout = stage1.config.layout
    options = DecodeOptions(GreedySampler())
    with pytest.raises(ConfigError, match=r"needs a 'sequential' \(stage-1\) model, got a 'interpolation' one"):
        extend_frames(stage2, _frames(layout), _prompt(layout), boi_id=BOI, options=options, num_frames=9)
    with pytest.raises(Exception, match=r"frames must be \[batch, frames, 8, 8\]"):
        extend_frames(stage1, torch.zeros(2, 5, 4, 4, dtype=torch.long), _prompt(layout), boi_id=BOI,
                      options=options, num_frames=9)


# ------------------------------------------------------------------------------ the stage and recipe
def _plan(*overrides, weights=True):
    from cogframe.plugins.task_sample import load, plan_sample

    plan = plan_sample(load_recipe("tiny/sample_one_stage", [*ONE_STAGE, *overrides]), get_registries())
    if weights:
        load(plan)
    return plan


def test_one_stage_recipe_extends_the_key_frames_at_8_fps_keeping_them(assets):
    from cogframe.core.generation.stages import VideoBatch, run_stages
    from cogframe.plugins.task_sample import generate

    assert _plan(weights=False).stages[1].num_frames == 33  # the recipe's length; the runs below stop at 9 to stay fast
    plan = _plan("stages.1.num_frames=9")
    assert [s.name for s in plan.stages] == ["key_frames", "sliding_window"] and plan.fps == 8.0
    assert plan.stages[0].prefix == plan.stages[1].prefix == "0.5s"  # the same frame-rate prefix
    assert plan.stages[1].models == ("stage1",)
    captions = ("a red circle moving left", "a blue square moving up")
    batch = generate(plan, captions, 3)
    assert tuple(batch.tokens.shape[:2]) == (2, 9) and tuple(batch.pixels.shape) == (2, 9, 32, 32, 3)
    assert batch.fps == 8.0 and batch.key_frames == 5 and batch.rounds == 0
    assert batch.passes["key_frames"] > 0 and batch.passes["sliding_window"] >= 4 * 2
    assert {"key_frames", "sliding_window", "decode"} <= set(batch.seconds)
    keys = run_stages(plan.stages[:1], VideoBatch(captions, 3), decode=plan.context.decode)
    assert torch.equal(batch.tokens[:, :5], keys.tokens)  # the key frames are kept unchanged
    assert torch.equal(generate(plan, captions, 3).tokens, batch.tokens)  # deterministic per seed
    assert not torch.equal(generate(plan, captions, 4).tokens[:, 5:], batch.tokens[:, 5:])


def test_sliding_window_samples_the_frames_it_adds_with_its_own_sampler(assets):
    from cogframe.plugins.task_sample import generate

    captions = ("a red circle moving left",)
    own = _plan("stages.1.num_frames=7", "stages.1.token_sampler={name: top_k, k: 10}")
    recipe = _plan("stages.1.num_frames=7", "stages.1.token_sampler=null")  # null: the recipe's sampler
    a, b = generate(own, captions, 3), generate(recipe, captions, 3)
    assert torch.equal(a.tokens[:, :5], b.tokens[:, :5])        # key frames: the key_frames stage's
    greedy = _plan("stages.1.num_frames=7", "stages.1.token_sampler={name: greedy}")
    g = generate(greedy, captions, 3)
    assert torch.equal(g.tokens[:, :5], a.tokens[:, :5]) and not torch.equal(g.tokens[:, 5:], a.tokens[:, 5:])
    # Greedy added frames depend on the seed only through the key frames they continue.
    fixed = _plan("stages.1.num_frames=7", "stages.1.token_sampler={name: greedy}", "first_frame_sampler=greedy")
    assert torch.equal(generate(fixed, captions, 3).tokens, generate(fixed, captions, 4).tokens)


def test_sample_task_writes_the_one_stage_video_with_its_passes_and_timings(cli, assets, tmp_path):
    result = cli("run", "tiny/sample_one_stage", "prompt=a red circle moving left", f"out={tmp_path}/v",
                 "stages.1.num_frames=9", *ONE_STAGE)
    assert result.code == 0, result.err
    record = json.loads((tmp_path / "v.json").read_text())
    assert (record["frames"], record["fps"], record["key_fps"], record["duration_prefix"]) == (9, 8.0, 8.0, "0.5s")
    assert record["passes"]["sliding_window"] > 0 and "sliding_window" in record["timings_s"]
    assert record["models"]["stage2"] is None


@pytest.mark.parametrize("overrides,message", [
    (["stages.1.context_frames=0"], r"stages.1 \(sliding_window\): context_frames: must be a whole number from 1 to 4"),
    (["stages.1.context_frames=5"], r"context_frames: must be a whole number from 1 to 4, got 5"),
    (["stages.1.stride=2"], r"stride: must be a whole number from 1 to 1, got 2"),
    (["stages.1.num_frames=0"], r"num_frames: must be a whole number from 1 to"),
    (["stages.1.num_frames=many"], r"num_frames"),
    (["+stages.1.model=stage2"], r"stage2: the recipe has no such section but the sliding_window stage reads its model"),
    (["stages=[{name: sliding_window}]"], r"sliding_window stage extends frames but comes first; list key_frames"),
    (["stages.1.token_sampler={name: warm}"], r"unknown token_sampler 'warm'"),
    (["~stages.1.token_sampler", "+stages.1.token_sampler=greedy"], r"token_sampler: expected a sampler section such as \{name: top_k"),
])
def test_bad_sliding_window_settings_exit_2_at_validate(cli, assets, overrides, message):
    result = cli("validate", "-q", "tiny/sample_one_stage", *ONE_STAGE, *overrides)
    assert result.code == 2 and result.err.startswith("error: ") and "Traceback" not in result.err
    assert re.search(message, result.err), result.err


def test_sliding_window_needs_a_sequential_model_and_a_trained_rate(cli, assets):
    stages = "stages=[{name: key_frames}, {name: interpolation, rounds: 1}, {name: sliding_window, num_frames: 12}]"
    result = cli("validate", "-q", "tiny/sample", *SMALL, stages, "frame_rates.stage1=[0.25, 0.5, 1]")
    assert result.code == 2
    assert re.search(r"continues frames at 2 fps \(duration 2.0s\), a rate the stage1 model was not trained on",
                     result.err), result.err
    result = cli("validate", "-q", "tiny/sample", *SMALL, stages)  # 1 fps -> 2 fps -> extended at 2 fps
    assert result.code == 0, result.err
    result = cli("validate", "-q", "tiny/sample", *SMALL,
                 "stages=[{name: key_frames}, {name: sliding_window, model: stage2}]")
    assert result.code == 2 and "needs a sequential (key-frame) model" in result.err, result.err


def test_num_frames_below_the_incoming_frames_is_an_error_when_run(cli, assets, tmp_path):
    result = cli("run", "tiny/sample_one_stage", f"out={tmp_path}/v", "stages.1.num_frames=3", *ONE_STAGE)
    assert result.code == 2 and "num_frames: 3 is fewer than the 5 frames" in result.err, result.err
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------ cogframe eval
def test_eval_rule_keeps_hierarchical_recipes_and_matches_one_stage_to_them():
    from cogframe.cli.eval import _real_rule

    assert _real_rule(1.0, 5, 8.0, 33, 3, 3) == (1.0, 5)  # tiny/sample --rounds 3
    assert _real_rule(1.0, 5, 1.0, 5, 0, 0) == (1.0, 5)  # key frames alone
    assert _real_rule(8.0, 5, 8.0, 33, 0, 3) == (1.0, 5)  # one stage: the real clips of tiny/sample --rounds 3
    with pytest.raises(ConfigError, match=r"made 33 frames from 5 key frames without interpolation rounds.*"
                                          r"--rounds 0 make 5; pass the --rounds"):
        _real_rule(8.0, 5, 8.0, 33, 0, 0)


def test_eval_scores_the_one_stage_recipe_on_the_hierarchical_real_clips(cli, assets, tmp_path):
    report = tmp_path / "eval.json"
    result = cli("eval", "--recipe", "tiny/sample_one_stage", "--n", 2, "--batch", 2, "--rounds", 3,
                 "--no-frechet", "--json", report, *ONE_STAGE,
                 "stages.1.context_frames=1", "stages.1.stride=4")  # 7 windows of 4 frames: fewer passes
    assert result.code == 0, result.err
    data = json.loads(report.read_text())
    assert data["frames"] == 33 and data["fps"] == 8.0
    assert data["key_fps"] == 1.0 and data["real_clips"]["frames"] == 33  # tiny/sample --rounds 3's clips
    assert data["sampling"]["stages"][1]["name"] == "sliding_window"
    real = data["motion"]["real"]
    assert real["straightness_median"] > 0.98 and real["forward_steps"] == 1.0


def test_eval_of_a_one_stage_recipe_needs_the_rounds_it_stands_beside(cli, assets):
    result = cli("eval", "--recipe", "tiny/sample_one_stage", "--n", 1, "--batch", 1, "--no-frechet", *ONE_STAGE,
                 "stages.1.num_frames=9")  # --rounds 0 (the default) cannot explain 9 frames from 5
    assert result.code == 2 and "Traceback" not in result.err
    assert re.search(r"made 9 frames from 5 key frames without interpolation rounds .*--rounds 0 make 5; pass "
                     r"the --rounds", result.err), result.err
