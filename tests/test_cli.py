"""The command line, in-process: outputs, exit statuses and error messages."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import cogframe.cli.env
import cogframe.config.recipes

RECIPES = Path(__file__).parent / "data" / "recipes"
CHILD = RECIPES / "child.yaml"


def test_ls_lists_recipes_and_shows_broken_ones(cli, testplug, monkeypatch):
    result = cli("ls")
    assert result.code == 0
    assert re.search(r"^testplug/child +test_write +Inherits testplug/base by recipe name$", result.out, re.M)
    monkeypatch.setattr(cogframe.config.recipes, "recipe_roots", lambda: [RECIPES])
    rows = {line.split()[0]: line for line in cli("ls").out.splitlines()[1:]}
    assert "nested/grandchild" in rows and "test_write" in rows["nested/grandchild"]
    assert "cannot load" in rows["malformed"] and "cannot load: recipe base cycle" in rows["cycle_a"]


def test_plugins_table_and_json(cli):
    table = cli("plugins")
    assert table.code == 0
    assert "builtin:loggers" in table.out and "\nlogger\n" in table.out
    assert re.search(r"^  jsonl +builtin:loggers +yes +Appends one JSON object", table.out, re.M)
    data = json.loads(cli("plugins", "--json", "--kind", "logger").out)
    assert list(data["components"]) == ["logger"]
    stdout = next(c for c in data["components"]["logger"] if c["name"] == "stdout")
    assert stdout["origin"] == "builtin:loggers" and stdout["available"] is True


def test_validate_prints_resolved_yaml_or_nothing(cli, testplug):
    result = cli("validate", CHILD, "out=/tmp/o.json", "sampler.k=9")
    assert result.code == 0, result.err
    assert "k: 9" in result.out and "base:" not in result.out and "task: test_write" in result.out
    quiet = cli("validate", "-q", "testplug/child", "out=/tmp/o.json")
    assert (quiet.code, quiet.out, quiet.err) == (0, "", "")


def test_run_calls_the_task(cli, testplug, tmp_path):
    out, metrics = tmp_path / "o.json", tmp_path / "logs" / "m.jsonl"
    result = cli("run", "testplug/child", f"out={out}", "+message=hello",
                 f"+loggers=[{{name: stdout}}, {{name: jsonl, path: '{metrics}'}}]")
    assert result.code == 0, result.err
    assert json.loads(out.read_text()) == {"k": 5, "window": 2, "message": "hello"}
    assert "step 1: k=5" in result.out
    assert json.loads(metrics.read_text()) == {"step": 1, "k": 5}


def test_cp_copies_refuses_overwrite_and_forces(cli, testplug, tmp_path):
    dest = tmp_path / "mine.yaml"
    assert cli("cp", "testplug/child", dest).code == 0
    assert dest.read_text().startswith("description: Inherits testplug/base")
    assert cli("validate", "-q", dest, "out=x").code == 0  # base by name still resolves from the copy
    assert cli("cp", "testplug/base", dest, "--force").code == 0
    assert "Shipped by the test plugin" in dest.read_text()
    assert cli("cp", "testplug/base", tmp_path).code == 0
    assert (tmp_path / "base.yaml").is_file()


def test_env_reports_versions(cli):
    result = cli("env")
    assert result.code == 0
    for key in ("python:", "platform:", "torch:", "cuda:", "torch threads:", "pluggy:", "xformers:", "tensorboard:"):
        assert key in result.out


BAD_INPUTS = [
    # (arguments, substrings the error must contain)
    (["validate", "tiny/nope"], ["no recipe named 'tiny/nope'", "cogframe ls"]),
    (["validate", RECIPES / "malformed.yaml"], ["malformed.yaml:5:", "malformed YAML", "fix the syntax at line 5"]),
    (["validate", CHILD, "sampler.k"], ["'sampler.k' is not of the form key.sub=value", "+key.sub=value"]),
    (["validate", CHILD, "sampler.kk=1"], ["no key 'sampler.kk'", "did you mean 'sampler.k'", "'+sampler.kk=1'"]),
    (["validate", CHILD, "sampler.k=[1,"], ["the value '[1,' is not valid YAML"]),
    (["validate", CHILD, "out=x", "sampler.name=test_topc"],
     ["sampler.name: unknown token_sampler 'test_topc'. Did you mean 'test_topk'?"]),
    (["validate", CHILD, "out=x", "+sampler.kk=1"], ["sampler.kk: token_sampler 'test_topk' takes no keyword 'kk'"]),
    (["validate", CHILD, "out=x", "sampler.k=two"], ["sampler.k: token_sampler 'test_topk' expects int for 'k'"]),
    (["validate", RECIPES / "no_name.yaml"], ["sampler.name: no token_sampler is named", "add 'name: <one of ", "test_topk"]),
    (["validate", RECIPES / "no_task.yaml"], ["the recipe names no task", "add 'task: <one of ", "test_write"]),
    (["validate", CHILD, "out=x", "task=test_wirte"], ["unknown task 'test_wirte'. Did you mean 'test_write'?"]),
    (["validate", RECIPES / "cycle_a.yaml"], ["recipe base cycle", "Remove the 'base:' key"]),
    (["validate", CHILD, "out=x", "model.attention.name=test_gpu_only"],
     ["attention 'test_gpu_only' is not available here (needs a CUDA GPU"]),
    (["run", CHILD], ["out is ???: set the output file"]),
    (["run", CHILD, "out=x", "sampler.k=0"], ["building token_sampler 'test_topk' failed: ValueError: k must be >= 1"]),
    (["cp", "testplug/base", CHILD], ["already exists: pass --force to overwrite it"]),
    (["cp", "testplug/bsae", "x.yaml"], ["no recipe named 'testplug/bsae'", "'testplug/base'"]),
    (["runn", "x"], ["invalid choice: 'runn'"]),
    ([], ["the following arguments are required: COMMAND"]),
]


@pytest.mark.parametrize("args,expected", BAD_INPUTS,
                         ids=[" ".join(str(a).replace(f"{RECIPES}/", "") for a in args) or "(no arguments)"
                              for args, _ in BAD_INPUTS])
def test_bad_input_exits_2_with_a_clear_message(cli, testplug, args, expected):
    result = cli(*args)
    assert result.code == 2, result.err
    assert "Traceback" not in result.err and "error: " in result.err
    for text in expected:
        assert text in result.err
    assert CHILD.read_text().startswith("description: Child")  # cp did not overwrite without --force


def test_unknown_plugin_in_env_exits_2(cli, monkeypatch):
    monkeypatch.setenv("COGFRAME_PLUGINS", "nosuchplugin")
    import cogframe.plugins

    cogframe.plugins.reset_plugins()
    try:
        result = cli("ls")
    finally:
        monkeypatch.setenv("COGFRAME_PLUGINS", "")
        cogframe.plugins.reset_plugins()
    assert result.code == 2 and "COGFRAME_PLUGINS names plugin 'nosuchplugin'" in result.err


def test_debug_shows_traceback_and_bugs_exit_1(cli, testplug):
    result = cli("run", CHILD, "out=x", "+crash=true")
    assert result.code == 1 and "Traceback" not in result.err
    assert "internal error RuntimeError: crash requested by the recipe" in result.err and "--debug" in result.err
    debug = cli("--debug", "run", CHILD, "out=x", "+crash=true")
    assert debug.code == 1 and "Traceback (most recent call last)" in debug.err
    user_error = cli("run", "--debug", "tiny/nope")
    assert user_error.code == 2 and "Traceback" in user_error.err and "error: no recipe named" in user_error.err


def test_ctrl_c_exits_130(cli, monkeypatch):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cogframe.cli.env, "run", interrupted)
    result = cli("env")
    assert result.code == 130 and "error: interrupted" in result.err


def test_help_and_version(cli):
    assert cli("--help").code == 0
    assert cli("--version").out.startswith("cogframe ")
