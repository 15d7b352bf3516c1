"""``benchmarks/gpu_check.py`` on the CPU (``--device cpu --quick``), so the GPU check cannot rot.

The check itself runs every section (CUDA tests on the CPU, a one-process bf16 FSDP2 step, one
dual-channel layer at the shrunk 9B layout, waves vs sequential decoding) in ~15 s of CPU time;
these tests read its JSON and Markdown report. Timings are not asserted (benchmarks only).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    result = _run("--device", "cpu", "--quick", "--out", out)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    return json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.md").read_text()


def test_quick_cpu_check_runs_every_section(report):
    data, md = report
    gpu_check = _load()
    for name in gpu_check.SECTIONS:
        assert data[name]["status"] == "ok", (name, data[name])
    tests = data["cuda_tests"]
    assert tests["counts"]["passed"] >= 8 and tests["counts"]["failed"] == 0 and tests["counts"]["error"] == 0
    assert {t["name"].split("[")[1].split("-")[0] for t in tests["tests"]} >= {"sdpa", "swin3d"}
    fsdp = data["fsdp2_step"]
    assert fsdp["sharded_parameters"] > 0 and fsdp["frozen_parameters_with_grad"] == 0
    assert fsdp["first_loss_relative_difference"] < 2e-2
    assert [r["backend"] for r in data["layer_9b"]["rows"]] == ["sdpa", "sdpa", "swin3d"]
    assert all(0 < r["mfu"] for r in data["layer_9b"]["rows"])
    for row in data["waves"]["rows"]:
        assert row["tokens_identical"] and row["wave_passes"] < row["sequential_passes"], row
    for heading in ("## CUDA tests", "## bf16 FSDP2 training step", "## One 9B dual-channel layer",
                    "## Parallel waves vs sequential decoding"):
        assert heading in md


def test_requirements_come_from_pyproject_and_missing_ones_are_named():
    gpu_check = _load()
    names = gpu_check.requirement_names()
    assert {"torch", "omegaconf", "safetensors", "pytest", "hypothesis"} <= set(names)
    assert gpu_check.missing_distributions(["torch", "no-such-distribution-cogframe"]) == \
        ["no-such-distribution-cogframe"]


def test_setup_installs_nothing_without_wheels_and_says_so(tmp_path):
    gpu_check = _load()
    args = gpu_check.parse_args(["--wheels", str(tmp_path)])
    result = gpu_check.setup(args)
    assert result["missing_before"] == gpu_check.missing_distributions(result["required"])
    assert result["installed"] == []  # an empty wheel folder installs nothing and fetches nothing
    assert set(result["still_missing"]) == set(result["missing_before"])


def test_bad_arguments_exit_2_naming_the_fix(tmp_path):
    result = _run("--wheels", tmp_path / "nope", "--out", tmp_path, timeout=60)
    assert result.returncode == 2 and "--wheels" in result.stderr and "folder" in result.stderr
    if not torch.cuda.is_available():
        result = _run("--device", "cuda", "--out", tmp_path, "--only", "peak", timeout=120)
        assert result.returncode == 2 and "no CUDA device" in result.stderr and "--device cpu" in result.stderr
