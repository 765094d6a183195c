"""One outer iteration of `fusex.fuse` at 512 x 512, over backends and the number of elements."""

from __future__ import annotations

from typing import Any, ClassVar

import fusex

from .common import BACKENDS, FuseInputs, XPBenchmark


class FuseElements(FuseInputs, XPBenchmark):
    """`fusex.fuse` with ``FusionParams(n_iter=1, tol=0.0)`` on 512 x 512 phantoms of 2 to 5 elements.

    The phantoms come from `fusex.datasets.phantom` with a custom unit cell
    (`phantoms.lattice`): Sr, Ti, O, Ba, Zr, one column each.
    """

    params: ClassVar[list[list[Any]]] = [BACKENDS, [2, 3, 4, 5]]
    param_names: ClassVar[list[str]] = ["backend", "elements"]
    size: ClassVar[int] = 512
    fusion: ClassVar[fusex.FusionParams] = fusex.FusionParams(n_iter=1, tol=0.0)

    def setup(self, backend: str, elements: int) -> None:
        """Put the HAADF image and the ``elements`` maps on the device; warm up."""
        super().setup(backend, self.fuse)
        self.load(self.size, elements)
        self.warm_up(elements)

    def time_fuse_elements(self, backend: str, elements: int) -> None:
        """Time the call, GPU work included."""
        self.func()

    def peakmem_fuse_elements(self, backend: str, elements: int) -> None:
        """Measure the peak resident host memory of the process (asv's ``peakmem_``)."""
        self.func()

    def track_objective(self, backend: str, elements: int) -> float:
        """Track the objective after one iteration: a speed-up must leave it unchanged."""
        return self.outcome()

    track_objective.unit = "objective"  # type: ignore[attr-defined]
