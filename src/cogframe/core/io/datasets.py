"""The clip-dataset protocol (kind ``dataset``) and the log of entries a dataset skipped.

A dataset is a sequence of :class:`~cogframe.core.io.video.VideoClip`::

    len(dataset)            # number of entries (an upper bound on usable clips)
    dataset[i]              # VideoClip, or None when entry i is unusable and was skipped
    dataset.skip_log        # optional SkipLog of what was skipped and why
    dataset.report()        # optional one-paragraph summary for the user

Returning ``None`` (instead of raising) lets consumers such as the ``prepare`` task carry on past a
corrupt file while the dataset records why; a dataset in a "strict" mode raises
:class:`~cogframe.errors.DataError` instead.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Iterable, Iterator, Protocol, runtime_checkable

from cogframe.core.io.video import VideoClip

__all__ = ["ClipDataset", "SkipLog", "SkippedEntry", "iter_clips"]


@runtime_checkable
class ClipDataset(Protocol):
    """What the data tasks need from a dataset component."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> VideoClip | None: ...


@dataclass(frozen=True)
class SkippedEntry:
    """One skipped dataset entry.

    Attributes:
        item: What was skipped, usually a file name relative to the dataset root.
        reason: Short category, e.g. ``"missing file"``, ``"unreadable"``, ``"too short"``.
        detail: The specific problem, e.g. ``"3 frames < min_frames 5"``.
    """

    item: str
    reason: str
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        """JSON-ready form (stored in shard markers so reruns can still report it)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SkippedEntry":
        """Inverse of :meth:`to_dict`."""
        return cls(str(data["item"]), str(data["reason"]), str(data.get("detail", "")))


class SkipLog:
    """Collects skipped entries and renders the end-of-run summary, grouped by reason."""

    def __init__(self, entries: Iterable[SkippedEntry] = ()) -> None:
        self.entries: list[SkippedEntry] = list(entries)

    def add(self, item: str, reason: str, detail: str = "") -> None:
        """Records one skipped entry."""
        self.entries.append(SkippedEntry(item, reason, detail))

    def extend(self, entries: Iterable[SkippedEntry]) -> None:
        """Records several skipped entries."""
        self.entries.extend(entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[SkippedEntry]:
        return iter(self.entries)

    def summary(self, name: str, total: int | None = None, max_items: int = 20) -> str:
        """Human-readable report, e.g. ``"video_folder data/: skipped 3 of 100 entries: ..."``.

        Args:
            name: What the report is about (dataset name and root).
            total: Total entries, to say "of N"; omitted when None.
            max_items: Per reason, list at most this many file names (then "... and K more").
        """
        of = f" of {total}" if total is not None else ""
        if not self.entries:
            return f"{name}: all {total} entries used, none skipped." if total is not None else \
                f"{name}: no entries skipped."
        groups: dict[str, list[SkippedEntry]] = defaultdict(list)
        for entry in self.entries:
            groups[entry.reason].append(entry)
        lines = [f"{name}: skipped {len(self.entries)}{of} entries:"]
        for reason in sorted(groups):
            items = groups[reason]
            shown = [f"{e.item} ({e.detail})" if e.detail else e.item for e in items[:max_items]]
            more = f", ... and {len(items) - max_items} more" if len(items) > max_items else ""
            lines.append(f"  {reason} ({len(items)}): {', '.join(shown)}{more}")
        return "\n".join(lines)


def iter_clips(dataset: ClipDataset, indices: Iterable[int] | None = None) -> Iterator[tuple[int, VideoClip]]:
    """Yields ``(index, clip)`` for the usable entries of ``dataset`` (skipped ones are left out)."""
    for index in range(len(dataset)) if indices is None else indices:
        clip = dataset[index]
        if clip is not None:
            yield index, clip
