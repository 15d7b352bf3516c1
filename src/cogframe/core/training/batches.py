"""Deterministic batches: the examples of a step are a pure function of (seed, step).

Exact resume needs no data-loader state: a resumed run asks for step ``s`` and gets the very
examples the interrupted run would have seen. Every epoch is a fresh seeded permutation of the
dataset; a global batch is cut into ``grad_accum`` micro-batches and, under data parallelism,
into one contiguous slice per rank, so 1 process and N processes see the same global batch.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol, Sequence

import torch

from cogframe.errors import ConfigError, DataError

__all__ = ["ExampleDataset", "StepBatches", "collate"]


class ExampleDataset(Protocol):
    """Indexable training examples: ``dataset[i]`` is a dict of tensors (one example, no batch dim).

    Named "example", not "sample": in cogframe a sample is a token draw.
    """

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Mapping[str, torch.Tensor]: ...


def collate(examples: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack a list of example dicts into one batch dict."""
    return {key: torch.stack([e[key] for e in examples]) for key in examples[0]}


class StepBatches:
    """Batches indexed by step.

    Args:
        dataset: The training examples.
        batch_size: Global batch size per micro-batch step (split across ranks).
        grad_accum: Micro-batches per optimizer step.
        seed: Seed of the per-epoch permutations.
        shuffle: False keeps dataset order (validation).
    """

    def __init__(self, dataset: ExampleDataset, batch_size: int, *, grad_accum: int = 1,
                 seed: int = 0, shuffle: bool = True):
        if len(dataset) == 0:
            raise DataError("the dataset is empty: run the prepare recipe first, or check the "
                            "shard folder and split.")
        self.dataset = dataset
        self.batch_size = batch_size
        self.grad_accum = grad_accum
        self.seed = seed
        self.shuffle = shuffle
        self._perms: dict[int, torch.Tensor] = {}

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            if len(self._perms) > 4:  # bounded cache; permutations are cheap to recompute
                self._perms.clear()
            n = len(self.dataset)
            if self.shuffle:
                gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
                self._perms[epoch] = torch.randperm(n, generator=gen)
            else:
                self._perms[epoch] = torch.arange(n)
        return self._perms[epoch]

    def indices(self, step: int, micro: int = 0, rank: int = 0, world_size: int = 1) -> list[int]:
        """Dataset indices of this rank's share of micro-batch ``micro`` of ``step``."""
        if self.batch_size % world_size:
            raise ConfigError(
                f"train.batch_size={self.batch_size} is not divisible by the {world_size} "
                "processes; pick a multiple so every rank gets the same share."
            )
        per_rank = self.batch_size // world_size
        start = (step * self.grad_accum + micro) * self.batch_size + rank * per_rank
        n = len(self.dataset)
        out = []
        for g in range(start, start + per_rank):
            epoch, pos = divmod(g, n)
            out.append(int(self._permutation(epoch)[pos]))
        return out

    def batch(self, step: int, micro: int = 0, rank: int = 0, world_size: int = 1) -> dict[str, Any]:
        """The batch dict of this rank for ``(step, micro)``."""
        return collate([self.dataset[i] for i in self.indices(step, micro, rank, world_size)])
