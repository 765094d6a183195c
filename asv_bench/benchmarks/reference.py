"""fusex against the published method's package, ``multimodal-fusion`` 0.6.0, on the same input.

Both run the published method: the reference's ``DataFusion.run`` with its
defaults and fusex with `fusex.FusionParams.published` (which reproduces the
reference's maps to float precision), for the same number of iterations on the
same phantom.  fusex runs on its default backend for NumPy input (numba when it
is installed, else the generic NumPy code).  The reference's timing excludes its
``load_*`` calls (min-max normalization); fusex's includes its normalization.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

import fusex

from .phantoms import sample


class CompareReference:
    """``time_reference`` and ``time_fusex`` side by side, ``track_speedup`` measured in one process."""

    params: ClassVar[list[list[Any]]] = [[256, 512]]
    param_names: ClassVar[list[str]] = ["size"]
    iterations: ClassVar[int] = 10
    number: ClassVar[int] = 1
    repeat: ClassVar[tuple[int, int, float]] = (1, 5, 30.0)
    warmup_time: ClassVar[float] = 0.0
    timeout: ClassVar[float] = 600.0

    def setup(self, size: int) -> None:
        """Skip without the reference package; build its solver on copies; warm fusex up.

        Raises
        ------
        NotImplementedError
            If ``multimodal_fusion`` is not installed (asv skips the case).

        """
        try:
            from multimodal_fusion import DataFusion
        except ImportError as exc:
            raise NotImplementedError(f"the reference package multimodal-fusion cannot be imported: {exc}") from exc
        self.data = sample(size, 3)
        self.fusion = fusex.FusionParams.published(n_iter=self.iterations)
        self._data_fusion = DataFusion
        self.reference = self._load_reference()
        if not hasattr(self, "_warm"):
            self.run_fusex()  # numba compilation
            self._warm = True

    def _load_reference(self) -> Any:
        """Return a reference solver with the phantom loaded (on copies: it normalizes them in place)."""
        ref = self._data_fusion(list(self.data.elements))
        ref.load_chemical_maps({e: m.copy() for e, m in zip(self.data.elements, self.data.maps)})
        ref.load_haadf(self.data.haadf.copy())
        return ref

    def run_reference(self, ref: Any) -> np.ndarray:
        """Run the reference (its progress bar silenced) and return its maps (E, H, W)."""
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            ref.run(nIter=self.iterations, plot_images=False, plot_convergence=False)
        return np.stack([ref.get_results()[e] for e in self.data.elements])

    def run_fusex(self) -> np.ndarray:
        """Run fusex with the published parameters and return its maps (E, H, W)."""
        return fusex.fuse(self.data.haadf, self.data.maps, elements=self.data.elements, params=self.fusion).maps

    def _seconds_reference(self) -> float:
        ref = self._load_reference()  # loading (normalizing) is not timed, as in time_reference
        return _seconds(lambda: self.run_reference(ref))

    def time_reference(self, size: int) -> None:
        """Time multimodal-fusion 0.6.0, ``iterations`` iterations."""
        self.run_reference(self.reference)

    def time_fusex(self, size: int) -> None:
        """Time fusex (default backend), ``iterations`` iterations of the same method."""
        self.run_fusex()

    def track_speedup(self, size: int) -> float:
        """Track reference time / fusex time, each the best of 3 runs in this process."""
        ref = min(self._seconds_reference() for _ in range(3))
        ours = min(_seconds(self.run_fusex) for _ in range(3))
        return ref / ours

    track_speedup.unit = "x"  # type: ignore[attr-defined]

    def track_max_relative_difference(self, size: int) -> float:
        """Track the largest per-element relative L2 difference between the two results (same answer: ~1e-7)."""
        theirs = self.run_reference(self.reference)
        ours = self.run_fusex()
        diff = np.linalg.norm((ours - theirs).reshape(len(ours), -1), axis=1)
        return float(np.max(diff / np.linalg.norm(theirs.reshape(len(theirs), -1), axis=1)))

    track_max_relative_difference.unit = "relative L2"  # type: ignore[attr-defined]


def _seconds(operation: Callable[[], Any]) -> float:
    start = time.perf_counter()
    operation()
    return time.perf_counter() - start
