"""Recipe validation: every problem of a recipe reported at once, with key paths and fixes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from cogframe.errors import ConfigError
from cogframe.config.recipes import load_recipe, validate_recipe

RECIPES = Path(__file__).parent / "data" / "recipes"


def _recipe(**overrides):
    base = OmegaConf.to_container(load_recipe(RECIPES / "base.yaml"))
    base["out"] = "/tmp/out.json"
    base.update(overrides)
    return OmegaConf.create(base)


def test_valid_recipe_passes(testplug):
    validate_recipe(_recipe(), testplug)


def test_all_problems_are_collected(testplug):
    cfg = _recipe(
        sampler={"name": "test_topk", "kk": 2, "temperature": "hot"},
        model={"attention": {"name": "test_gpu_only"}},
        loggers=[{"name": "stdout"}, {"path": "m.jsonl"}, {"name": "jsnol", "path": "m.jsonl"}, "stdout"],
    )
    with pytest.raises(ConfigError) as err:
        validate_recipe(cfg, testplug, source="my.yaml")
    msg = str(err.value)
    assert msg.startswith("my.yaml is invalid (6 problems):")
    assert "sampler.kk: token_sampler 'test_topk' takes no keyword 'kk': did you mean 'k'? Otherwise remove it or use " \
           "one of the accepted keywords (k, temperature)" in msg
    assert "sampler.temperature: token_sampler 'test_topk' expects float for 'temperature', got str 'hot'" in msg
    assert "model.attention: attention 'test_gpu_only' is not available here (needs a CUDA GPU" in msg
    assert re.search(r"loggers.1.name: no logger is named: add 'name: <one of [^>]*\bjsonl\b[^>]*\bstdout\b", msg)
    assert "loggers.2.name: unknown logger 'jsnol'. Did you mean 'jsonl'?" in msg
    assert "loggers.3: must be a logger node" in msg


def test_required_missing_and_runtime_keywords(testplug):
    cfg = _recipe(model={"attention": {"name": "test_cpu", "layout": "mine"}})
    with pytest.raises(ConfigError) as err:
        validate_recipe(cfg, testplug)
    msg = str(err.value)
    assert "model.attention.window: attention 'test_cpu' needs the keyword 'window'" in msg
    assert "model.attention.layout: 'layout' is supplied by task 'test_write' at run time: remove it" in msg


def test_unset_mandatory_value_in_a_slot(testplug):
    cfg = _recipe(sampler={"name": "test_topk", "k": "???"})
    with pytest.raises(ConfigError, match=r"sampler.k: is \?\?\? \(left for you to set\): set it, e.g. sampler.k="):
        validate_recipe(cfg, testplug)


def test_missing_and_unknown_task(testplug):
    with pytest.raises(ConfigError, match=r"task: the recipe names no task: add 'task: <one of [^>]*\btest_write\b"):
        validate_recipe(OmegaConf.create({"description": "x"}), testplug)
    with pytest.raises(ConfigError, match="unknown task 'test_wrte'. Did you mean 'test_write'"):
        validate_recipe(_recipe(task="test_wrte"), testplug)


def test_task_checks_run_alongside_slot_problems(testplug):
    with pytest.raises(ConfigError, match="out is \\?\\?\\?: set the output file"):
        validate_recipe(load_recipe(RECIPES / "base.yaml"), testplug)
    # Every stage at once: the unknown component AND the task's own check, in one message.
    bad_slot = load_recipe(RECIPES / "base.yaml", ["sampler.name=nope"])
    with pytest.raises(ConfigError) as err:
        validate_recipe(bad_slot, testplug)
    assert "unknown token_sampler 'nope'" in str(err.value) and "out is ???" in str(err.value)


def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_typo_top_level_keys_in_a_recipe_file_are_errors_with_a_suggestion(cli, tmp_path):
    recipe = _write(tmp_path, "base: tiny/t2i\noutptu_dir: runs/x\ntrian: {steps: 3}\n")
    result = cli("validate", recipe)
    assert result.code == 2
    assert "outptu_dir: task 'train' takes no top-level key 'outptu_dir': did you mean 'output_dir'?" in result.err
    assert "trian: task 'train' takes no top-level key 'trian': did you mean 'train'?" in result.err
    recipe = _write(tmp_path, "base: tiny/sample\npromt: a blue square moving up\n")
    result = cli("validate", recipe)
    assert result.code == 2 and "promt: task 'sample' takes no top-level key 'promt': did you mean 'prompt'?" \
        in result.err, result.err


def test_mandatory_values_left_unset_anywhere_in_an_extending_recipe(cli, tmp_path):
    recipe = _write(tmp_path, "base: tiny/t2i\ntrain:\n  lr: ???\nmodel:\n  overrides:\n    num_layers: ???\n")
    result = cli("validate", recipe)
    assert result.code == 2
    assert "train.lr: is ??? (left for you to set): set it, e.g. train.lr=<value>" in result.err
    assert "model.overrides.num_layers: is ??? (left for you to set)" in result.err


def test_non_utf8_recipe_is_a_clear_error(cli, tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("description: caf\u00e9\ntask: train\n".encode("latin-1"))
    result = cli("validate", path)
    assert result.code == 2 and "not UTF-8 text" in result.err and "save the recipe as UTF-8" in result.err


def test_loggers_written_as_a_mapping_is_a_clear_error(cli, tmp_path):
    recipe = _write(tmp_path, "description: own\ntask: train\noutput_dir: runs/x\nloggers: {name: stdout}\n")
    result = cli("validate", recipe)
    assert result.code == 2
    assert "loggers: must be a list of logger nodes, got a mapping {'name': 'stdout'}" in result.err
    assert "write it as 'loggers: [{name: <logger>, ...}, ...]'" in result.err
    # Extending a recipe whose loggers are a list: the merge itself names the key.
    recipe = _write(tmp_path, "base: tiny/t2i\nloggers: {name: stdout}\n")
    result = cli("validate", recipe)
    assert result.code == 2 and "'loggers' is a mapping here but a list in its base tiny/t2i" in result.err, result.err
    result = cli("validate", "tiny/prepare", "dataset=[moving_shapes]")
    assert result.code == 2 and "dataset: holds one dataset node, not a list" in result.err, result.err


@pytest.mark.parametrize("recipe, overrides, message", [
    ("tiny/prepare", ["text_len=0"], "text_len: must be a positive integer, got 0"),
    ("tiny/prepare", ["seed=18446744073709551616"], "seed: is 18446744073709551616, outside 0 .. 2**63-1"),
    ("tiny/prepare", ["+splits.train.num_clipz=3"], "splits.train.num_clipz: dataset 'moving_shapes' takes no "
                                                    "keyword 'num_clipz': did you mean 'num_clips'?"),
    ("tiny/prepare", ["+shardsize=3"], "shardsize: task 'prepare' takes no top-level key 'shardsize': did you mean "
                                       "'shard_size'?"),
    ("tiny/prepare", ["~frame_rate_sampler"], "frame_rate_sampler: is missing: prepare needs a frame_rate_sampler"),
    ("tiny/vqvae", ["+train.stepz=3"], "train.stepz: section 'train' takes no keyword 'stepz': did you mean 'steps'?"),
    ("tiny/vqvae", ["train.lr=-1"], "train.lr: must be a positive number, got -1"),
    ("tiny/vqvae", ["~splits.val"], "splits: has no 'val' split: train_vqvae reports held-out PSNR"),
    ("tiny/text_tokenizer", ["+corpus.frame=5"], "corpus.frame: section 'corpus' takes no keyword 'frame'"),
    ("tiny/text_tokenizer", ["tokenizer.model_type=bpee"], "tokenizer.model_type: must be bpe, unigram, char or word"),
    ("tiny/text_tokenizer", ["corpus.prefix_rates=[0]"], "corpus.prefix_rates: must be a non-empty list of "
                                                         "positive frame rates, got [0]"),
    ("tiny/export_moving_shapes", ["format=avi"], "format: 'avi' is not supported: use one of mp4, gif, webm"),
    ("tiny/export_moving_shapes", ["overwrite=maybe"], "overwrite: the recipe's top level expects bool for "
                                                       "'overwrite', got str 'maybe'"),
])
def test_data_task_settings_are_checked_like_component_keywords(cli, recipe, overrides, message):
    result = cli("validate", recipe, *overrides)
    assert result.code == 2 and message in result.err, result.err
