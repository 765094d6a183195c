"""`fusex.tune` with its defaults: the count-splitting search, screened, and its cost over one fusion."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

import fusex
from fusex.params import PerElement

from .common import BACKENDS, XPBenchmark
from .phantoms import sample


class Tune(XPBenchmark):
    """`fusex.tune` on a 3-element 128 x 128 phantom: the screened search, its widenings, the refit.

    60 candidates screened on one of 4 folds for `fusex.tune.DEFAULT_SCREEN` iterations, the best
    `fusex.tune.DEFAULT_KEEP` per element finished on all 4, then 4 more fits to score a
    per-element choice.  Only the compiled backends run it (on a 2-core CPU, numba takes tens of seconds per
    call); the generic CPU code would take many minutes.
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

    def summarize(self, result: fusex.TuneResult) -> dict[str, float]:
        """Return the chosen lambda_tv (mean over elements when per element) and tune's time over one fusion's.

        The ratio is measured here, after the warm-up, one default fusion and one `tune` of the same
        input back to back.
        """
        chosen = result.params.lambda_tv
        start = time.perf_counter()
        fusex.fuse(self.haadf, self.maps, elements=self.elements, **self.target.keywords(fusex.fuse))
        self.target.synchronize()
        fusion = time.perf_counter() - start
        start = time.perf_counter()
        self.func()
        search = time.perf_counter() - start
        return {
            "lambda_tv": float(np.mean(list(chosen.values()) if isinstance(chosen, PerElement) else chosen)),
            "ratio": search / fusion,
        }

    def time_tune(self, backend: str) -> None:
        """Time the search and the refit, GPU work included."""
        self.func()

    def track_chosen_lambda_tv(self, backend: str) -> float:
        """Track the chosen lambda_tv: a speed-up must not change the choice."""
        return self.outcome()["lambda_tv"]

    track_chosen_lambda_tv.unit = "lambda_tv"  # type: ignore[attr-defined]

    def track_over_one_fusion(self, backend: str) -> float:
        """Track tune's time over one default fusion's of the same input, measured in one run."""
        return self.outcome()["ratio"]

    track_over_one_fusion.unit = "ratio"  # type: ignore[attr-defined]
