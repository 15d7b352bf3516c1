"""Built-in metric loggers (kind ``logger``): ``stdout``, ``jsonl`` and ``tensorboard``.

Every logger has the same two methods, which tasks call:

* ``log(metrics: dict, step: int) -> None`` records one set of scalar metrics at a training step;
* ``close() -> None`` flushes and releases files (safe to call twice).

Recipes usually hold a list of them under ``loggers:``, e.g.
``loggers: [{name: stdout}, {name: jsonl, path: runs/x/metrics.jsonl}]``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from typing import Any, Mapping

from cogframe.hookspecs import hookimpl
from cogframe.registry import component


def _plain(value: Any) -> Any:
    """Turns tensors / numpy scalars into Python numbers so they print and serialise cleanly."""
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return item()
        except (TypeError, ValueError, RuntimeError):  # a multi-element tensor or array
            pass
    tolist = getattr(value, "tolist", None)
    return tolist() if callable(tolist) else value


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


@component("logger", "stdout")
class StdoutLogger:
    """Prints one readable line per record: `step 10: loss=0.1234 lr=0.0003`."""

    def __init__(self, prefix: str = "") -> None:
        """Creates the logger.

        Args:
            prefix: Text put before each line, e.g. the run name.
        """
        self.prefix = f"{prefix} " if prefix else ""

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Prints ``metrics`` at ``step`` on one line of standard output."""
        fields = " ".join(f"{key}={_format(_plain(value))}" for key, value in metrics.items())
        # sys.stdout is looked up per call so redirection (and pytest's capture) applies.
        print(f"{self.prefix}step {step}: {fields}", file=sys.stdout, flush=True)

    def close(self) -> None:
        """Nothing to release."""


@component("logger", "jsonl")
class JsonlLogger:
    """Appends one JSON object per record to a file (`{"step": 10, "loss": 0.12}`), flushed each time."""

    def __init__(self, path: str) -> None:
        """Opens ``path`` for appending.

        Args:
            path: The file to append to; missing parent folders are created.
        """
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Appends ``{"step": step, **metrics}`` as one line and flushes, so a crash loses nothing."""
        record = {"step": step, **{key: _plain(value) for key, value in metrics.items()}}
        self._file.write(json.dumps(record, default=str) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Closes the file."""
        self._file.close()


def _tensorboard_missing() -> str | None:
    if importlib.util.find_spec("tensorboard") is None:
        return "the tensorboard package is not installed: pip install tensorboard (or use the jsonl logger)"
    return None


@component("logger", "tensorboard", available=_tensorboard_missing)
class TensorboardLogger:
    """Writes numeric metrics as TensorBoard scalars under a log folder."""

    def __init__(self, log_dir: str) -> None:
        """Opens an event file.

        Args:
            log_dir: Folder for the event files (``tensorboard --logdir`` it).
        """
        from torch.utils.tensorboard import SummaryWriter  # imported here: torch/tensorboard are heavy

        self.log_dir = Path(log_dir)
        self._writer = SummaryWriter(log_dir=str(self.log_dir))

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Adds each numeric metric as a scalar at ``step``; non-numeric values are skipped."""
        for key, value in metrics.items():
            value = _plain(value)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self._writer.add_scalar(key, value, step)
        self._writer.flush()

    def close(self) -> None:
        """Flushes and closes the event file."""
        self._writer.close()


@hookimpl
def register_components() -> list[Any]:
    """Registers the built-in loggers."""
    return [StdoutLogger, JsonlLogger, TensorboardLogger]
