"""Time to a converged fusion: `fusex.fuse` run until its objective is within 1e-4 of the best known value."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import fusex

from .common import BACKENDS, FuseInputs, XPBenchmark

#: The solvers compared: the default accelerated one, and the plain proximal gradient fusex had before it.
SOLVERS: dict[str, dict[str, Any]] = {
    "fista": {},
    "plain": {"accel": "none", "tv_warm": False, "step": 1.0, "n_tv": 15, "refit_every": 10, "init": "counts"},
}

GAP = 1e-4
"""Relative objective gap at which a run stops (the callback stops it)."""

CAP = 600
"""Most outer iterations a run gets to reach the gap."""


class TimeToSolution(FuseInputs, XPBenchmark):
    """`fusex.fuse` until the relative objective gap is below `GAP`, for each solver.

    The best known objective of each case comes from one long run of the
    accelerated solver (1000 iterations, 30 TV inner iterations), made once
    per process in ``setup`` and not timed.  A solver that does not reach the
    gap within `CAP` iterations is timed over all of them, and
    ``track_iterations`` reports ``CAP + 1``.
    """

    params: ClassVar[list[list[Any]]] = [BACKENDS, [256, 512], list(SOLVERS)]
    param_names: ClassVar[list[str]] = ["backend", "size", "solver"]
    max_size: ClassVar[Mapping[str, int]] = {"cpu": 256, "numba": 512, "cuda": 512}
    number: ClassVar[int] = 1
    repeat: ClassVar[tuple[int, int, float]] = (1, 3, 60.0)
    rounds: ClassVar[int] = 1
    timeout: ClassVar[float] = 900.0

    _best: ClassVar[dict[tuple[str, int], float]] = {}

    def setup(self, backend: str, size: int, solver: str) -> None:
        """Skip sizes above the backend's limit; load the phantom; find the best objective once per process."""
        super().setup(backend, self.fuse_to_gap)
        self.check_size(size)
        self.load(size, 3)
        key = (self.target.label, size)
        if key not in TimeToSolution._best:
            self.fusion = fusex.FusionParams(tol=0.0, n_iter=1000, n_tv=30)
            TimeToSolution._best[key] = float(self.fuse().history["total"].min())
        self.best = TimeToSolution._best[key]
        self.fusion = fusex.FusionParams(tol=0.0, n_iter=CAP, **SOLVERS[solver])
        self.warm_up(size, solver)

    def fuse_to_gap(self) -> fusex.FusionResult:
        """Fuse until the objective is within `GAP` of the best known value."""

        def reached(k: int, state: Any) -> bool:
            return (state.total - self.best) / abs(self.best) < GAP

        return self.fuse(callback=reached)

    def summarize(self, result: fusex.FusionResult) -> dict[str, float]:
        """Return the iterations run (``CAP + 1`` when the gap was not reached)."""
        return {"iterations": float(result.n_iter if result.stop_reason == "callback" else CAP + 1)}

    def time_to_gap(self, backend: str, size: int, solver: str) -> None:
        """Time the fusion to the gap, GPU work included."""
        self.func()

    def track_iterations(self, backend: str, size: int, solver: str) -> float:
        """Track the outer iterations to the gap."""
        return self.outcome()["iterations"]

    track_iterations.unit = "iterations"  # type: ignore[attr-defined]
