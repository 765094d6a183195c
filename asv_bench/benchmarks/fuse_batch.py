"""A batch of fusions in one `fusex.fuse` call, over backends and batch sizes: throughput."""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

import fusex

from .common import BACKENDS, XPBenchmark
from .phantoms import sample


class FuseBatch(XPBenchmark):
    """`fusex.fuse` of B acquisitions of 3 x 256 x 256 stacked on a leading axis, 50 iterations each.

    Each item has fresh Poisson counts drawn around one cached phantom, and the iteration count is fixed
    (``tol=0``) so that every batch size does the same work per item.  Slow on the
    generic CPU code: 64 items take about 2 minutes per call there.
    """

    params: ClassVar[list[list[Any]]] = [BACKENDS, [1, 8, 64]]
    param_names: ClassVar[list[str]] = ["backend", "batch"]
    fusion: ClassVar[fusex.FusionParams] = fusex.FusionParams(n_iter=50, tol=0.0)
    size: ClassVar[int] = 256
    max_size: ClassVar[Mapping[str, int]] = {"cpu": 256, "cuda": 256}
    number: ClassVar[int] = 1
    repeat: ClassVar[tuple[int, int, float]] = (1, 3, 60.0)
    rounds: ClassVar[int] = 1
    timeout: ClassVar[float] = 1200.0

    def setup(self, backend: str, batch: int) -> None:
        """Put a (batch, 256, 256) HAADF stack and (batch, 3, 256, 256) maps on the device; warm up."""
        super().setup(backend, self.fuse)
        haadf, maps = stack(self.size, batch)
        self.elements = sample(self.size).elements
        self.haadf, self.maps = self.target.asarray(haadf), self.target.asarray(maps)
        self.batch = batch
        self.warm_up(batch)

    def fuse(self) -> fusex.FusionResult:
        """Fuse the whole batch in one call."""
        return fusex.fuse(
            self.haadf, self.maps, elements=self.elements, params=self.fusion, **self.target.keywords(fusex.fuse)
        )

    def summarize(self, result: fusex.FusionResult) -> float:
        """Return the mean final objective over the batch."""
        last = result.history.groupby(level="item").tail(1) if self.batch > 1 else result.history.tail(1)
        return float(np.mean(last["total"]))

    def time_fuse_batch(self, backend: str, batch: int) -> None:
        """Time the whole batch, GPU work included."""
        self.func()

    def peakmem_fuse_batch(self, backend: str, batch: int) -> None:
        """Measure the peak resident host memory of the process (asv's ``peakmem_``)."""
        self.func()

    def track_throughput(self, backend: str, batch: int) -> float:
        """Track fusions per second (of 50 iterations each) from one timed call."""
        start = time.perf_counter()
        self.func()
        return self.batch / (time.perf_counter() - start)

    track_throughput.unit = "fusions/s"  # type: ignore[attr-defined]

    def track_objective(self, backend: str, batch: int) -> float:
        """Track the mean final objective: a speed-up must leave it unchanged."""
        return self.outcome()

    track_objective.unit = "objective"  # type: ignore[attr-defined]


@functools.cache
def stack(size: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``batch`` HAADF images and map stacks of one cached phantom, with fresh Poisson counts per item.

    Cached in the process: asv runs ``setup`` before every sample, and the draws take a while at 64 items.
    """
    base = sample(size)
    rng = np.random.default_rng(0)
    # Fresh counts drawn around the cached phantom's counts: distinct items, one simulation.
    means = np.maximum(base.maps.astype(np.float64), 0.0)
    maps = rng.poisson(np.broadcast_to(means, (batch, *means.shape))).astype(np.float32)
    haadf = np.broadcast_to(base.haadf, (batch, *base.haadf.shape)).copy()
    return haadf, maps
