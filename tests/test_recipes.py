"""Recipes: finding, base inheritance, overrides, YAML errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from cogframe.errors import ConfigError
from cogframe.config.recipes import find_recipe, list_recipes, load_recipe, recipe_roots

DATA = Path(__file__).parent / "data"
RECIPES = DATA / "recipes"


def test_multi_level_inheritance_with_relative_bases():
    cfg = load_recipe(RECIPES / "nested" / "grandchild.yaml")
    assert "base" not in cfg
    assert cfg.task == "test_write"  # from base.yaml, two levels up
    assert cfg.sampler == {"name": "test_topk", "k": 3}  # child overrides one key, keeps the other
    assert cfg.description.startswith("Grandchild")
    assert cfg.message == "test_topk k=3"  # interpolations resolved after merging
    assert OmegaConf.is_missing(cfg, "out")


def test_plugin_recipe_dirs_and_base_by_name(testplug):
    assert DATA / "plugin_recipes" in recipe_roots()
    names = {name: desc for name, desc, _ in list_recipes()}
    assert names["testplug/child"] == "Inherits testplug/base by recipe name"
    assert find_recipe("testplug/child") == find_recipe("testplug/child.yaml")
    cfg = load_recipe("testplug/child")
    assert cfg.sampler.k == 5 and cfg.model.attention.window == 2


def test_unknown_recipe_suggests_close_names(testplug):
    with pytest.raises(ConfigError) as err:
        find_recipe("testplug/chld")
    assert "no recipe named 'testplug/chld'" in str(err.value) and "'testplug/child'" in str(err.value)


def test_base_cycle_is_reported_with_the_chain():
    with pytest.raises(ConfigError) as err:
        load_recipe(RECIPES / "cycle_a.yaml")
    msg = str(err.value)
    assert "recipe base cycle" in msg and "cycle_a.yaml -> " in msg and "cycle_b.yaml -> " in msg
    assert msg.count("cycle_a.yaml") == 2


def test_missing_base_file(tmp_path):
    (tmp_path / "r.yaml").write_text("task: x\nbase: nothere.yaml\n")
    with pytest.raises(ConfigError, match="base 'nothere.yaml' does not exist"):
        load_recipe(tmp_path / "r.yaml")
    (tmp_path / "r.yaml").write_text("task: x\nbase: tiny/nothere\n")
    with pytest.raises(ConfigError, match="base 'tiny/nothere' is not a recipe name"):
        load_recipe(tmp_path / "r.yaml")


def test_malformed_yaml_names_file_and_line():
    with pytest.raises(ConfigError) as err:
        load_recipe(RECIPES / "malformed.yaml")
    assert "malformed.yaml:5:" in str(err.value) and "line 5" in str(err.value)


def test_top_level_list_is_rejected(tmp_path):
    (tmp_path / "l.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_recipe(tmp_path / "l.yaml")


def test_overrides_set_add_and_parse_values():
    cfg = load_recipe(RECIPES / "child.yaml", [
        "sampler.k=7", "+sampler.temperature=0.5", "loggers.0.name=jsonl", "+loggers.0.path=/tmp/m.jsonl",
        "out=/tmp/o.json", "+extra={a: [1, 2]}", "message='10'",
    ])
    assert cfg.sampler == {"name": "test_topk", "k": 7, "temperature": 0.5}
    assert cfg.loggers[0] == {"name": "jsonl", "path": "/tmp/m.jsonl"}
    assert cfg.extra.a == [1, 2] and cfg.message == "10" and cfg.out == "/tmp/o.json"


def test_override_of_unknown_key_suggests_and_mentions_plus():
    with pytest.raises(ConfigError) as err:
        load_recipe(RECIPES / "child.yaml", ["sampler.kk=2"])
    msg = str(err.value)
    assert "no key 'sampler.kk'" in msg and "did you mean 'sampler.k'" in msg and "'+sampler.kk=2'" in msg


@pytest.mark.parametrize("token", ["sampler.k", "=3", "sampler..k=1", "+=1"])
def test_bad_override_syntax(token):
    with pytest.raises(ConfigError) as err:
        load_recipe(RECIPES / "child.yaml", [token])
    assert repr(token) in str(err.value) and "key.sub=value" in str(err.value)


def test_override_value_that_is_not_yaml():
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_recipe(RECIPES / "child.yaml", ["sampler.k=[1,"])


def test_unresolvable_interpolation(tmp_path):
    (tmp_path / "i.yaml").write_text("task: x\na: ${nope.b}\n")
    with pytest.raises(ConfigError, match="interpolation cannot be resolved"):
        load_recipe(tmp_path / "i.yaml")


def test_duplicate_recipe_names_across_roots(testplug, monkeypatch, tmp_path):
    import cogframe.config.recipes as recipes

    (tmp_path / "testplug").mkdir()
    (tmp_path / "testplug" / "base.yaml").write_text("task: x\n")
    monkeypatch.setattr(recipes, "recipe_roots", lambda: [DATA / "plugin_recipes", tmp_path])
    with pytest.raises(ConfigError, match="recipe name 'testplug/base' is defined twice"):
        list_recipes()
