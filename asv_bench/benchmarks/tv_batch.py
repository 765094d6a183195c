"""`fusex.tv_denoise` on a stack of maps (B, H, W), over backends and batch sizes."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

import fusex

from .common import BACKENDS, XPBenchmark
from .phantoms import sample


class TVDenoiseBatch(XPBenchmark):
    """TV proximal operator of a stack of B maps of 512 x 512: one call for the whole stack."""

    params: ClassVar[list[list[Any]]] = [BACKENDS, [1, 8, 32]]
    param_names: ClassVar[list[str]] = ["backend", "batch"]
    size: ClassVar[int] = 512
    weight: ClassVar[float] = 0.1
    iterations: ClassVar[int] = 15

    def setup(self, backend: str, batch: int) -> None:
        """Put a (batch, 512, 512) stack of normalized maps on the device; warm up."""
        super().setup(backend, self.denoise)
        maps = sample(self.size).maps
        maps = maps / maps.max(axis=(1, 2), keepdims=True)
        stack = np.stack([maps[i % len(maps)] for i in range(batch)])
        self.x = self.target.asarray(stack)
        self.warm_up(batch)

    def denoise(self) -> Any:
        """Denoise every map of the stack."""
        return fusex.tv_denoise(self.x, self.weight, self.iterations, **self.target.keywords(fusex.tv_denoise))

    def time_tv_denoise_batch(self, backend: str, batch: int) -> None:
        """Time one call on the whole stack, GPU work included."""
        self.func()

    def peakmem_tv_denoise_batch(self, backend: str, batch: int) -> None:
        """Measure the peak resident host memory of the process (asv's ``peakmem_``)."""
        self.func()
