"""Built-in metric loggers (kind ``logger``): ``stdout``, ``jsonl`` and ``tensorboard``.

Every logger has the same two methods, which tasks call:

* ``log(metrics: dict, step: int) -> None`` records one set of scalar metrics at a training step;
* ``close() -> None`` flushes and releases files (safe to call twice).

A logger may also have ``log_media(step, name, frames, *, fps, files) -> None``, which training
calls with each sample video (``train.sample_every``, core/training/preview.py): ``frames`` is
uint8 ``[T, H, W, 3]`` and ``files`` the written mp4 and contact sheet. All three built-in loggers
have it: ``stdout`` prints the paths, ``jsonl`` records them, ``tensorboard`` adds the frames as
one image (and as a video when ``moviepy``, which TensorBoard's video summaries need, is installed).

Recipes usually hold a list of them under ``loggers:``, e.g.
``loggers: [{name: stdout}, {name: jsonl, path: runs/x/metrics.jsonl}]``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from cogframe.core.io.atomic import atomic_write_text
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

    def log_media(self, step: int, name: str, frames: Any, *, fps: float, files: Sequence[str] = ()) -> None:
        """Prints where a sample video of ``step`` was written."""
        print(f"{self.prefix}step {step}: {name} ({len(frames)} frames at {fps:g} fps) -> {', '.join(files)}",
              file=sys.stdout, flush=True)

    def close(self) -> None:
        """Nothing to release."""


@component("logger", "jsonl")
class JsonlLogger:
    """Appends one JSON object per record to a file (`{"step": 10, "loss": 0.12}`), flushed each time.

    The file holds ONE run's history. When this logger writes its first record, at step ``s``,
    records an earlier run left at step ``s`` or later are dropped first (the file is rewritten
    atomically, and a note on stderr says how many): a resumed run continues the history of the
    checkpoint it resumed from without repeating the steps logged after it, and a run started
    over (``overwrite=true``) starts a fresh file. A half-written last line of a killed run is
    dropped the same way. Records of earlier steps are kept, so resuming never loses them.
    """

    def __init__(self, path: str) -> None:
        """Remembers ``path``; the file is opened by the first :meth:`log`.

        Args:
            path: The file to append to; missing parent folders are created.
        """
        self.path = Path(path)
        self._file = None
        self._closed = False

    def _open(self, first_step: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_file():
            text = self.path.read_text(encoding="utf-8", errors="replace")
            kept, dropped, broken = [], 0, 0
            for line in text.splitlines(keepends=True):
                try:
                    record = json.loads(line)
                    step = int(record["step"])
                except (ValueError, KeyError, TypeError):
                    broken += 1  # a torn line of a killed run (or not ours): not a record
                    continue
                if step >= first_step:
                    dropped += 1
                else:
                    kept.append(line if line.endswith("\n") else line + "\n")
            if dropped or broken:
                atomic_write_text(self.path, "".join(kept))
                what = [f"{dropped} record(s) at step >= {first_step}"] if dropped else []
                what += [f"{broken} unreadable line(s)"] if broken else []
                print(f"note: jsonl logger: dropped {' and '.join(what)} of an earlier run from {self.path} "
                      f"(this run logs from step {first_step} on; {len(kept)} earlier record(s) kept).",
                      file=sys.stderr)
        self._file = self.path.open("a", encoding="utf-8")

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """Appends ``{"step": step, **metrics}`` as one line and flushes, so a crash loses nothing."""
        self._write({"step": step, **{key: _plain(value) for key, value in metrics.items()}})

    def _write(self, record: dict) -> None:
        if self._file is None:
            if self._closed:
                raise ValueError(f"jsonl logger for {self.path} is closed; build a new one to log again")
            self._open(int(record["step"]))
        self._file.write(json.dumps(record, default=str) + "\n")
        self._file.flush()

    def log_media(self, step: int, name: str, frames: Any, *, fps: float, files: Sequence[str] = ()) -> None:
        """Appends ``{"step", "media": name, "frames", "fps", "files"}``: where a sample video is."""
        self._write({"step": step, "media": name, "frames": len(frames), "fps": float(fps),
                     "files": [str(f) for f in files]})

    def close(self) -> None:
        """Closes the file (safe to call twice)."""
        self._closed = True
        if self._file is not None:
            self._file.close()
            self._file = None


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

    def log_media(self, step: int, name: str, frames: Any, *, fps: float, files: Sequence[str] = ()) -> None:
        """Adds the frames side by side as one image, and as a video when moviepy is installed."""
        import numpy as np

        frames = np.asarray(frames)
        self._writer.add_image(name, np.concatenate(list(frames), axis=1), step, dataformats="HWC")
        if importlib.util.find_spec("moviepy") is not None:
            import torch

            video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).unsqueeze(0)
            self._writer.add_video(f"{name}/video", video, step, fps=max(1, round(fps)))
        self._writer.flush()

    def close(self) -> None:
        """Flushes and closes the event file."""
        self._writer.close()


@hookimpl
def register_components() -> list[Any]:
    """Registers the built-in loggers."""
    return [StdoutLogger, JsonlLogger, TensorboardLogger]
