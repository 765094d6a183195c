"""`fusex.tune` with its default grid: the whole count-splitting search as one batched solve."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

import fusex
from fusex.params import PerElement

from .common import BACKENDS, XPBenchmark
from .phantoms import sample


class Tune(XPBenchmark):
    """`fusex.tune` on a 3-element 128 x 128 phantom: 140 fusions, a per-element check, the refit.

    4 folds x 35 candidates, then 4 more fits to score a per-element choice.
    Only the compiled backends run it (on a 2-core CPU, numba takes seconds per call); the
    generic CPU code would take minutes.
    """

    params: ClassVar[list[list[Any]]] = [BACKENDS]
    param_names: ClassVar[list[str]] = ["backend"]
    size: ClassVar[int] = 128
    max_size: ClassVar[Mapping[str, int]] = {"cpu": 0, "numba": 128, "cuda": 128}
    number: ClassVar[int] = 1
    repeat: ClassVar[tuple[int, int, float]] = (1, 3, 60.0)
    rounds: ClassVar[int] = 1
    timeout: ClassVar[float] = 900.0

    def setup(self, backend: str) -> None:
        """Put the HAADF image and the raw counts on the device; warm up."""
        super().setup(backend, self.tune)
        self.check_size(self.size)
        data = sample(self.size)
        self.elements = data.elements
        self.haadf, self.maps = self.target.asarray(data.haadf), self.target.asarray(np.round(data.maps))
        self.warm_up()

    def tune(self) -> fusex.TuneResult:
        """Choose the parameters and fuse with them."""
        return fusex.tune(self.haadf, self.maps, elements=self.elements, **self.target.keywords(fusex.tune))

    def summarize(self, result: fusex.TuneResult) -> float:
        """Return the chosen lambda_tv (its mean over the elements when chosen per element)."""
        chosen = result.params.lambda_tv
        return float(np.mean(list(chosen.values()) if isinstance(chosen, PerElement) else chosen))

    def time_tune(self, backend: str) -> None:
        """Time the search and the refit, GPU work included."""
        self.func()

    def track_chosen_lambda_tv(self, backend: str) -> float:
        """Track the chosen lambda_tv: a speed-up must not change the choice."""
        return self.outcome()

    track_chosen_lambda_tv.unit = "lambda_tv"  # type: ignore[attr-defined]
