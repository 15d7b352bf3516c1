"""Conformance of a clip dataset: the clip contract and skip reporting (``core/io/datasets.py``).

:func:`check_dataset` verifies, on the first entries and the last one:

* ``len(dataset)`` is a whole number >= 0 and ``dataset[len(dataset)]`` raises ``IndexError``;
* every entry is a :class:`~cogframe.core.io.video.VideoClip` (uint8 ``[T, H, W, 3]`` frames,
  positive fps, a non-empty caption) or None;
* reading an entry twice gives the same clip (the data tasks and resumed runs rely on it);
* **every None is reported**: the dataset has a ``skip_log`` and it names an item and a reason
  for each skipped entry; ``report()``, when defined, returns text;
* with ``expect_skipped``, exactly that many of the checked entries are skipped.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from cogframe.core.io.video import VideoClip
from cogframe.registry import Registries
from cogframe.testing._common import ConformanceError, ConformanceReport, finish, resolve

__all__ = ["check_dataset"]


def check_dataset(dataset: Any, *, registries: Registries | None = None, kwargs: Mapping[str, Any] | None = None,
                  runtime_kwargs: Mapping[str, Any] | None = None, max_items: int = 8,
                  expect_skipped: int | None = None, unavailable: str = "skip") -> ConformanceReport:
    """Checks the clip contract and skip reporting of a dataset.

    Args:
        dataset: Its registered name, its ``@component`` class, or an instance.
        registries: Where a name is looked up (default: every loaded plugin).
        kwargs: Recipe keywords (``{"root": "data/clips"}``).
        runtime_kwargs: Keywords the task would pass.
        max_items: Entries read (the first ones, plus the last).
        expect_skipped: How many of the read entries must be skipped (None: not checked).
        unavailable: When it cannot run here: ``"skip"``, ``"fail"`` or ``"report"``.
    """
    resolved = resolve("dataset", dataset, registries=registries, kwargs=kwargs, runtime_kwargs=runtime_kwargs)
    report = ConformanceReport(resolved.label, unavailable=resolved.unavailable)
    if resolved.unavailable:
        return finish(report, unavailable)
    data, label = resolved.obj, resolved.label
    size = len(data)
    if not isinstance(size, int) or size < 0:
        raise ConformanceError(f"{label}: len() returned {size!r}; it must be the number of entries (>= 0)")
    try:
        data[size]
    except IndexError:
        pass
    else:
        raise ConformanceError(f"{label}: entry {size} (== len) did not raise IndexError; iteration would not stop")
    indices = sorted(set(range(min(size, max_items))) | ({size - 1} if size else set()))
    skipped = []
    for index in indices:
        clip = data[index]
        if clip is None:
            skipped.append(index)
            continue
        if not isinstance(clip, VideoClip):
            raise ConformanceError(f"{label}: entry {index} is a {type(clip).__name__}, not a VideoClip or None")
        if not isinstance(clip.caption, str) or not clip.caption.strip():
            raise ConformanceError(f"{label}: entry {index} has an empty caption {clip.caption!r}")
        again = data[index]
        if not isinstance(again, VideoClip) or again.caption != clip.caption or not np.array_equal(again.frames, clip.frames):
            raise ConformanceError(f"{label}: reading entry {index} twice gave different clips; entries must be "
                                   "deterministic (seed any randomness by the index)")
    report.passed.append(f"len {size}, IndexError past the end, {len(indices) - len(skipped)} clips valid and "
                         "deterministic")
    if skipped:
        log = getattr(data, "skip_log", None)
        entries = list(log) if log is not None else []
        if len(entries) < len(skipped):
            raise ConformanceError(f"{label}: entries {skipped} were skipped (None) but its skip_log records "
                                   f"{len(entries)}; record each with skip_log.add(item, reason, detail)")
        for entry in entries:
            if not str(getattr(entry, "item", "")).strip() or not str(getattr(entry, "reason", "")).strip():
                raise ConformanceError(f"{label}: skip_log entry {entry!r} lacks an item or a reason")
        report.passed.append(f"{len(skipped)} skipped entr{'y' if len(skipped) == 1 else 'ies'} reported in skip_log")
    summary = getattr(data, "report", None)
    if callable(summary):
        text = summary()
        if not isinstance(text, str) or not text.strip():
            raise ConformanceError(f"{label}: report() returned {text!r}; it must return the summary text")
        report.passed.append("report() returns the summary")
    if expect_skipped is not None and len(skipped) != expect_skipped:
        raise ConformanceError(f"{label}: expected {expect_skipped} of entries {indices} to be skipped, got "
                               f"{len(skipped)} ({skipped})")
    return report
