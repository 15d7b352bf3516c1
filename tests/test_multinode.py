"""Multi-node launch (`cogframe run --nnodes N --node-rank R --rdzv-endpoint HOST:PORT`).

Two launchers on this machine act as two nodes of one process each, meeting through torchrun's
elastic c10d rendezvous on 127.0.0.1 (gloo on the CPU). Their losses must equal the
single-process run within 1e-4 and their sharded checkpoint must resume, exactly like the
one-node ``--nproc 2`` test of tests/test_distributed.py, whose fixtures this reuses.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from test_distributed import _cogframe, _losses, _recipe, setup  # noqa: F401  (setup: a fixture)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_nodes(*args: str, timeout: int = 300) -> str:
    """Starts `cogframe run` as node 0 and node 1 of a 2-node job; both must succeed."""
    env = dict(os.environ, OMP_NUM_THREADS="1", COGFRAME_THREADS="1", COGFRAME_PLUGINS="")
    endpoint = f"127.0.0.1:{_free_port()}"
    procs = [subprocess.Popen(
        [sys.executable, "-m", "cogframe", "run", "--nnodes", "2", "--node-rank", str(rank),
         "--rdzv-endpoint", endpoint, "--local-addr", "127.0.0.1", "--nproc", "1", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in (0, 1)]
    outputs = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=timeout)
            outputs.append(out)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-4000:]
    return "\n".join(outputs)


def test_two_nodes_match_one_process_and_resume(setup):  # noqa: F811
    one, one_dir = _recipe(setup, "mn_one", {"steps": 5, "min_lr_ratio": 1.0})
    two, two_dir = _recipe(setup, "mn_two", {"steps": 3, "save_every": 2, "min_lr_ratio": 1.0})
    _cogframe("run", str(one))
    _two_nodes(str(two))
    single, nodes = _losses(one_dir), _losses(two_dir)
    assert len(nodes) == 3
    for a, b in zip(single[:3], nodes):
        assert abs(a - b) < 1e-4, (single, nodes)
    step3 = two_dir / "checkpoints" / "step_00000003"
    trainer = json.loads((step3 / "trainer.json").read_text())
    assert trainer["world_size"] == 2 and trainer["format"] == "dcp"
    assert (step3 / "rng_rank0.safetensors").is_file() and (step3 / "rng_rank1.safetensors").is_file()

    # The sharded checkpoint resumes on a fresh rendezvous and continues the single-process run.
    out = _two_nodes(str(two), "train.steps=5", "resume=true")
    assert "resumed from" in out
    resumed = _losses(two_dir)
    assert len(resumed) == 5
    for a, b in zip(single[3:], resumed[3:]):
        assert abs(a - b) < 1e-4, (single, resumed)


@pytest.mark.parametrize("options, says", [
    (["--node-rank", "1"], "--nnodes is not given"),
    (["--rdzv-endpoint", "h:29500"], "--nnodes is not given"),
    (["--nnodes", "2", "--rdzv-endpoint", "h:29500"], "--node-rank: is missing"),
    (["--nnodes", "2", "--node-rank", "2", "--rdzv-endpoint", "h:29500"], "outside 0 .. 1"),
    (["--nnodes", "2", "--node-rank", "-1", "--rdzv-endpoint", "h:29500"], "outside 0 .. 1"),
    (["--nnodes", "2", "--node-rank", "0"], "--rdzv-endpoint: is missing"),
    (["--nnodes", "2", "--node-rank", "0", "--rdzv-endpoint", "h"], "not HOST:PORT"),
    (["--nnodes", "2", "--node-rank", "0", "--rdzv-endpoint", "h:99999"], "not HOST:PORT"),
    (["--nnodes", "0"], "--nnodes: must be >= 1"),
    (["--nnodes", "1", "--node-rank", "0"], "for one machine use --nproc N alone"),
    (["--nproc", "0"], "--nproc: must be >= 1"),
])
def test_bad_launch_options_are_exit_2(cli, options, says):
    # Checked before the recipe is even loaded: the recipe name need not exist.
    result = cli("run", *options, "no/such/recipe")
    assert result.code == 2, result
    assert "launch options" in result.err and says in result.err, result.err


def test_launch_inside_a_torchrun_worker_is_refused(cli, monkeypatch, tmp_path):
    from train_fixtures import make_shards, make_tokenizer, write_recipe

    recipe = write_recipe(tmp_path / "r.yaml", "tiny_t2i", tmp_path / "out",
                          make_shards(tmp_path / "shards", frames=1), make_tokenizer(tmp_path))
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = cli("run", "--nnodes", "2", "--node-rank", "0", "--rdzv-endpoint", "h:1", recipe)
    assert result.code == 2 and "inside a torchrun worker" in result.err, result.err


def test_launch_command_is_torchrun_c10d_with_the_node_hosting_the_store():
    import argparse

    from cogframe.cli.launch import add_launch_arguments, launch_command

    parser = argparse.ArgumentParser()
    parser.add_argument("recipe")
    parser.add_argument("overrides", nargs="*")
    add_launch_arguments(parser)
    cmds = [launch_command(parser.parse_args(["--nnodes", "13", "--node-rank", str(r),
                                              "--rdzv-endpoint", "n0:29500", "--nproc", "8",
                                              "cogvideo_9b/stage1", "train.steps=10"]),
                           {"output_dir": "runs/9b"}) for r in (0, 5)]
    for cmd, host in zip(cmds, ("true", "false")):
        assert "--nnodes=13" in cmd and "--rdzv-backend=c10d" in cmd and "--nproc-per-node=8" in cmd
        assert f"--rdzv-conf=is_host={host}" in cmd and "--standalone" not in cmd
        assert cmd[-2:] == ["cogvideo_9b/stage1", "train.steps=10"]
    # The same command on every node derives the same job id.
    ids = [next(a for a in cmd if a.startswith("--rdzv-id=")) for cmd in cmds]
    assert ids[0] == ids[1]
    static = launch_command(parser.parse_args(["--nnodes", "2", "--node-rank", "1", "--rdzv-backend",
                                               "static", "--rdzv-endpoint", "n0:29500", "r"]))
    assert "--node-rank=1" in static and "--rdzv-backend=static" in static
