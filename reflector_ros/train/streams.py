"""The order training sees its samples in: (index, augmentation seed) keys per epoch and
rank, a pure function of the run's seed, so a resumed run (or one more DDP rank) sees
exactly the samples the uninterrupted one would; and ``Stream``, the DataLoader that
draws batches in that order and says where a checkpoint must resume.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from reflector_ros.core.errors import InputError


def epoch_keys(n: int, seed: int, epoch: int, rank: int, world: int) -> np.ndarray:
    """(index, augmentation seed) pairs of one pass for one rank; a pure function of its
    arguments, so a resumed run sees exactly the samples the uninterrupted one would."""
    g = np.random.default_rng([seed, epoch])
    perm = g.permutation(n)
    seeds = g.integers(0, 2**31 - 1, n)
    keys = np.stack([perm, seeds], 1)
    per = n // world
    return keys[rank * per:(rank + 1) * per]


def batches(n: int, batch: int, seed: int, rank: int, world: int, epoch: int, pos: int
            ) -> Iterator[tuple[int, int, list[list[int]]]]:
    """Infinite (epoch, position-after, batch keys) from a given epoch/position."""
    while True:
        keys = epoch_keys(n, seed, epoch, rank, world)
        nb = len(keys) // batch
        if nb == 0:
            raise InputError(f"epoch of {len(keys)} samples per rank is smaller than one batch of {batch}")
        for b in range(pos, nb):
            yield epoch, b + 1, keys[b * batch:(b + 1) * batch].tolist()
        epoch, pos = epoch + 1, 0


class KeyBatches:
    """Sampler-like iterable the DataLoader draws batch keys from (resumable position)."""

    def __init__(self, it: Iterator[tuple[int, int, list[list[int]]]]) -> None:
        self.it = it
        self.pending: list[tuple[int, int]] = []

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for epoch, pos, keys in self.it:
            self.pending.append((epoch, pos))
            yield [(int(k[0]), int(k[1])) for k in keys]


class Stream:
    """Batches of one dataset over (index, seed) keys in a resumable order: ``next()``
    gives a batch and the (epoch, position) a checkpoint must record to continue after it."""

    def __init__(self, dataset: Any, batch_size: int, seed: int, rank: int, world: int, epoch: int, pos: int,
                 workers: int, pin_memory: bool, collate_fn: Any = None) -> None:
        import torch

        self.keys = KeyBatches(batches(len(dataset), batch_size, seed, rank, world, epoch, pos))
        self.loader = torch.utils.data.DataLoader(dataset, batch_sampler=self.keys, num_workers=workers,
                                                  pin_memory=pin_memory, persistent_workers=False,
                                                  prefetch_factor=2 if workers else None, collate_fn=collate_fn)
        self.it: Iterator[dict[str, Any]] | None = None

    def start(self) -> None:
        """Start the loader (and its workers); draws the loader's seed from torch's RNG."""
        self.it = iter(self.loader)

    def next(self) -> tuple[dict[str, Any], tuple[int, int]]:
        assert self.it is not None, "Stream.start() first"
        batch = next(self.it)
        return batch, self.keys.pending.pop(0)
