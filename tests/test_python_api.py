"""The Python API (src/cogframe/api.py): pipelines, build_model, run, list_components, lazy import.

Tiny random models stand in for the shipped assets (tests/sample_fixtures.py), so no test depends
on the tokens of the shipped models; each compares the API with the CLI on the same models.
"""

from __future__ import annotations

import doctest
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import cogframe
from cogframe.core.io.video import read_video
from cogframe.errors import ConfigError
from sample_fixtures import SMALL, make_assets

FAST = [*SMALL, "rounds=1"]  # 5 key frames -> 9 frames at 2 fps
PROMPT = "a red circle moving left"


@pytest.fixture(scope="module")
def asset_root(tmp_path_factory):
    return make_assets(tmp_path_factory.mktemp("assets"))


@pytest.fixture
def assets(asset_root, monkeypatch):
    monkeypatch.setenv("COGFRAME_ASSETS", str(asset_root))
    return asset_root


@pytest.fixture(scope="module")
def pipe(asset_root):
    """One pipeline for the module (loading is the slow part); each call re-reads the recipe."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COGFRAME_ASSETS", str(asset_root))
        yield cogframe.load_pipeline("tiny/sample", FAST)


def test_import_cogframe_is_cheap_and_exports_the_api():
    code = ("import sys, cogframe; assert 'torch' not in sys.modules and 'cogframe.api' not in sys.modules; "
            "print(sorted(cogframe.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert {"load_pipeline", "build_model", "run", "list_components", "__version__"} <= set(eval(out))
    assert {"load_pipeline", "Pipeline"} <= set(dir(cogframe))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        cogframe.nope  # noqa: B018


def test_docstring_examples_run():
    import cogframe.api

    result = doctest.testmod(cogframe.api, optionflags=doctest.ELLIPSIS | doctest.IGNORE_EXCEPTION_DETAIL)
    assert result.attempted >= 4 and result.failed == 0


# ------------------------------------------------------------------------------ pipelines
def test_one_prompt_gives_frames_tokens_and_timings(pipe):
    out = pipe(PROMPT, seed=0)
    assert out.frames.dtype == np.uint8 and out.frames.shape == (9, 32, 32, 3)
    assert out.tokens.dtype == np.int64 and out.tokens.shape == (9, 8, 8)
    assert out.fps == 2.0 and out.prompts == [PROMPT] and len(out) == 1
    assert {"load", "key_frames", "interpolation", "decode", "total"} <= set(out.timings)
    again = pipe(PROMPT, seed=0)
    assert np.array_equal(again.tokens, out.tokens) and again.timings["load"] < 0.5  # models reused


def test_same_tokens_and_frames_as_cogframe_run(pipe, cli, tmp_path, monkeypatch):
    from cogframe.plugins import task_sample

    seen = []
    original = task_sample.generate_batches

    def recording(plan):
        for first, batch, seconds in original(plan):
            seen.append(batch)
            yield first, batch, seconds

    monkeypatch.setattr(task_sample, "generate_batches", recording)
    result = cli("run", "tiny/sample", f"prompt={PROMPT}", "seed=7", f"out={tmp_path}/v", *FAST)
    assert result.code == 0, result.err
    monkeypatch.setattr(task_sample, "generate_batches", original)
    out = pipe(PROMPT, seed=7)
    assert np.array_equal(out.tokens, seen[0].tokens[0].numpy())
    assert np.array_equal(out.frames, seen[0].pixels[0].numpy())
    assert json.loads((tmp_path / "v.json").read_text())["frames"] == out.frames.shape[0]


def test_many_prompts_give_lists_in_order(pipe):
    prompts = [PROMPT, "a blue square moving up", "a green triangle moving down"]
    out = pipe(prompts, seed=3, batch_size=2)
    assert isinstance(out.frames, list) and len(out.frames) == 3 and len(out.tokens) == 3
    assert all(f.shape == (9, 32, 32, 3) for f in out.frames)
    assert out[2].prompts == [prompts[2]] and out[2].frames.shape == (9, 32, 32, 3)
    assert not all(np.array_equal(out.tokens[0], t) for t in out.tokens[1:])


def test_options_change_the_call_not_the_loaded_models(pipe):
    cached = len(pipe._cache)
    out = pipe(PROMPT, rounds=0, parallel=False)
    assert out.frames.shape[0] == 5 and out.fps == 1.0
    assert len(pipe._cache) == cached  # same model sections: nothing loaded again


def test_save_writes_mp4_gif_png_by_suffix(pipe, tmp_path):
    out = pipe(PROMPT)
    for suffix in (".mp4", ".gif"):
        [path] = out.save(tmp_path / f"x{suffix}", scale=2)
        frames, fps = read_video(path)
        assert frames.shape == (9, 64, 64, 3) and fps == pytest.approx(2.0)
    [png] = out.save(tmp_path / "x.png")
    assert Image.open(png).size[0] > 32  # a contact sheet of the 9 frames
    many = pipe([PROMPT, "a blue square moving up"])
    assert [p.name for p in many.save(tmp_path / "m.gif")] == ["m_000.gif", "m_001.gif"]
    with pytest.raises(ConfigError, match="suffix picks the format"):
        out.save(tmp_path / "x.avi2")


@pytest.mark.parametrize("call,message", [
    (lambda p: p(""), "non-empty"), (lambda p: p([]), "non-empty"), (lambda p: p("a\nb"), "one line"),
    (lambda p: p(PROMPT, out="x/"), "set by the call itself"),
    (lambda p: p(PROMPT, roundz=2), "roundz"),
    (lambda p: p(PROMPT, rounds=9), "rounds"),
    (lambda p: p("a red circle " * 40), "too long|text slots|tokens"),
])
def test_bad_calls_are_config_errors_naming_the_problem(pipe, call, message):
    with pytest.raises(ConfigError, match=message):
        call(pipe)


def test_bad_recipes_are_config_errors(assets):
    with pytest.raises(ConfigError, match="no_such_recipe"):
        cogframe.load_pipeline("tiny/no_such_recipe")
    with pytest.raises(ConfigError, match="not 'sample'"):
        cogframe.load_pipeline("tiny/stage1")
    with pytest.raises(ConfigError, match="list of 'key=value'"):
        cogframe.load_pipeline("tiny/sample", "rounds=1")
    with pytest.raises(ConfigError, match="guidancee"):
        cogframe.load_pipeline("tiny/sample", {"guidancee": 2})


def test_dict_overrides_equal_string_overrides(assets):
    a = cogframe.load_pipeline("tiny/sample", [*SMALL, "rounds=0"])(PROMPT)
    b = cogframe.load_pipeline("tiny/sample", [*SMALL, *_dict_to_list({"rounds": 0})])(PROMPT)
    assert np.array_equal(a.tokens, b.tokens)


def _dict_to_list(d):
    from cogframe.api import _override_strings

    return _override_strings(d)


# ------------------------------------------------------------------------------ the rest
def test_build_model_with_weights_and_backends(assets):
    path = assets / "tiny" / "stage1.safetensors"
    model = cogframe.build_model("tiny_stage1", weights=path, temporal_attention="naive",
                                 num_layers=2, hidden_size=32, num_heads=2)
    from safetensors.torch import load_file

    saved = load_file(str(path))
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    assert not model.training
    with pytest.raises(ConfigError, match="does not exist"):
        cogframe.build_model("tiny_stage1", weights=assets / "nope.safetensors")
    with pytest.raises(ConfigError):
        cogframe.build_model("no_such_preset")


def test_run_runs_a_recipe_task_with_overrides(assets, tmp_path):
    cfg = cogframe.run("tiny/sample", [*FAST, f"out={tmp_path}/r", "rounds=0"])
    assert cfg.task == "sample" and (tmp_path / "r.mp4").is_file()
    with pytest.raises(ConfigError, match="roundz"):
        cogframe.run("tiny/sample", {"roundz": 1})


def test_list_components():
    names = {(c.kind, c.name) for c in cogframe.list_components()}
    assert {("attention", "sdpa"), ("task", "sample"), ("stage", "key_frames")} <= names
    assert {c.kind for c in cogframe.list_components("token_sampler")} == {"token_sampler"}
    with pytest.raises(ConfigError, match="unknown component kind"):
        cogframe.list_components("attentions")
