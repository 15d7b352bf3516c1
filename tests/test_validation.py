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
