"""The numba TV prox of one fusion step against the time its memory traffic takes at this machine's bandwidth."""

from __future__ import annotations

import time
from typing import Any, ClassVar

import numpy as np

from .phantoms import sample


class TVProxLimit:
    """The warm TV prox of a default fusion step (3 x 512 x 512 float32 maps, 10 dual iterations), numba engine.

    ``track_over_dram_limit`` is its time over the time of its unavoidable traffic streamed from memory:
    per pixel and map, 28 B per dual iteration (read the map and two dual iterates, write one) and 16 B
    for the final image, at the bandwidth of a parallel copy of 256 MB measured in the same setup (read
    and write counted).  Below 1, the tiles run the prox from cache; the aim is at most 0.5.
    """

    size: ClassVar[int] = 512
    elements: ClassVar[int] = 3
    n_tv: ClassVar[int] = 10
    number: ClassVar[int] = 1
    repeat: ClassVar[tuple[int, int, float]] = (5, 20, 30.0)
    timeout: ClassVar[float] = 300.0

    def setup(self) -> None:
        """Compile, measure the copy bandwidth, and warm a dual up as a fusion's would be."""
        try:
            import numba
        except ImportError as error:
            raise NotImplementedError("numba is not installed") from error
        import array_api_compat.numpy as npx

        from fusex.backends.numba_engine import NumbaEngine

        @numba.njit(parallel=True)
        def stream(src: np.ndarray, dst: np.ndarray) -> None:
            for i in numba.prange(src.shape[0]):
                dst[i] = src[i]

        src = np.ones(1 << 26, dtype=np.float32)
        dst = np.empty_like(src)
        stream(src, dst)
        copies = []
        for _ in range(7):
            start = time.perf_counter()
            stream(src, dst)
            copies.append(time.perf_counter() - start)
        bandwidth = 2 * src.nbytes / min(copies)
        maps = sample(self.size).maps[: self.elements]
        self.maps = np.ascontiguousarray(maps / maps.max(), dtype=np.float32)
        self.engine, self.npx = NumbaEngine(), npx
        dual = np.zeros((self.maps.shape[0], 2, self.size, self.size), np.float32)
        self.dual = self.engine.tv_prox(self.maps, 0.05, self.n_tv, xp=npx, dual=dual)[1]
        self.limit = self.maps.size * (28 * self.n_tv + 16) / bandwidth

    def prox(self) -> Any:
        """One prox from the warm dual (the dual is not changed)."""
        return self.engine.tv_prox(self.maps, 0.05, self.n_tv, xp=self.npx, dual=self.dual)

    def time_tv_prox(self) -> None:
        """Time one prox."""
        self.prox()

    def track_over_dram_limit(self) -> float:
        """Track the fastest of 7 proxes over the traffic's time at the copy bandwidth, both measured in this run."""
        best = np.inf
        for _ in range(7):
            start = time.perf_counter()
            self.prox()
            best = min(best, time.perf_counter() - start)
        return best / self.limit

    track_over_dram_limit.unit = "x limit"  # type: ignore[attr-defined]
