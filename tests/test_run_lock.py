"""One run per run folder: the lock names its holder, is released at the end, survives no kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cogframe.core.io.run_lock import LOCK_FILE, RunFolderLockedError, RunLock
from train_fixtures import make_shards, make_tokenizer, write_recipe


def _cogframe(*args: object) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", COGFRAME_THREADS="1", COGFRAME_PLUGINS="")
    return subprocess.Popen([sys.executable, "-m", "cogframe", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_holder(lock: Path, proc: subprocess.Popen, timeout: float = 120) -> dict:
    """The holder's details once ``proc`` has locked the folder."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the first run ended early ({proc.returncode}): {proc.communicate()}")
        try:
            info = json.loads(lock.read_text())
            if info.get("pid") == proc.pid:
                return info
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise AssertionError("the first run never locked its folder")


@pytest.fixture(scope="module")
def long_run(tmp_path_factory):
    """A training recipe that runs until it is killed."""
    root = tmp_path_factory.mktemp("lock")
    recipe = write_recipe(root / "long.yaml", "tiny_t2i", root / "run", make_shards(root / "shards", frames=1),
                          make_tokenizer(root), train={"steps": 1_000_000, "log_every": 1000})
    return recipe, root / "run"


def test_second_concurrent_run_refuses_at_once_naming_the_first_pid(long_run):
    recipe, run_dir = long_run
    first = _cogframe("run", recipe)
    try:
        info = _wait_for_holder(run_dir / LOCK_FILE, first)
        assert info["command"].startswith("cogframe run") and info["host"]
        started = time.monotonic()
        second = _cogframe("run", recipe, "overwrite=true")
        out, err = second.communicate(timeout=120)
        assert second.returncode == 2, err
        assert f"PID {first.pid}" in err and "in use by another cogframe run" in err, err
        assert f"kill {first.pid}" in err and "choose another folder" in err
        assert "Traceback" not in err
        assert time.monotonic() - started < 60  # refused at once, not after waiting for the lock
        assert first.poll() is None, "the refused run must not disturb the running one"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    # SIGKILL gives no chance to clean up: the file (with the dead run's details) stays, but the
    # kernel released the flock, so the next run takes the folder over and says so.
    assert json.loads((run_dir / LOCK_FILE).read_text())["pid"] == first.pid
    third = _cogframe("run", recipe, "train.steps=2", "resume=true")
    out, err = third.communicate(timeout=300)
    assert third.returncode == 0, err
    assert f"left locked by a run that did not finish (PID {first.pid}" in err
    assert not (run_dir / LOCK_FILE).exists(), "a finished run removes its lock file"


TASK_RECIPES = {
    "train": ["tiny/t2i", "output_dir={dir}"],
    "prepare": ["tiny/prepare", "output_dir={dir}"],
    "train_vqvae": ["tiny/vqvae", "output_dir={dir}"],
    "train_text_tokenizer": ["tiny/text_tokenizer", "output_dir={dir}"],
    "export_dataset": ["tiny/export_moving_shapes", "output_dir={dir}"],
    "sample": ["tiny/sample", "out={dir}/"],
}


@pytest.mark.parametrize("task", sorted(TASK_RECIPES))
def test_every_task_that_writes_a_run_folder_takes_its_lock(cli, tmp_path, task):
    recipe, *overrides = TASK_RECIPES[task]
    folder = tmp_path / "out"
    with RunLock(folder, command="test holder"):
        result = cli("run", recipe, *(o.format(dir=folder) for o in overrides))
    assert result.code == 2, (result.out, result.err)
    assert f"PID {os.getpid()}" in result.err and "(`test holder`)" in result.err, result.err
    assert sorted(p.name for p in folder.iterdir()) == [], "nothing written, lock file removed"


def test_sample_to_a_file_stem_locks_only_that_stem(cli, tmp_path):
    with RunLock(tmp_path, name=f".red{LOCK_FILE}", command="holder of red"):
        refused = cli("run", "tiny/sample", f"out={tmp_path}/red", "rounds=0")
        assert refused.code == 2 and "holder of red" in refused.err, refused.err
        other = cli("run", "tiny/sample", f"out={tmp_path}/green", "rounds=0")
        assert other.code == 0, other.err
    assert (tmp_path / "green.mp4").is_file() and not (tmp_path / "red.mp4").exists()


def test_lock_objects_refuse_each_other_and_release(tmp_path):
    first = RunLock(tmp_path, command="one").acquire()
    with pytest.raises(RunFolderLockedError, match=rf"PID {os.getpid()} on .* \(`one`\)"):
        RunLock(tmp_path, command="two").acquire()
    first.release()
    first.release()  # twice is harmless
    assert not (tmp_path / LOCK_FILE).exists()
    with RunLock(tmp_path, command="two") as again:
        assert again.held and again.stale == {}
