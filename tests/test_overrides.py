"""Overrides that swap components (`slot=NAME`, `slot={name: ...}`, `slot.name=NAME`) and delete keys (`~key`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cogframe.config.recipes import load_recipe
from cogframe.errors import ConfigError

RECIPES = Path(__file__).parent / "data" / "recipes"


def _resolved(cli, recipe, *overrides):
    result = cli("validate", recipe, *overrides)
    assert result.code == 0, result.err
    return yaml.safe_load(result.out)


def test_slot_equals_name_replaces_the_node(cli):
    # top_k's k and temperature must not leak into greedy, which takes no keywords.
    assert _resolved(cli, "tiny/sample", "token_sampler=greedy")["token_sampler"] == {"name": "greedy"}


def test_slot_name_override_swaps_too(cli):
    assert _resolved(cli, "tiny/sample", "token_sampler.name=greedy")["token_sampler"] == {"name": "greedy"}
    # The same name is no swap: the other keywords stay.
    assert _resolved(cli, "tiny/sample", "token_sampler.name=top_k")["token_sampler"] == {
        "name": "top_k", "k": 10, "temperature": 1.0}


def test_slot_equals_mapping_with_name_replaces_and_mapping_without_name_merges(cli):
    assert _resolved(cli, "tiny/sample", "token_sampler={name: top_p, p: 0.9}")["token_sampler"] == {
        "name": "top_p", "p": 0.9}
    assert _resolved(cli, "tiny/sample", "token_sampler={k: 3}")["token_sampler"] == {
        "name": "top_k", "k": 3, "temperature": 1.0}


def test_keywords_of_a_swapped_node_need_no_plus(cli):
    node = _resolved(cli, "tiny/sample", "token_sampler=top_p", "token_sampler.p=0.5")["token_sampler"]
    assert node == {"name": "top_p", "p": 0.5}


def test_a_keyword_the_new_component_does_not_take_is_an_error_listing_its_keywords(cli):
    result = cli("validate", "tiny/sample", "token_sampler={name: top_p, k: 3}")
    assert result.code == 2
    assert "token_sampler.k: token_sampler 'top_p' takes no keyword 'k'" in result.err
    assert "accepted keywords (p, temperature)" in result.err
    result = cli("validate", "tiny/sample", "token_sampler={name: greedy, k: 3}")
    assert result.code == 2 and "token_sampler 'greedy' takes no keywords" in result.err, result.err


def test_an_empty_slot_takes_a_component_name(cli):
    assert _resolved(cli, "tiny/sample", "first_frame_sampler=greedy")["first_frame_sampler"] == {"name": "greedy"}


def test_list_slot_items_and_whole_lists(cli):
    loggers = _resolved(cli, "tiny/t2i", "~loggers.1")["loggers"]
    assert loggers == [{"name": "stdout"}]
    loggers = _resolved(cli, "tiny/t2i", "loggers.1=stdout")["loggers"]
    assert loggers == [{"name": "stdout"}, {"name": "stdout"}]
    loggers = _resolved(cli, "tiny/t2i", "loggers=[jsonl]", "loggers.0.path=m.jsonl")["loggers"]
    assert loggers == [{"name": "jsonl", "path": "m.jsonl"}]
    assert _resolved(cli, "tiny/t2i", "loggers=[]")["loggers"] == []


def test_tilde_deletes_a_key_and_the_default_applies(cli):
    cfg = _resolved(cli, "tiny/t2i", "~train.warmup_steps", "~overwrite")
    assert "warmup_steps" not in cfg["train"] and "overwrite" not in cfg


@pytest.mark.parametrize("token, message", [
    ("~train.warmup_step", "the recipe has no key 'train.warmup_step' (did you mean 'train.warmup_steps'?)"),
    ("~train.lr=3", "~key deletes a key and takes no value; write '~train.lr'"),
    ("~loggers.7", "the recipe has no key 'loggers.7'"),
    ("~", "is not of the form ~key.sub"),
])
def test_bad_deletions_exit_2(cli, token, message):
    result = cli("validate", "tiny/t2i", token)
    assert result.code == 2 and message in result.err, result.err


def test_without_the_tasks_slots_a_mapping_with_a_name_is_a_component():
    # The test recipes name a task no built-in plugin knows: `name:` mappings are swapped whole.
    cfg = load_recipe(RECIPES / "child.yaml", ["sampler=other"])
    assert cfg.sampler == {"name": "other"}
    cfg = load_recipe(RECIPES / "child.yaml", ["sampler.name=other", "sampler.depth=2"])
    assert cfg.sampler == {"name": "other", "depth": 2}
    with pytest.raises(ConfigError, match="no key 'message2'"):
        load_recipe(RECIPES / "child.yaml", ["sampler=other", "message2=x"])


def test_demo_runs_with_a_swapped_token_sampler(cli, tmp_path):
    result = cli("demo", "--out", tmp_path, "token_sampler={name: top_p, p: 0.9}")
    assert result.code == 0, result.err
    record = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert record["sampling"]["token_sampler"] == {"name": "top_p", "p": 0.9}


def test_demo_runs_with_greedy(cli, tmp_path):
    result = cli("demo", "--out", tmp_path, "token_sampler=greedy")
    assert result.code == 0, result.err
    record = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert record["sampling"]["token_sampler"] == {"name": "greedy"}
