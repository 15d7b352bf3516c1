"""FSDP2 on 2 CPU processes (gloo) through `cogframe run --nproc 2`, against 1 process.

Every launch is a real torchrun: the workers build the model on the meta device, shard it with
``fully_shard`` and receive rank 0's weights. Parameters stay fp32 here (``param_dtype: null``)
so the 1e-4 loss comparison tests sharding, not bf16 rounding.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from train_fixtures import make_shards, make_t2i_weights, make_tokenizer, write_recipe


def _cogframe(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", COGFRAME_THREADS="1", COGFRAME_PLUGINS="")
    proc = subprocess.run([sys.executable, "-m", "cogframe", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def _losses(run_dir):
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp")
    tok = make_tokenizer(root)
    shards = make_shards(root / "shards", frames=5)
    return root, tok, shards, make_t2i_weights(root)


def _recipe(setup, name, train):
    root, tok, shards, t2i = setup
    fp32 = {"distributed": {"param_dtype": None, "reduce_dtype": "float32"}}
    # Inheriting a text-to-image model puts frozen and trainable parameters in every FSDP unit.
    return write_recipe(root / f"{name}.yaml", "tiny_stage1", root / name, shards, tok,
                        train=train, extra=fp32, init_from=t2i), root / name


def test_two_processes_match_one_then_save_resume_consolidate(setup):
    # A constant learning rate keeps the schedule independent of train.steps, so a 3-step run
    # resumed to 5 steps follows the 5-step single-process run exactly.
    one, one_dir = _recipe(setup, "one", {"steps": 5, "min_lr_ratio": 1.0})
    two, two_dir = _recipe(setup, "two", {"steps": 3, "save_every": 2, "min_lr_ratio": 1.0})
    _cogframe("run", str(one))
    _cogframe("run", "--nproc", "2", str(two))
    single, sharded = _losses(one_dir), _losses(two_dir)
    assert len(sharded) == 3
    for a, b in zip(single[:3], sharded):
        assert abs(a - b) < 1e-4, (single, sharded)

    step3 = two_dir / "checkpoints" / "step_00000003"
    assert (step3 / "dcp").is_dir() and (step3 / "rng_rank1.safetensors").is_file()

    # Resume the sharded run to step 5: it continues where the single run went.
    proc = _cogframe("run", "--nproc", "2", str(two), "train.steps=5", "resume=true")
    assert "resumed from" in proc.stdout + proc.stderr
    resumed = _losses(two_dir)
    assert len(resumed) == 5
    for a, b in zip(single[3:], resumed[3:]):
        assert abs(a - b) < 1e-4, (single, resumed)

    # Consolidation round trip: the sharded step-5 checkpoint equals the final full weights.
    merged = two_dir / "merged.safetensors"
    _cogframe("consolidate", str(two_dir / "checkpoints" / "step_00000005"), str(merged))
    full, final = load_file(str(merged)), load_file(str(two_dir / "model.safetensors"))
    assert full.keys() == final.keys()
    assert all(torch.equal(full[k], final[k]) for k in final)
    # ...and matches the single-process weights closely (same math, different reductions).
    single_final = load_file(str(one_dir / "model.safetensors"))
    assert all(torch.allclose(single_final[k], final[k], atol=1e-4) for k in final)
