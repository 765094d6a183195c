"""A whole `fusex.fuse` with the default parameters, over backends and image sizes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import fusex

from .common import BACKENDS, SIZES, FuseInputs, XPBenchmark


class FuseFull(FuseInputs, XPBenchmark):
    """`fusex.fuse` with ``FusionParams()`` (up to 150 iterations) on a 3-element phantom.

    Slow: the generic CPU code (numpy, torch-cpu) runs only at 256 x 256 and
    numba up to 1024 x 1024 (about 16 s and 8 s per call at 512 and 1024 on a
    2-core CPU); the GPU backends run every size.
    """

    params: ClassVar[list[list[Any]]] = [BACKENDS, SIZES]
    param_names: ClassVar[list[str]] = ["backend", "size"]
    max_size: ClassVar[Mapping[str, int]] = {"cpu": 256, "numba": 1024, "cuda": 4096}
    number: ClassVar[int] = 1
    repeat: ClassVar[tuple[int, int, float]] = (1, 3, 60.0)
    rounds: ClassVar[int] = 1
    timeout: ClassVar[float] = 900.0

    def setup(self, backend: str, size: int) -> None:
        """Skip sizes above the backend's limit; put the HAADF image and maps on the device; warm up."""
        super().setup(backend, self.fuse)
        self.check_size(size)
        self.load(size, 3)
        self.warm_up(size)

    def summarize(self, result: fusex.FusionResult) -> dict[str, float]:
        """Return the final objective and the number of iterations run."""
        return {"objective": float(result.history["total"].iloc[-1]), "iterations": float(result.n_iter)}

    def time_fuse(self, backend: str, size: int) -> None:
        """Time the whole fusion, GPU work included."""
        self.func()

    def peakmem_fuse(self, backend: str, size: int) -> None:
        """Measure the peak resident host memory of the process (asv's ``peakmem_``)."""
        self.func()

    def track_objective(self, backend: str, size: int) -> float:
        """Track the final objective: a speed-up must leave it unchanged."""
        return self.outcome()["objective"]

    track_objective.unit = "objective"  # type: ignore[attr-defined]

    def track_iterations(self, backend: str, size: int) -> float:
        """Track the iterations run until the stopping rule (or the cap of 150)."""
        return self.outcome()["iterations"]

    track_iterations.unit = "iterations"  # type: ignore[attr-defined]
