"""`fusex.tv_denoise` on one map, over backends and image sizes."""

from __future__ import annotations

from typing import Any, ClassVar

import fusex

from .common import BACKENDS, SIZES, XPBenchmark
from .phantoms import sample


class TVDenoise(XPBenchmark):
    """TV proximal operator of one (size, size) map in [0, 1]: 15 FGP iterations, as in one fusion step."""

    params: ClassVar[list[list[Any]]] = [BACKENDS, SIZES]
    param_names: ClassVar[list[str]] = ["backend", "size"]
    weight: ClassVar[float] = 0.1
    iterations: ClassVar[int] = 15

    def setup(self, backend: str, size: int) -> None:
        """Skip sizes above the backend's limit; put one normalized map on the device; warm up."""
        super().setup(backend, self.denoise)
        self.check_size(size)
        image = sample(size).maps[0]
        self.x = self.target.asarray(image / image.max())
        self.warm_up(size)

    def denoise(self) -> Any:
        """Denoise the map."""
        return fusex.tv_denoise(self.x, self.weight, self.iterations, **self.target.keywords(fusex.tv_denoise))

    def time_tv_denoise(self, backend: str, size: int) -> None:
        """Time one call, GPU work included."""
        self.func()

    def peakmem_tv_denoise(self, backend: str, size: int) -> None:
        """Measure the peak resident host memory of the process (asv's ``peakmem_``)."""
        self.func()
