"""One outer iteration of `fusex.fuse` (three elements), over backends and image sizes."""

from __future__ import annotations

from typing import Any, ClassVar

import fusex

from .common import BACKENDS, SIZES, FuseInputs, XPBenchmark


class FuseIteration(FuseInputs, XPBenchmark):
    """`fusex.fuse` with ``FusionParams(n_iter=1, tol=0.0)`` on a 3-element phantom.

    The time includes what every call does besides iterating: input checks,
    normalization, the initial objective, and the final transfer of the history
    to the host.
    """

    params: ClassVar[list[list[Any]]] = [BACKENDS, SIZES]
    param_names: ClassVar[list[str]] = ["backend", "size"]
    fusion: ClassVar[fusex.FusionParams] = fusex.FusionParams(n_iter=1, tol=0.0)

    def setup(self, backend: str, size: int) -> None:
        """Skip sizes above the backend's limit; put the HAADF image and maps on the device; warm up."""
        super().setup(backend, self.fuse)
        self.check_size(size)
        self.load(size, 3)
        self.warm_up(size)

    def time_fuse_iteration(self, backend: str, size: int) -> None:
        """Time the call, GPU work included."""
        self.func()

    def peakmem_fuse_iteration(self, backend: str, size: int) -> None:
        """Measure the peak resident host memory of the process (asv's ``peakmem_``)."""
        self.func()

    def track_objective(self, backend: str, size: int) -> float:
        """Track the objective after one iteration: a speed-up must leave it unchanged."""
        return self.outcome()

    track_objective.unit = "objective"  # type: ignore[attr-defined]
