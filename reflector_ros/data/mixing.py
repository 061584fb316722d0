"""Mix several datasets by weight, whatever their sizes.

Why: a small real set next to a large synthetic one would otherwise be drowned out;
weights set each set's share of an epoch directly. Item i is a pure function of
(seed, i), so a resumed or distributed run sees the same mix.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from reflector_ros.core.errors import InputError
from reflector_ros.data.sample import Sample

MAX_LENGTH = 1 << 31


class BalancedMix(Sequence):
    """Sequence of Sample: item i draws a dataset by weight, then a uniform item in it."""

    def __init__(self, datasets: Sequence[Sequence[Sample]], weights: Sequence[float] | None = None,
                 length: int | None = None, seed: int = 0) -> None:
        self.datasets = list(datasets)
        k = len(self.datasets)
        if k == 0:
            raise InputError("BalancedMix: no datasets given")
        sizes = np.array([len(d) for d in self.datasets], np.int64)
        if (sizes <= 0).any():
            raise InputError(f"BalancedMix: dataset(s) {np.nonzero(sizes <= 0)[0].tolist()} are empty")
        w = np.ones(k) if weights is None else np.asarray(list(weights), np.float64)
        if w.ndim != 1 or len(w) != k:
            raise InputError(f"BalancedMix: {len(w) if w.ndim == 1 else w.shape} weights for {k} datasets")
        if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise InputError(f"BalancedMix: weights must be finite, >= 0 and sum > 0, got {w.tolist()}")
        n = int(sizes.sum()) if length is None else int(length)
        if not 1 <= n <= MAX_LENGTH:
            raise InputError(f"BalancedMix: length must be in 1..{MAX_LENGTH}, got {n}")
        self.weights = w / w.sum()
        # one (n, 2) block of uniforms: row i only depends on (seed, i), not on n
        u = np.random.default_rng(seed).random((n, 2))
        cdf = np.cumsum(self.weights)
        cdf[-1] = 1.0
        self.which = np.minimum(np.searchsorted(cdf, u[:, 0], side="right"), k - 1).astype(np.int64)
        self.within = np.minimum((u[:, 1] * sizes[self.which]).astype(np.int64), sizes[self.which] - 1)

    def __len__(self) -> int:
        return len(self.which)

    def source(self, i: int) -> tuple[int, int]:
        """(dataset, index within it) of item i, without loading it."""
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        return int(self.which[i]), int(self.within[i])

    def __getitem__(self, i: int) -> Sample:  # type: ignore[override]
        if isinstance(i, slice):
            raise TypeError("BalancedMix does not slice; build a new mix with a different length")
        d, j = self.source(int(i))
        return self.datasets[d][j]
