"""Fast start: the listing, validating and copying commands import no torch; a closed pipe is quiet.

Each check runs the command in a fresh interpreter and reads ``sys.modules`` afterwards (timing
would depend on the machine). When torch does get imported, the message names the import chain
that pulled it in, so the module to fix is obvious.
"""

from __future__ import annotations

import re

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

PROBE = textwrap.dedent('''
    import builtins, sys, traceback
    first = []
    real_import = builtins.__import__

    def watch(name, *args, **kwargs):
        if name.split(".")[0] == "torch" and "torch" not in sys.modules and not first:
            stack = [f for f in traceback.extract_stack()[:-1] if "cogframe" in f.filename]
            first.append(" <- ".join(f"{f.filename.rsplit('cogframe', 1)[-1]}:{f.lineno}" for f in reversed(stack)))
        return real_import(name, *args, **kwargs)

    builtins.__import__ = watch
    from cogframe.cli import main
    status = main(sys.argv[1:])
    sys.stdout.flush()
    print(f"\\nSTATUS {status} TORCH {'torch' in sys.modules} FROM {first[0] if first else '-'}", file=sys.stderr)
''')


def _probe(*args: str, cwd=None) -> tuple[int, bool, str, subprocess.CompletedProcess]:
    env = {**os.environ, "COGFRAME_PLUGINS": ""}
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                          timeout=120, env=env, cwd=cwd)
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("STATUS "), proc.stderr
    _, status, _, torch, _, chain = last.split(" ", 5)
    return int(status), torch == "True", chain, proc


@pytest.mark.parametrize("args", [("ls",), ("--help",), ("plugins",), ("plugins", "--json"),
                                  ("validate", "--help")],
                         ids=lambda a: " ".join(a))
def test_listing_commands_import_no_torch(args):
    status, torch, chain, proc = _probe(*args)
    assert status == 0, proc.stderr
    assert not torch, f"`cogframe {' '.join(args)}` imported torch via {chain}"


def test_cp_imports_no_torch(tmp_path):
    status, torch, chain, proc = _probe("cp", "tiny/sample", str(tmp_path / "mine.yaml"))
    assert status == 0, proc.stderr
    assert (tmp_path / "mine.yaml").is_file()
    assert not torch, f"`cogframe cp` imported torch via {chain}"


def test_validate_tiny_sample_imports_no_torch():
    status, torch, chain, proc = _probe("validate", "--quiet", "tiny/sample")
    assert status == 0, proc.stderr
    assert not torch, f"`cogframe validate tiny/sample` imported torch via {chain}"


@pytest.mark.parametrize("recipe", ["tiny/stage1", "tiny/t2i"])
def test_validate_tiny_train_recipe_imports_no_torch(recipe, tmp_path):
    # The inherited weights may not exist yet (a fresh clone before `cogframe run tiny/t2i`): then
    # validate reports that (status 2), still without torch.
    status, torch, chain, proc = _probe("validate", "--quiet", recipe, f"output_dir={tmp_path / 'run'}")
    assert status in (0, 2), proc.stderr
    assert "internal error" not in proc.stderr
    assert not torch, f"`cogframe validate {recipe}` imported torch via {chain}"


def test_model_config_modules_import_no_torch():
    """ModelConfig, the presets, the layout and the mask rules are importable without torch."""
    code = ("import sys\n"
            "from cogframe.core.model.presets import PRESETS, model_config\n"
            "from cogframe.core.model.config import ModelConfig\n"
            "from cogframe.core.model.masks import spatial_mask, temporal_mask\n"
            "c = model_config('tiny_stage2')\n"
            "assert isinstance(c, ModelConfig)\n"
            "print(temporal_mask(c.layout, c.stage, 1, c.temporal).describe(), c.layout.seq_len)\n"
            "print('TORCH', 'torch' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["interpolation window=4x4 shift=2,2 336", "TORCH False"]


def test_model_config_keeps_its_old_import_path():
    from cogframe.core.model import config, presets, transformer

    assert transformer.ModelConfig is config.ModelConfig is presets.ModelConfig
    assert presets.model_config is config.model_config and presets.PRESETS is config.PRESETS


def test_plugins_lists_lazily_registered_builtins_with_constraints():
    status, torch, chain, proc = _probe("plugins", "--kind", "attention")
    assert status == 0, proc.stderr
    flex = next(line for line in proc.stdout.splitlines() if line.strip().startswith("flex "))
    assert "backward on cuda" in flex
    swin = next(line for line in proc.stdout.splitlines() if line.strip().startswith("swin3d "))
    assert "masks sequential,interpolation" in swin


def test_closed_stdout_pipe_exits_quietly():
    """`cogframe plugins --json | head -1`: no traceback, no "Exception ignored", status 141."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written
    try:
        proc = subprocess.run([sys.executable, "-m", "cogframe", "plugins", "--json"], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=120,
                              env={**os.environ, "COGFRAME_PLUGINS": ""})
    finally:
        os.close(write_end)
    assert proc.returncode == 141
    assert proc.stderr == ""


def test_head_of_every_listing_is_quiet(tmp_path):
    """The shell case: each listing command piped into `head -1` prints nothing on stderr."""
    script = " ; ".join(f"{sys.executable} -m cogframe {cmd} | head -1 >/dev/null"
                        for cmd in ("ls", "plugins", "plugins --json", "--help", "validate tiny/sample"))
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COGFRAME_PLUGINS": ""})
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


# ---- `cogframe ls` reads the task without omegaconf, with load_recipe's answers -------------------

_VALUES = st.one_of(
    st.none(), st.integers(-2, 2), st.sampled_from(
        ["train", "sample", "???", "${a}", "${a.b}", "x/${b}", "${nope}", "${asset:tiny/m.pt}",
         "${asset:../up}", "${oc.env:COGFRAME_TEST_UNSET_VAR,dflt}", "${oc.env:COGFRAME_TEST_UNSET_VAR}",
         "${task}", "${${a}}", "\\${a}", "${a", "${a}}", "${a b}", "$a", "{a}", "${oc.env:X, d}",
         "${oc.decode:1}"]))
_NODES = st.recursive(_VALUES, lambda inner: st.one_of(
    st.lists(inner, max_size=2), st.dictionaries(st.sampled_from(["a", "b", "task"]), inner, max_size=3)),
    max_leaves=6)
_RECIPES = st.dictionaries(st.sampled_from(["task", "a", "b", "c"]), _NODES, max_size=4)


def _outcome(fn):
    try:
        return ("ok", fn())
    except Exception as exc:  # the comparison is of the whole behaviour, errors included
        # A self-referencing ${a} fails with Python's RecursionError, whose own words depend on
        # where the interpreter hit the limit ("... exceeded" or "... exceeded in comparison"):
        # that tail is CPython's, not cogframe's, so it is cut before comparing.
        return (type(exc).__name__, re.sub(r"maximum recursion depth exceeded[^\n]*",
                                           "maximum recursion depth exceeded", str(exc)))


@settings(max_examples=150, deadline=None)
@given(base=_RECIPES, child=_RECIPES, inherit=st.booleans())
def test_recipe_task_equals_the_full_load(base, child, inherit):
    """`recipe_task` (what `ls` shows) answers exactly as `load_recipe(path).get("task", "-")`."""
    from cogframe.config.recipes import load_recipe, recipe_task

    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "base.yaml").write_text(yaml.safe_dump(base), encoding="utf-8")
        child = {"base": "base.yaml", **child} if inherit else child
        path = Path(folder) / "child.yaml"
        path.write_text(yaml.safe_dump(child), encoding="utf-8")
        assert _outcome(lambda: recipe_task(path)) == _outcome(lambda: load_recipe(path).get("task", "-"))


def test_ls_reads_the_shipped_recipes_without_loading_them(monkeypatch):
    """Every shipped recipe's task is read from the plain YAML chain: none needs the (slow) full load."""
    import cogframe.config.recipes as recipes

    expected = {name: recipes.load_recipe(path).get("task", "-") for name, _, path in recipes.list_recipes()}

    def refuse(*args, **kwargs):
        raise AssertionError(f"recipe_task fell back to load_recipe{args}")

    monkeypatch.setattr(recipes, "load_recipe", refuse)
    assert {name: recipes.recipe_task(path) for name, _, path in recipes.list_recipes()} == expected


def test_builtin_command_names_are_their_module_names():
    """`main` imports only the module of the command being run, found by this naming rule."""
    import importlib

    from cogframe.cli import COMMANDS

    for module in COMMANDS:
        assert importlib.import_module(module).NAME == module.rsplit(".", 1)[-1], module


def test_running_one_command_imports_no_other_command_module():
    code = ("import sys, io, contextlib\n"
            "from cogframe.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    main(['ls'])\n"
            "print(sorted(m for m in sys.modules if m.startswith('cogframe.cli.')))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COGFRAME_PLUGINS": ""})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['cogframe.cli.ls', 'cogframe.cli.table']"
