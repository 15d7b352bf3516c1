"""The sample task, its recipe, bad-input handling, the asset resolver and `cogframe demo`.

Tiny random models stand in for the shipped assets (tests/sample_fixtures.py); COGFRAME_ASSETS
points the recipe's ${asset:...} paths at them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
import pytest
from omegaconf import OmegaConf

from cogframe.core.io.video import read_video
from cogframe.errors import DataError
from cogframe.plugins import get_registries
from cogframe.config.recipes import load_recipe
from sample_fixtures import SMALL, make_assets

SIDE = ["rounds=1"]  # one stage-2 round keeps each run well under a second


@pytest.fixture(scope="module")
def asset_root(tmp_path_factory):
    return make_assets(tmp_path_factory.mktemp("assets"))


@pytest.fixture
def assets(asset_root, monkeypatch):
    monkeypatch.setenv("COGFRAME_ASSETS", str(asset_root))
    return asset_root


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


# ------------------------------------------------------------------------------ happy paths
def test_run_writes_mp4_gif_png_json_at_the_final_frame_rate(cli, assets, tmp_path):
    result = cli("run", "tiny/sample", "prompt=a red circle moving left", f"out={tmp_path}/red", *SMALL)
    assert result.code == 0, result.err
    assert _files(tmp_path) == ["red.gif", "red.json", "red.mp4", "red.png"]
    frames, fps = read_video(tmp_path / "red.mp4")
    assert frames.shape == (33, 32, 32, 3) and fps == pytest.approx(8.0)  # 5 key frames at 1 fps, 3 rounds
    gif, _ = read_video(tmp_path / "red.gif")
    assert gif.shape[0] == 33
    record = json.loads((tmp_path / "red.json").read_text())
    assert record["prompt"] == "a red circle moving left" and record["seed"] == 0
    assert record["fps"] == 8.0 and record["key_fps"] == 1.0 and record["duration_prefix"] == "4.0s"
    assert record["passes"]["key_frames"] > 0 and record["passes"]["interpolation"] > 0
    assert {"load", "key_frames", "interpolation", "decode"} <= set(record["timings_s"])
    assert [n["name"] for n in record["sampling"]["stages"]] == ["key_frames", "interpolation"]
    assert record["files"] == {"mp4": "red.mp4", "gif": "red.gif", "png": "red.png"}
    assert (tmp_path / "red.mp4").stat().st_mode & 0o044  # readable by others, unlike a temp file


@pytest.mark.parametrize("overrides,frames,fps", [
    (["rounds=0"], 5, 1.0),                               # key frames only
    (["duration=2.0s", "rounds=2"], 17, 8.0),  # 2 fps key frames -> 4, 8 fps rounds
    (["stages.1={name: linear_blend, rounds: 2}", "stage2=null"], 17, 4.0),  # a pixel stage needs no stage 2
    (["stages.1={name: repeat, rounds: 1}", "stage2=null"], 9, 2.0),
])
def test_final_fps_is_key_fps_times_two_to_the_rounds(assets, tmp_path, overrides, frames, fps):
    from cogframe.plugins.task_sample import run_sample

    cfg = load_recipe("tiny/sample", [f"out={tmp_path}/v", *SMALL, *overrides])
    result = run_sample(cfg, get_registries(), echo=lambda *_: None)
    record = json.loads(Path(result.outputs[0]["json"]).read_text())
    assert (record["frames"], record["fps"]) == (frames, fps)


def test_prompts_file_gives_one_set_of_outputs_per_prompt(cli, assets, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle moving left\n\na blue square moving up\na green triangle moving down\n")
    result = cli("run", "tiny/sample", f"prompts_file={prompts}", f"out={tmp_path}/out/", "batch_size=2",
                 *SMALL, *SIDE)
    assert result.code == 0, result.err
    stems = ["000_a_red_circle_moving_left", "001_a_blue_square_moving_up", "002_a_green_triangle_moving_down"]
    assert _files(tmp_path / "out") == sorted(f"{s}.{e}" for s in stems for e in ("gif", "json", "mp4", "png"))
    records = [json.loads((tmp_path / "out" / f"{s}.json").read_text()) for s in stems]
    assert [(r["index"], r["batch_row"], r["seed"]) for r in records] == [(0, 0, 0), (1, 1, 0), (2, 0, 2)]
    assert "[3/3]" in result.out


def _generated(*overrides, captions=("a red circle moving left", "a blue square moving up"), seed=3):
    """The decoded frames of one batch through the sample task's plan (fp32 tiny models)."""
    from cogframe.plugins.task_sample import generate, load, plan_sample

    cfg = load_recipe("tiny/sample", [*SMALL, *SIDE, *overrides])
    plan = plan_sample(cfg, get_registries())
    load(plan)
    return generate(plan, captions, seed)


def test_parallel_waves_and_batching_do_not_change_the_video(assets):
    # float32 models: the claim "same tokens" is scoped to fp32/fp64 (docs/sampling.md).
    parallel = _generated("parallel=true").pixels
    assert np.array_equal(parallel, _generated("parallel=false").pixels)
    assert np.array_equal(parallel, _generated("parallel=true", "stages.1.window_batch=1").pixels)


# ------------------------------------------------------------------------------ bad input
LONG = "a red circle moving left then a blue square moving right then a green triangle moving up"


@pytest.mark.parametrize("overrides,message", [
    (["prompt=''"], r"prompt is empty"),
    ([f"prompt={LONG}"], r"prompt too long: \d+ tokens .* text_len is 16"),
    (["fps=3"], r"3 fps .*not trained on .*0.25, 0.5, 1, 2, 4, 8"),
    (["duration=3.3s"], r"duration: the key frames at 1.21212 fps \(duration 3.3s\) are at a rate the "
                                    r"stage1 model was not trained on .* the durations 16.0s, 8.0s, 4.0s"),
    (["fps=0"], r"fps 0 is not a positive frame rate"),
    (["duration=soon"], r"duration 'soon' is not a positive number of seconds"),
    (["fps=2"], r"need the stage2 model at 4, 8, 16 fps, but it was trained on 2, 4, 8"),
    (["rounds=4"], r"rounds: must be a whole number from 0 to 3"),
    (["fps=1", "duration=4.0s"], r"both fps \(1\) and duration \(4.0s\) are set"),
    (["guidance=lots"], r"guidance: .*expects float for 'guidance', got str 'lots'"),
    (["seed=9223372036854775808"], r"seed: must be a whole number from 0 to 2\*\*63 - 1"),
    (["seed=-1"], r"seed: must be a whole number from 0 to 2\*\*63 - 1 = 9223372036854775807.*got -1"),
    (["+stages.1.guidance=2"], r"guidance is 2 but negative_prompt is not set"),
    (["stages=[{name: linear_blend}, {name: key_frames}]"], r"linear_blend stage interpolates frames but comes first"),
    (["stages=[{name: key_frames}, {name: linear_blend, rounds: 1}, {name: interpolation, rounds: 1}]"],
     r"stages.2 \(interpolation\): .*works on token grids but comes after a pixel stage"),
    (["stages.1.name=warp"], r"unknown stage 'warp'"),
    (["stages.0.first_frame=all"], r"first_frame: 'all' is not a choice; use 'base'"),
    (["~stages.1.token_sampler", "+stages.1.token_sampler=greedy"], r"token_sampler: expected a sampler section such as \{name: top_k"),
    (["stages.1.token_sampler={name: warm}"], r"warm"),
    (["stages.0.token_sampler={name: warm}"], r"warm"),
    (["~stages.0.token_sampler", "+stages.0.token_sampler=greedy"], r"token_sampler: expected a sampler section such as \{name: top_k"),
    (["stages.0.token_sampler=null"], r"speculative: true needs a deterministic token_sampler for frames 1..T-1, such as \{name: greedy\}"),
    (["stages.1.token_sampler=null"], r"speculative: true needs a deterministic token_sampler for the in-between frames"),
    (["stage2=null"], r"stage2: the recipe has no such section but the interpolation stage reads its model"),
    (["guidance=3"], r"negative_prompt: is empty but guidance is 3"),
    (["stage1.model.weights=/nonexistent/stage1.safetensors"],
     r"stage1\.model\.weights: the stage-1 \(key-frame\) model weights /nonexistent/stage1\.safetensors "
     r"does not exist"),
    (["prompts_file=/nonexistent/prompts.txt"], r"prompts_file: /nonexistent/prompts\.txt does not exist"),
])
def test_bad_input_exits_2_with_a_clear_message_and_writes_nothing(cli, assets, tmp_path, overrides, message):
    result = cli("run", "tiny/sample", f"out={tmp_path}/out/", *SMALL, *overrides)
    assert result.code == 2
    assert result.err.startswith("error: ") and "Traceback" not in result.err
    assert re.search(message, result.err), result.err
    assert _files(tmp_path / "out") == []


def test_missing_assets_name_the_file_the_key_and_the_training_recipe(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("COGFRAME_ASSETS", str(tmp_path / "empty"))
    result = cli("run", "tiny/sample", f"out={tmp_path}/out/")
    assert result.code == 2
    for key, recipe in (("stage1.model.weights", "tiny/stage1"), ("stage2.model.weights", "tiny/stage2"),
                        ("text_tokenizer.model_path", "tiny/text_tokenizer"), ("image_tokenizer.path", "tiny/vqvae")):
        line = next(x for x in result.err.splitlines() if x.strip().startswith(f"- {key}:"))
        assert str(tmp_path / "empty" / "tiny") in line and f"cogframe run {recipe}" in line
    assert _files(tmp_path / "out") == []


def test_checkpoint_of_another_model_is_refused_before_writing(cli, assets, tmp_path):
    result = cli("run", "tiny/sample", f"out={tmp_path}/out/", "+stage1.model.overrides={num_layers: 3}",
                 *SMALL[1:], *SIDE)
    assert result.code == 2 and "does not match the model" in result.err, result.err
    assert _files(tmp_path / "out") == []


def test_a_failing_writer_leaves_no_partial_files(cli, assets, tmp_path, monkeypatch):
    import cogframe.core.io.video as video

    def broken(*args, **kwargs):
        raise DataError("disk full")

    monkeypatch.setattr(video, "contact_sheet", broken)
    result = cli("run", "tiny/sample", f"out={tmp_path}/out/", *SMALL, *SIDE)
    assert result.code == 2 and "disk full" in result.err
    assert _files(tmp_path / "out") == []  # neither finished files nor temporary ones


def test_validate_checks_prompts_without_loading_weights(cli, assets):
    result = cli("validate", "-q", "tiny/sample", f"prompt={LONG}", *SMALL)
    assert result.code == 2 and "prompt too long" in result.err


# ------------------------------------------------------------------------------ asset resolver
def test_asset_resolver_uses_the_package_folder_or_cogframe_assets(tmp_path, monkeypatch):
    import cogframe

    monkeypatch.delenv("COGFRAME_ASSETS", raising=False)
    node = OmegaConf.create({"a": "${asset:tiny/stage1.safetensors}"})
    assert node.a == str(Path(cogframe.__file__).parent / "assets" / "tiny" / "stage1.safetensors")
    monkeypatch.setenv("COGFRAME_ASSETS", str(tmp_path))
    assert OmegaConf.create({"a": "${asset:tiny/vqvae}"}).a == str(tmp_path / "tiny" / "vqvae")
    with pytest.raises(Exception, match="inside the assets folder"):
        _ = OmegaConf.create({"a": "${asset:../secret}"}).a


# ------------------------------------------------------------------------------ cogframe demo
def test_demo_prints_where_the_video_went(cli, assets, tmp_path):
    result = cli("demo", "--out", tmp_path / "demo", "--prompt", "a blue square moving up", "--seed", "1",
                 *SMALL, *SIDE)
    assert result.code == 0, result.err
    mp4 = tmp_path / "demo" / "a_blue_square_moving_up.mp4"
    assert f"video:         {mp4}" in result.out and re.search(r"done in \d+\.\d s", result.out)
    assert json.loads(mp4.with_suffix(".json").read_text())["seed"] == 1


def test_demo_without_assets_says_which_file_and_how_to_make_it(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("COGFRAME_ASSETS", str(tmp_path / "none"))
    result = cli("demo", "--out", tmp_path / "demo")
    assert result.code == 2
    assert "stage1.safetensors does not exist" in result.err and "cogframe run tiny/stage1" in result.err
    assert not (tmp_path / "demo").exists()


def test_a_converted_weights_folder_loads_with_its_own_model_description(assets, tmp_path):
    """The official recipe's path: `stage1.model.weights` is a `cogframe convert` folder, preset null."""
    import copy

    from safetensors.torch import load_file

    from cogframe.core.model.presets import PRESETS
    from cogframe.core.weights.pretrained import write_weights_folder
    from cogframe.plugins.task_sample import run_sample

    model = copy.deepcopy(PRESETS["tiny_stage1"])
    model.update(num_layers=2, hidden_size=32, num_heads=2)
    tensors = load_file(str(assets / "tiny" / "stage1.safetensors"))
    write_weights_folder(tmp_path / "stage1", tensors, model=model, dtype="float32", max_shard_bytes=1 << 20)
    cfg = load_recipe("tiny/sample", [f"out={tmp_path}/v", "rounds=0", "display_scale=1", "stage2=null",
                                      f"stage1.model.weights={tmp_path / 'stage1'}", "stage1.model.preset=null"])
    result = run_sample(cfg, get_registries(), echo=lambda *_: None)
    assert json.loads(Path(result.outputs[0]["json"]).read_text())["frames"] == 5


# ------------------------------------------------------------------------------ outputs are never replaced silently
def test_an_earlier_video_is_not_replaced_without_overwrite(cli, assets, tmp_path):
    args = ("run", "tiny/sample", "prompt=a red circle moving left", f"out={tmp_path}/red", *SMALL, *SIDE)
    assert cli(*args).code == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    again = cli(*args, "seed=5")
    assert again.code == 2 and "Traceback" not in again.err
    assert f"{tmp_path}/red.mp4" in again.err and "overwrite=true" in again.err, again.err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing touched
    assert cli(*args, "seed=5", "overwrite=true").code == 0
    assert json.loads((tmp_path / "red.json").read_text())["seed"] == 5


def test_demo_refuses_to_replace_an_earlier_video_unless_overwrite(cli, assets, tmp_path):
    args = ("demo", "--out", tmp_path / "demo", "--prompt", "a blue square moving up", *SMALL, *SIDE)
    assert cli(*args).code == 0
    mp4 = tmp_path / "demo" / "a_blue_square_moving_up.mp4"
    before = mp4.read_bytes()
    again = cli(*args, "--seed", "4")
    assert again.code == 2 and str(mp4) in again.err and "--overwrite" in again.err, again.err
    assert mp4.read_bytes() == before and _files(tmp_path / "demo") == sorted(
        f"a_blue_square_moving_up.{e}" for e in ("gif", "json", "mp4", "png"))
    assert cli(*args, "--seed", "4", "--overwrite").code == 0
    assert json.loads(mp4.with_suffix(".json").read_text())["seed"] == 4


def test_demo_rounds_option_sets_the_interpolation_rounds(cli, assets, tmp_path):
    result = cli("demo", "--out", tmp_path, "--rounds", "2", *SMALL)
    assert result.code == 0, result.err
    record = json.loads((tmp_path / "a_red_circle_moving_left.json").read_text())
    assert (record["frames"], record["fps"], record["rounds"]) == (17, 4.0, 2)


# ------------------------------------------------------------------------------ prompts of the stages
def test_stage_2_reads_the_raw_caption_and_the_video_suffix_needs_stage_1_guidance(assets, monkeypatch):
    from cogframe.plugins.tokenizer_sentencepiece import SentencePieceTokenizer

    seen = []
    original = SentencePieceTokenizer.encode_prompt

    def recording(self, caption, text_len, prefix=None):
        seen.append((caption, prefix))
        return original(self, caption, text_len, prefix=prefix)

    monkeypatch.setattr(SentencePieceTokenizer, "encode_prompt", recording)
    caption = "a red circle moving left"
    common = ["rounds=2", "caption_suffix=' up'", "first_frame_suffix=' left'", "stages.0.first_frame=base"]
    _generated(*common, captions=(caption,))
    assert {c for c, _ in seen} == {caption + " left", caption}  # guidance 1: no video suffix anywhere
    seen.clear()
    _generated(*common, "guidance=3", "negative_prompt=circle", captions=(caption,))
    by_prefix = {}
    for text, prefix in seen:
        by_prefix.setdefault(prefix, set()).add(text)
    assert by_prefix[None] == {caption + " left"}                  # first frame
    assert by_prefix["4.0s"] == {caption + " up", "circle"}        # stage 1 + its negative branch
    assert by_prefix["2.0s"] == by_prefix["1.0s"] == {caption}     # stage 2: the raw caption


# ------------------------------------------------------------------------------ stages
def test_unmasked_prefix_option_reaches_the_stage_2_decoder(assets):
    # tiny/sample keeps the preset's 4x4 windows: the unmasked prefix then changes the filled frames.
    default = _generated()
    release = _generated("+stages.1.unmasked_prefix=true")
    assert torch.equal(release.tokens[:, 0::2], default.tokens[:, 0::2])  # same key frames
    assert not torch.equal(release.tokens, default.tokens)
    official = load_recipe("cogvideo_9b/sample_official", ["weights_dir=/nonexistent"])
    assert official.stages[1].unmasked_prefix is True


def test_key_frames_can_generate_frame_0_through_both_channels(assets):
    # tiny/stage1 trains frame 0 (train.first_frame_loss), so tiny/sample draws it with both channels;
    # `base` is the release's way (and the stage's default): the base channel alone.
    both = _generated("rounds=0")
    assert OmegaConf.select(load_recipe("tiny/sample"), "stages.0.first_frame") == "both"
    base = _generated("rounds=0", "stages.0.first_frame=base")
    assert not torch.equal(both.tokens[:, 0], base.tokens[:, 0])
    default = _generated("rounds=0", "stages.0={name: key_frames, token_sampler: {name: greedy}}")
    assert torch.equal(default.tokens, base.tokens)


def test_key_frames_stage_samples_frames_after_the_first_with_its_own_sampler(assets):
    # tiny/sample: frame 0 from the recipe's top-k 10 (greedy draws no object there), frames 1-4 greedily.
    assert OmegaConf.select(load_recipe("tiny/sample"), "stages.0.token_sampler.name") == "greedy"
    greedy = _generated("rounds=0")
    top_k = _generated("rounds=0", "stages.0.token_sampler=null", "stages.0.speculative=false")  # the recipe's top-k 10
    assert torch.equal(greedy.tokens[:, 0], top_k.tokens[:, 0])      # frame 0: the recipe's sampler
    assert not torch.equal(greedy.tokens[:, 1:], top_k.tokens[:, 1:])
    # With a greedy frame 0 too, nothing depends on the seed: frames 1-4 are greedy.
    a = _generated("rounds=0", "first_frame_sampler=greedy", seed=1)
    assert torch.equal(a.tokens, _generated("rounds=0", "first_frame_sampler=greedy", seed=2).tokens)
    b = _generated("rounds=0", "first_frame_sampler=greedy", "stages.0.token_sampler=null", "stages.0.speculative=false",
                   seed=1)
    assert torch.equal(a.tokens[:, 0], b.tokens[:, 0]) and not torch.equal(a.tokens, b.tokens)


def test_speculative_key_frames_are_the_same_in_fewer_passes(assets):
    assert OmegaConf.select(load_recipe("tiny/sample"), "stages.0.speculative") is True
    one = ("a red circle moving left",)
    fast = _generated("rounds=0", captions=one)
    plain = _generated("rounds=0", "stages.0.speculative=false", captions=one)
    assert torch.equal(fast.tokens, plain.tokens)  # fp32, as parallel waves: docs/sampling.md
    assert fast.passes["key_frames"] < plain.passes["key_frames"]
    # A full batch fills a pass by itself: it decodes as before (core/generation/speculative.py).
    many = tuple(f"a red circle moving {d}" for d in ("left", "right", "up", "down")) * 4
    assert _generated("rounds=0", captions=many).passes == _generated(
        "rounds=0", "stages.0.speculative=false", captions=many).passes


def test_speculative_in_between_frames_are_the_same_in_fewer_passes(assets):
    for recipe in ("tiny/sample", "tiny/sample_sr"):
        assert OmegaConf.select(load_recipe(recipe), "stages.1.speculative") is True
    one = ("a red circle moving left",)
    fast = _generated(captions=one)
    plain = _generated("stages.1.speculative=false", captions=one)
    assert torch.equal(fast.tokens, plain.tokens)  # fp32, as parallel waves: docs/sampling.md
    # These random test models rarely repeat a given frame, so most drafts fail and the frames go
    # one slot a pass (2 x 64 + the prefix) instead of in parallel waves; the shipped stage 2 needs
    # far fewer (tests/test_speculative.py).
    assert fast.passes["interpolation"] <= 1 + 2 * 64
    assert fast.passes["interpolation"] != plain.passes["interpolation"]  # it went the speculative way
    # The windows of a round are rows of one pass: 8 prompts' 16 windows fill it from round 1 on,
    # and decode as before (core/generation/speculative.py).
    many = tuple(f"a red circle moving {d}" for d in ("left", "right", "up", "down")) * 2
    assert _generated("rounds=1", captions=many).passes == _generated(
        "rounds=1", "stages.1.speculative=false", captions=many).passes


def test_interpolation_stage_takes_its_own_token_sampler(assets):
    greedy = _generated()                                       # tiny/sample fills greedily
    assert OmegaConf.select(load_recipe("tiny/sample"), "stages.1.token_sampler.name") == "greedy"
    top_k = _generated("stages.1.token_sampler=null", "stages.1.speculative=false")  # null: the recipe's top-k 10
    assert torch.equal(top_k.tokens[:, 0::2], greedy.tokens[:, 0::2])  # key frames: stage 1 alike in both
    assert not torch.equal(top_k.tokens, greedy.tokens)                 # filled frames: their own
    # Greedy filling depends only on the key frames, not on the seed's draws in stage 2.
    again = _generated()
    assert torch.equal(greedy.tokens, again.tokens)


def test_validate_hands_its_plan_to_run(cli, assets, tmp_path, monkeypatch):
    import cogframe.plugins.task_sample as task

    calls = []
    original = task.plan_sample
    monkeypatch.setattr(task, "plan_sample", lambda *a, **k: calls.append(1) or original(*a, **k))
    assert cli("run", "tiny/sample", f"out={tmp_path}/x", *SMALL, "rounds=0").code == 0
    assert len(calls) == 1


def test_a_third_party_stage_plugs_in_by_name(assets, tmp_path):
    """One more registered stage, listed in the recipe; the task and the pipeline stay as they are."""
    from cogframe.plugins.task_sample import run_sample
    from cogframe.registry import component

    @component("stage", "reverse", runtime_kwargs=("fps",))
    class Reverse:
        """Plays the frames backwards (a pixel stage)."""

        name, space, models = "reverse", "pixels", ()

        def __init__(self, *, fps):
            self.output_fps = fps

        def __call__(self, batch):
            return batch.advance(self.name, pixels=batch.pixels.flip(1), passes=0)

    from cogframe.plugins.task_sample import generate, load, plan_sample

    registries = get_registries(reload=True)
    try:
        registries.register(Reverse, origin="test")
        pixels, record = {}, None
        for name, extra in (("plain", []), ("reversed", ["stages=[{name: key_frames, first_frame: both, token_sampler: {name: greedy}}, "
                                                          "{name: interpolation, "
                                                          "rounds: 1, token_sampler: {name: greedy}}, "
                                                          "{name: reverse}]"])):
            cfg = load_recipe("tiny/sample", [f"out={tmp_path}/{name}", *SMALL, *SIDE, *extra])
            plan = plan_sample(cfg, registries)
            load(plan)
            pixels[name] = generate(plan, ["a red circle moving left"], 0).pixels
        record = json.loads(Path(run_sample(cfg, registries, echo=lambda *_: None).outputs[0]["json"]).read_text())
    finally:
        get_registries(reload=True)
    assert pixels["plain"].shape[1] == 9 and torch.equal(pixels["plain"].flip(1), pixels["reversed"])
    assert record["passes"]["reverse"] == 0 and "reverse" in record["timings_s"]
