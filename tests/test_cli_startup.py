"""Fast start: the listing, validating and copying commands import no torch; a closed pipe is quiet.

Each check runs the command in a fresh interpreter and reads ``sys.modules`` afterwards (timing
would depend on the machine). When torch does get imported, the message names the import chain
that pulled it in, so the module to fix is obvious.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

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


@pytest.mark.xfail(strict=True, reason="known gap: the sample task's checks need the model layout, and "
                   "core/model (ModelConfig, TokenLayout, presets) imports torch; moving the layout types "
                   "into a torch-free module is still to do")
def test_validate_tiny_sample_imports_no_torch():
    status, torch, chain, proc = _probe("validate", "--quiet", "tiny/sample")
    assert status == 0, proc.stderr
    assert not torch, f"`cogframe validate tiny/sample` imported torch via {chain}"


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
