"""Built-in loggers, built through the registries as a task would."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from cogframe.errors import UnavailableError
from cogframe.plugins import get_registries


def test_stdout_logger_prints_one_line_per_record(capsys):
    logger = get_registries().build("logger", {"name": "stdout", "prefix": "[run1]"})
    logger.log({"loss": torch.tensor(0.123456), "lr": 3e-4, "tokens": 1024, "stage": "warmup"}, step=10)
    logger.log({"loss": float("nan")}, step=11)
    logger.close()
    assert capsys.readouterr().out.splitlines() == [
        "[run1] step 10: loss=0.1235 lr=0.0003 tokens=1024 stage=warmup",
        "[run1] step 11: loss=nan",
    ]


def test_jsonl_logger_appends_and_flushes(tmp_path):
    path = tmp_path / "deep" / "metrics.jsonl"
    logger = get_registries().build("logger", {"name": "jsonl", "path": str(path)})
    logger.log({"loss": torch.tensor(1.5), "grad": torch.ones(2)}, step=1)
    # Flushed per record: readable before close (a crash must not lose it).
    assert json.loads(path.read_text()) == {"step": 1, "loss": 1.5, "grad": [1.0, 1.0]}
    logger.log({"loss": 0.5}, step=2)
    logger.close()
    logger.close()  # closing twice is harmless
    second = get_registries().build("logger", {"name": "jsonl", "path": str(path)})
    second.log({"loss": 0.25}, step=3)
    second.close()
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3]


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is not None, reason="tensorboard is installed")
def test_tensorboard_logger_says_why_it_is_unavailable(tmp_path):
    reason = get_registries().available("logger", "tensorboard")
    assert "tensorboard package is not installed: pip install tensorboard" in reason
    with pytest.raises(UnavailableError, match="pip install tensorboard"):
        get_registries().build("logger", {"name": "tensorboard", "log_dir": str(tmp_path)})


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard is not installed")
def test_tensorboard_logger_writes_event_files(tmp_path):
    logger = get_registries().build("logger", {"name": "tensorboard", "log_dir": str(tmp_path)})
    logger.log({"loss": torch.tensor(0.5), "note": "text is skipped"}, step=1)
    logger.close()
    assert any(p.name.startswith("events.out.tfevents") for p in tmp_path.iterdir())


def _steps(path):
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def test_jsonl_logger_keeps_one_history_per_file(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    build = lambda: get_registries().build("logger", {"name": "jsonl", "path": str(path)})  # noqa: E731
    first = build()
    for step in (1, 2, 3, 4):
        first.log({"loss": 1.0 / step}, step=step)
    first.close()
    # Resumed from a step-2 checkpoint: steps 3 and 4 of the killed run are replaced, 1-2 kept.
    resumed = build()
    resumed.log({"loss": 0.3}, step=3)
    resumed.log({"loss": 0.3, "val_loss": 0.5}, step=3)  # one run may log one step twice (final eval)
    resumed.close()
    assert _steps(path) == [1, 2, 3, 3]
    assert "dropped 2 record(s) at step >= 3" in capsys.readouterr().err
    # A run started over writes a fresh file; a torn last line (killed mid-write) never survives.
    with path.open("a") as handle:
        handle.write('{"step": 9, "lo')
    fresh = build()
    fresh.log({"loss": 2.0}, step=1)
    fresh.close()
    assert path.read_text() == '{"step": 1, "loss": 2.0}\n'
    err = capsys.readouterr().err
    assert "dropped 4 record(s) at step >= 1 and 1 unreadable line(s)" in err and "0 earlier record(s) kept" in err
    # Nothing to drop: plain append, no rewrite, no note.
    later = build()
    later.log({"loss": 1.5}, step=2)
    later.close()
    assert _steps(path) == [1, 2] and capsys.readouterr().err == ""
    with pytest.raises(ValueError, match="closed"):
        later.log({"loss": 1.0}, step=3)
