"""A small least-recently-used cache of what attention backends derive from a mask.

The structured backends (``swin3d``'s window partitions, ``sr_local_window``'s offset masks,
``frame_blocks``' per-frame masks) build a table per mask, dtype and device and reuse it across
the layers of a forward and across steps. Keys hold masks and shapes, not tensors, so
:func:`functools.lru_cache` on a method would keep every backend instance alive; this keeps one
bounded dict per instance instead.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Generic, Hashable, TypeVar

__all__ = ["BoundedCache"]

V = TypeVar("V")


class BoundedCache(Generic[V]):
    """At most ``size`` entries, least recently used evicted first; ``size=0`` caches nothing.

    Raises:
        ValueError: A negative size.
    """

    def __init__(self, size: int):
        if size < 0:
            raise ValueError(f"cache_size must be >= 0, got {size}")
        self.size = size
        self._entries: OrderedDict[Hashable, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable, build: Callable[[], V]) -> V:
        """The entry of ``key``, built with ``build()`` (and kept, within the size) when missing."""
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        value = build()
        if self.size:
            self._entries[key] = value
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return value
