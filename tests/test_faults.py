"""Faults a user can cause, through `cogframe ...`: each is exit 2 with a clear message, or safe.

Covers the reliability audit: sharded-checkpoint resume advice, metrics on overwrite/resume,
truncated and non-finite weights, a non-UTF-8 SAT ``latest``, prompts outside the tokenizer's
vocabulary, and the permissions of written weights.
"""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch
from safetensors.torch import load_file, save_file

import cogframe.cli as cli_module
from cogframe.config.recipes import assets_root
from train_fixtures import make_shards, make_t2i_weights, make_tokenizer, write_recipe


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    return {"root": root, "tok": make_tokenizer(root),
            "image_shards": make_shards(root / "shards_image", frames=1),
            "video_shards": make_shards(root / "shards_video", frames=5),
            "t2i": make_t2i_weights(root)}


def _steps(path):
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


# ------------------------------------------------------------------------------ training runs
def test_overwrite_starts_a_fresh_metrics_file_and_resume_continues_it(cli, workspace, tmp_path, umask_022):
    recipe = write_recipe(tmp_path / "r.yaml", "tiny_t2i", tmp_path / "run", workspace["image_shards"],
                          workspace["tok"], train={"steps": 3, "save_every": 2})
    metrics = tmp_path / "run" / "metrics.jsonl"
    assert cli("run", recipe).code == 0
    assert _steps(metrics) == [1, 2, 3]
    again = cli("run", recipe, "overwrite=true", "train.steps=2")
    assert again.code == 0, again.err
    assert _steps(metrics) == [1, 2], "overwrite=true must not append to the old run's metrics"
    assert "dropped 3 record(s) at step >= 1" in again.err
    # A run killed after logging step 3 but before its checkpoint: resuming from step 2 replaces
    # the orphaned record (and a torn last line) instead of logging step 3 twice.
    with metrics.open("a") as handle:
        handle.write(json.dumps({"step": 3, "loss": 9.0}) + "\n{\"step\": 4, \"lo")
    resumed = cli("run", recipe, "resume=true", "train.steps=4")
    assert resumed.code == 0, resumed.err
    assert _steps(metrics) == [1, 2, 3, 4]
    assert all(json.loads(line)["loss"] != 9.0 for line in metrics.read_text().splitlines())
    # Weights are written with the mode of a normal file, not the temp file's 0600.
    assert stat.S_IMODE((tmp_path / "run" / "model.safetensors").stat().st_mode) == 0o644


def test_sharded_checkpoint_resumed_by_one_process_advises_nproc(cli, workspace, tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", "tiny_t2i", tmp_path / "run", workspace["image_shards"],
                          workspace["tok"], train={"steps": 2})
    assert cli("run", recipe).code == 0
    # What `cogframe run --nproc 2` leaves: trainer.json says dcp/2 and there is no model.safetensors.
    step = tmp_path / "run" / "checkpoints" / "step_00000002"
    trainer = json.loads((step / "trainer.json").read_text())
    (step / "trainer.json").write_text(json.dumps({**trainer, "format": "dcp", "world_size": 2}))
    (step / "model.safetensors").unlink()
    (step / "dcp").mkdir()
    result = cli("run", recipe, "resume=true", "train.steps=3")
    assert result.code == 2
    assert "sharded checkpoint written by 2 processes" in result.err and "--nproc 2" in result.err
    assert "cogframe consolidate" in result.err and "Delete" not in result.err, result.err
    assert step.is_dir() and (step / "trainer.json").is_file()


def test_truncated_init_weights_are_a_clear_error(cli, workspace, tmp_path):
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(workspace["t2i"].read_bytes()[:1000])
    recipe = write_recipe(tmp_path / "r.yaml", "tiny_stage1", tmp_path / "run", workspace["video_shards"],
                          workspace["tok"], init_from=cut)
    result = cli("run", recipe)
    assert result.code == 2, result.err
    assert f"cannot read model.init.from {cut}: it is truncated or not a safetensors file" in result.err
    assert "Copy or download it again" in result.err and "internal error" not in result.err


def test_non_finite_init_weights_are_refused_naming_the_tensor(cli, workspace, tmp_path):
    tensors = load_file(str(workspace["t2i"]))
    tensors["layers.1.mlp.dense_4h_to_h.weight"][0, 3] = float("nan")
    bad = tmp_path / "nan.safetensors"
    save_file(tensors, str(bad))
    recipe = write_recipe(tmp_path / "r.yaml", "tiny_stage1", tmp_path / "run", workspace["video_shards"],
                          workspace["tok"], init_from=bad)
    result = cli("run", recipe)
    assert result.code == 2, result.err
    assert "tensor 'layers.1.mlp.dense_4h_to_h.weight' holds non-finite values (1 of" in result.err
    assert not (tmp_path / "run" / "model.safetensors").exists()


# ------------------------------------------------------------------------------ sampling
def test_non_finite_sampling_weights_are_refused_naming_the_tensor(cli, tmp_path):
    tensors = load_file(str(assets_root() / "tiny" / "stage1.safetensors"))
    name = next(k for k in sorted(tensors) if k.endswith("attention.dense.weight"))
    tensors[name].view(-1)[5] = float("inf")
    bad = tmp_path / "stage1_inf.safetensors"
    save_file(tensors, str(bad))
    result = cli("run", "tiny/sample", f"stage1.model.weights={bad}", f"out={tmp_path}/v/", "rounds=0")
    assert result.code == 2, result.err
    assert f"tensor '{name}' holds non-finite values (1 of" in result.err and "first inf" in result.err
    assert not list((tmp_path / "v").glob("*.mp4")), "no video from broken weights"


@pytest.mark.parametrize("prompt, needles", [
    ("A RED CIRCLE", ["does not cover: 'A', 'RED', 'CIRCLE'", "case-sensitive",
                      "lower-case spelling: 'a red circle'"]),
    ("一个红色的圆", ["does not cover: '一个红色的圆'", "words it knows include: a, blue, circle"]),
    ("a purple hexagon dancing sideways", ["does not cover: 'hexagon'", "train_text_tokenizer"]),
])
def test_prompts_outside_the_tokenizer_are_refused_naming_the_words(cli, tmp_path, prompt, needles):
    result = cli("run", "tiny/sample", f"prompt={prompt}", f"out={tmp_path}/v/")
    assert result.code == 2, result.err
    for needle in needles:
        assert needle in result.err, result.err
    assert "too long" not in result.err
    assert not (tmp_path / "v").exists() or not any((tmp_path / "v").iterdir())


def test_a_really_long_prompt_is_too_long_and_says_which_words_cost_most(cli, tmp_path):
    result = cli("run", "tiny/sample", "prompt=a purple dancing sideways square moving left",
                 f"out={tmp_path}/v/")
    assert result.code == 2
    assert "prompt too long" in result.err and "'sideways' (8 tokens)" in result.err, result.err


# ------------------------------------------------------------------------------ conversion
@pytest.fixture
def convert_cli(cli, monkeypatch):
    if "cogframe.cli.convert" not in cli_module.COMMANDS:
        monkeypatch.setattr(cli_module, "COMMANDS", (*cli_module.COMMANDS, "cogframe.cli.convert"))
    return lambda *args: cli("convert", *args)


def test_non_utf8_sat_latest_is_a_clear_error(convert_cli, tmp_path):
    sat = tmp_path / "sat"
    sat.mkdir()
    (sat / "latest").write_bytes(b"\xff\xfe1\x00000")
    (sat / "model_config.json").write_text("{}")
    result = convert_cli("sat", sat, tmp_path / "cf")
    assert result.code == 2, result.err
    assert f"{sat / 'latest'} is not text" in result.err and "'release'" in result.err
    assert "internal error" not in result.err


def test_weights_folders_are_written_readable(umask_022, tmp_path):
    from cogframe.core.model.presets import PRESETS, build_model
    from cogframe.core.weights.pretrained import load_pretrained, write_weights_folder

    torch.manual_seed(0)
    overrides = {"num_layers": 1, "hidden_size": 32, "num_heads": 2}
    state = build_model("tiny_t2i", overrides=overrides).state_dict()
    folder = tmp_path / "w"
    write_weights_folder(folder, state, model={**PRESETS["tiny_t2i"], **overrides}, dtype="float32",
                         max_shard_bytes=1 << 14)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
    assert len(modes) > 3 and set(modes.values()) == {0o644}, modes
    # ...and a NaN in a stored shard is refused when the folder is loaded for sampling.
    shard = sorted(folder.glob("model-*.safetensors"))[-1]
    tensors = load_file(str(shard))
    name = sorted(tensors)[0]
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, str(shard))
    from cogframe.errors import DataError

    with pytest.raises(DataError, match=rf"tensor '{name}' holds non-finite values"):
        load_pretrained(folder)


def test_consolidate_into_a_folder_is_refused(cli, tmp_path):
    (tmp_path / "out").mkdir()
    result = cli("consolidate", tmp_path / "ckpt", f"{tmp_path / 'out'}/")
    assert result.code == 2 and "is a folder; give the file to write" in result.err, result.err
