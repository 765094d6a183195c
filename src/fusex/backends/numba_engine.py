"""The numba engine: the generic algorithm's three hot functions as CPU kernels.

`NumbaEngine.evaluate`, `.gradient_step` and `.tv_prox` have the signatures
of their generic counterparts in `fusex.objectives` and `fusex.tv` and are
parity-tested against them.  They accept NumPy arrays only and raise for
anything else (never copying device memory to the host behind the caller's
back).  An engine instance keeps scratch buffers for one solve, so the
inner loops do not pay for fresh memory every iteration.

Several Python threads may fuse at once.  numba's ``tbb`` and ``omp``
threading layers run their parallel regions concurrently; its ``workqueue``
layer (the one left when neither TBB nor OpenMP is available, or chosen with
``NUMBA_THREADING_LAYER=workqueue``) is not thread-safe and aborts the process
when two threads enter it.  Under that layer, and until numba has chosen a
layer, the engine's kernels therefore run one at a time in the process
(`serialized`): concurrent fusions are correct but take turns on the cores.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import numba
import numpy as np

from .._blas import one_blas_thread
from .._per_item import any_positive, item_values, map_values
from ..objectives import Evaluation, split_sums
from . import _numba_kernels as kernels
from ._compiled import CompiledEngine, ProxProblem, momentum
from ._scratch import Scratch

__all__ = [
    "MAX_DEPTH",
    "PARALLEL_MIN_PIXELS",
    "TILE_BYTES",
    "NumbaEngine",
    "serialized",
    "tiling",
    "whole_maps_per_thread",
]

PARALLEL_MIN_PIXELS = 64 * 64
"""Maps with fewer pixels run on one thread: below this, waking the other threads costs about
what they save, and more when other processes keep the cores busy.  A kernel counts the pixels
of one map per item (the TV prox once per dual iteration, since it wakes the threads once for
all of them).  It was 256 x 256 until the kernels' passes became one vectorized pass each; then
whole default fusions on the 2-core development machine ran faster on both threads at every
size tried (best of 7, two runs each, threshold 256 x 256 against 64 x 64): 3 x 64 x 64 41-45 ms
against 38-40 ms, 3 x 96 x 96 77-78 against 63-64, 3 x 128 x 128 74-75 against 61-63, 3 x 192 x
192 147-148 against 116-117, a batch of 8 x 3 x 64 x 64 186-188 against 148-153."""

TILE_BYTES = 1 << 20
"""The most a worker's tile of the blocked TV prox may hold (six dual planes of its rows): half
of a core's L2 cache on the development machine, so the tile stays there for a whole sweep."""

MAX_DEPTH = 12
"""The most dual iterations a sweep of the blocked TV prox runs, so that the default 10 inner
iterations run in one sweep wherever the tile holds them: each further sweep writes and reads
back the last two dual iterates of every map (a prox of 10 iterations, in one sweep of 10
instead of two of 5: 3 x 256 x 256 1.34 -> 1.07 ms, 8 x 3 x 256 x 256 11.9 -> 8.9 ms,
3 x 512 x 512 4.87 -> 4.09 ms; 3 x 1024 x 1024 keeps two sweeps of 5 in its 1 MB tiles, 25 ms)."""


_ONE_AT_A_TIME = threading.Lock()


def serialized() -> bool:
    """Whether the kernels run one at a time: under numba's non-thread-safe ``workqueue`` layer, or before any layer."""
    try:
        return numba.threading_layer() == "workqueue"
    except ValueError:  # numba has not started its threads yet, so the layer is not known
        return True


@contextmanager
def _parallel_region() -> Iterator[None]:
    # Checked on every launch: the layer is fixed once numba starts its threads, and the check is cheap.
    if not serialized():
        yield
        return
    with _ONE_AT_A_TIME:
        yield


@contextmanager
def _threads_for(pixels: int) -> Iterator[None]:
    # numba's thread count is a per-calling-thread setting; it is restored on exit.
    if pixels >= PARALLEL_MIN_PIXELS:
        yield
        return
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


def _host(x: Any, name: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(
            f"the numba engine computes on NumPy arrays, but `{name}` is a {type(x).__module__}.{type(x).__name__}; "
            "pass engine='auto' to run the engine that suits them, or convert explicitly"
        )
    return np.ascontiguousarray(x)


def _stand_in(mask: Any, dtype: np.dtype) -> np.ndarray:
    """``mask`` on the host in ``dtype``, or a one-pixel stand-in the kernels do not read (one compiled version)."""
    return np.ones((1, 1, 1), dtype) if mask is None else _host(mask, "mask").astype(dtype, copy=False)


class NumbaEngine(CompiledEngine):
    """Compiled CPU kernels with per-instance scratch memory (make one per solve)."""

    name = "numba"
    array = np

    def __init__(self) -> None:
        self._scratch = Scratch(np.empty)

    @contextmanager
    def session(self) -> Iterator[None]:
        """Keep NumPy's BLAS on one thread while a solve runs (the previous limit comes back after).

        The solver's HAADF fit calls BLAS between the kernels.  OpenBLAS's
        threads keep spinning on the cores after each call, and numba's threads
        then share those cores with them: on the 2-core machine that made a
        3 x 512 x 512 fusion 2x slower (30 iterations: 1.66 s, 0.83 s with BLAS
        on one thread).  The BLAS calls themselves are small and lose little.
        """
        with one_blas_thread():
            yield

    def evaluate(
        self,
        x: Any,
        haadf: Any,
        counts: Any,
        weights: Any,
        *,
        gamma: Any,
        eps: Any,
        xp: ModuleType,
        mask: Any = None,
        huber_delta: Any = 0.0,
        strength: Any = 0.0,
        direction: Any = None,
    ) -> Evaluation:
        """Evaluate every cost term of each item at ``x`` (see `fusex.objectives.evaluate`, also for the prior)."""
        x = _host(x, "x")
        n_items = x.shape[0]
        dtype = x.dtype
        x_pow_m1 = np.empty_like(x)
        gm1 = (item_values(gamma, n_items, np.float64) - 1.0).astype(dtype)
        residual = np.empty((n_items, *x.shape[2:]), dtype=dtype)
        partials = self._scratch.get("partials", (n_items * x.shape[2], 1 + 2 * x.shape[1]), np.float64)
        directed = direction is not None and any_positive(strength)
        # Without a direction field, one pixel of x's dtype stands in (one compiled version; it is not read).
        xi = _host(direction, "direction").astype(dtype, copy=False) if directed else np.zeros((1, 2, 1, 1), dtype)
        with _threads_for(x[:, 0].size), _parallel_region():
            kernels.evaluate(
                x,
                _host(haadf, "haadf"),
                _host(counts, "counts"),
                _host(weights, "weights").reshape(n_items, -1),
                gm1,
                item_values(eps, n_items, dtype),
                map_values(huber_delta, n_items, x.shape[1], dtype),
                map_values(strength, n_items, x.shape[1], dtype),
                np.ascontiguousarray(np.broadcast_to(xi, (n_items, *xi.shape[1:]))) if directed else xi,
                directed,
                x_pow_m1,
                residual,
                partials,
                _stand_in(mask, dtype),
                mask is not None,
            )
        sums = partials.reshape(n_items, x.shape[2], -1).sum(axis=1)
        return split_sums(sums, x_pow_m1, residual)

    def gradient_step(
        self,
        x: Any,
        counts: Any,
        weights: Any,
        ev: Evaluation,
        *,
        eps: Any,
        coef_h: Any,
        coef_c: Any,
        xp: ModuleType,
        nonneg: bool = True,
    ) -> Any:
        """Projected gradient step (see `fusex.objectives.gradient_step`)."""
        x = _host(x, "x")
        n_items = x.shape[0]
        out = np.empty_like(x)
        floor = x.dtype.type(0 if nonneg else -np.inf)
        with _threads_for(x[:, 0].size), _parallel_region():
            kernels.gradient_step(
                x,
                _host(counts, "counts"),
                _host(weights, "weights").reshape(n_items, -1),
                ev.x_pow_m1,
                ev.residual,
                item_values(coef_h, n_items, x.dtype),
                map_values(coef_c, n_items, x.shape[1], x.dtype),
                item_values(eps, n_items, x.dtype),
                floor,
                out,
            )
        return out

    def extrapolate(self, x: Any, x_prev: Any, beta: np.ndarray, *, xp: ModuleType) -> np.ndarray:
        r"""Return the accelerated step's start :math:`y = P_{\ge 0}(x + \beta (x - x_{prev}))` in one pass.

        ``beta`` holds one momentum weight per item.
        """
        x = _host(x, "x")
        out = np.empty_like(x)
        with _threads_for(x[:, 0].size), _parallel_region():
            kernels.extrapolate(x, _host(x_prev, "x_prev"), np.asarray(beta, dtype=x.dtype), out)
        return out

    def step_products(self, x_new: Any, y: Any, z: Any, x: Any, *, xp: ModuleType) -> tuple[np.ndarray, ...]:
        r"""Return the four inner products of a step per item, in float64 and one pass.

        They are :math:`d \cdot d`, :math:`x_{new} \cdot x_{new}`, :math:`(y - z) \cdot d` and
        :math:`d \cdot (x_{new} - x)`, with :math:`d = x_{new} - y`, those of an accelerated
        step (`fusex.solver`): its length, its size, the slope of the smooth terms along it (``z``
        is the unprojected gradient step from ``y``) and the restart test.
        """
        x_new = _host(x_new, "x_new")
        n_items, _, height = x_new.shape[:3]
        partials = self._scratch.get("products", (n_items * height, 4), np.float64)
        with _threads_for(x_new[:, 0].size), _parallel_region():
            kernels.step_products(x_new, _host(y, "y"), _host(z, "z"), _host(x, "x"), partials)
        sums = partials.reshape(n_items, height, 4).sum(axis=1)
        return tuple(sums[:, k].copy() for k in range(4))

    def haadf_moments(
        self, x: Any, x_pow_m1: Any, weights: Any, image: Any, mask: Any = None, *, xp: ModuleType
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r"""Return the HAADF model :math:`M = \sum_e w_e x_e^\gamma` and its fit's moments, in one pass.

        :math:`x^\gamma` is formed as :math:`x \cdot x^{\gamma-1}` from an evaluation's
        ``x_pow_m1``; ``weights`` (B, E, 1, 1) are :math:`w_e`.  The moments are
        :math:`\sum m^2 M^2` and :math:`\sum m^2 M b` of each item (float64, host) with the
        image ``image`` :math:`b` and ``mask`` :math:`m` (None: 1), those of
        `fusex.operators.HaadfDesign.fit`.
        """
        x = _host(x, "x")
        n_items, _, height = x.shape[:3]
        model = np.empty((n_items, *x.shape[2:]), dtype=x.dtype)
        partials = self._scratch.get("moments", (n_items * height, 2), np.float64)
        with _threads_for(x[:, 0].size), _parallel_region():
            kernels.haadf_moments(
                x,
                _host(x_pow_m1, "x_pow_m1"),
                _host(weights, "weights").reshape(n_items, -1),
                _host(image, "image"),
                _stand_in(mask, x.dtype),
                mask is not None,
                model,
                partials,
            )
        sums = partials.reshape(n_items, height, 2).sum(axis=1)
        return model, sums[:, 0].copy(), sums[:, 1].copy()

    def haadf_residual(
        self, raw: Any, background: Any, model: Any, gain: np.ndarray, mask: Any = None, *, xp: ModuleType
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r"""Return :math:`b_H - B`, the residual :math:`m (b_H - B - a M)` and :math:`\sum m (b_H - B - a M)^2`.

        One pass over each item's images: ``gain`` holds the gains :math:`a` (host,
        one per item), ``mask`` :math:`m` (None: 1); the squares are float64 on the host.
        """
        raw = _host(raw, "raw")
        n_items, height = raw.shape[:2]
        haadf, residual = np.empty_like(raw), np.empty_like(raw)
        partials = self._scratch.get("squares", (n_items * height,), np.float64)
        with _threads_for(raw.size), _parallel_region():
            kernels.haadf_residual(
                raw,
                _host(background, "background"),
                _host(model, "model"),
                np.asarray(gain, dtype=raw.dtype),
                _stand_in(mask, raw.dtype),
                mask is not None,
                haadf,
                residual,
                partials,
            )
        return haadf, residual, partials.reshape(n_items, height).sum(axis=1)

    def _in(self, x: Any, name: str) -> np.ndarray:
        return _host(x, name)

    def _prox(self, problem: ProxProblem, n_iter: int, method: str, start: Any) -> tuple[np.ndarray, Any]:
        maps = problem.maps
        out = np.empty_like(maps)
        betas = momentum(n_iter, method, maps.dtype)
        directed = problem.guided and bool(np.any(problem.strengths != 0))
        stand_in = np.zeros((1, 2, 1, 1), maps.dtype)  # one compiled version: an unused dual of the same type
        with _threads_for(maps.size * max(n_iter, 1)), _parallel_region():
            if n_iter == 0 or (directed and whole_maps_per_thread(*maps.shape, maps.itemsize, numba.get_num_threads())):
                p = None if start is None else start.copy()  # the kernel writes the last dual back into it
                kernels.prox_maps(
                    maps,
                    problem.weights,
                    problem.steps,
                    problem.keeps,
                    problem.strengths,
                    problem.xi,
                    problem.maps_per_field,
                    problem.guided,
                    betas,
                    problem.nonneg,
                    out,
                    stand_in if p is None else p,
                    p is not None,
                )
                return out, p
            n_maps, height, width = maps.shape
            band, depth = tiling(height, width, maps.itemsize)
            rows = min(height, band + 2 * (depth + 2))
            workers = numba.get_num_threads()
            work = self._scratch.get("tiles", (workers, 3, 2, rows, width), maps.dtype)
            # The sweeps' hand-over of the last two dual iterates; a map in one band runs one sweep and needs none.
            state_shape = (2, n_maps, 2, 2, height, width) if height > band else (2, 1, 2, 2, 1, 1)
            state = self._scratch.get("sweeps", state_shape, maps.dtype)
            p = None if start is None else np.empty_like(start)
            keeps = problem.keeps if problem.guided else np.ones_like(problem.weights)
            kernels.blocked_prox(
                maps,
                problem.weights,
                problem.steps,
                keeps,
                problem.strengths,
                problem.xi,
                problem.maps_per_field,
                problem.guided,
                betas,
                problem.nonneg,
                out,
                stand_in if start is None else np.ascontiguousarray(start),
                stand_in if p is None else p,
                p is not None,
                band,
                depth,
                state,
                work,
            )
        return out, p


def whole_maps_per_thread(n_maps: int, height: int, width: int, itemsize: int, workers: int) -> bool:
    """Whether a directional-TV prox runs each map whole on one thread (`kernels.prox_maps`), not in tiles.

    Whole maps skip the tiles' halo rows and copies, which pays where the maps keep every thread
    busy (at least 4 per thread) and a map's six dual planes fit in twice `TILE_BYTES` (a core's
    L2 cache on the development machine).  With fewer maps the threads idle unevenly (3 maps on 2
    threads), and larger maps run from memory whole.  20 dual iterations, float32, 2 threads (one
    run, best of several calls): 20 x 3 x 256 x 256, 66 ms whole against 74 ms tiled; 16 x 3 x 128 x
    128, 12 ms either way; 3 x 256 x 256, 4.1 against 3.3 ms; 3 x 512 x 512, 19.8 against 14.9 ms;
    3 x 1024 x 1024, 79 against 75 ms.
    """
    return n_maps >= 4 * workers and 6 * height * width * itemsize <= 2 * TILE_BYTES


def tiling(height: int, width: int, itemsize: int) -> tuple[int, int]:
    """Rows per band and dual iterations per sweep of the blocked TV prox (`kernels.blocked_prox`).

    A worker's buffer, six dual planes of the band and its halo of ``depth + 2``
    rows either side, is kept within `TILE_BYTES`.  Maps that fit whole take one
    band, which needs no halo.  Deeper sweeps move less memory per iteration
    and recompute more halo rows; ``depth`` is an eighth of the rows that fit,
    from 4 to `MAX_DEPTH`, and a band has at least 16 rows (wide maps overrun the budget).
    """
    rows = max(1, TILE_BYTES // (6 * width * itemsize))
    if rows >= height:
        return height, 1
    # Rows too wide for a deep tile in the budget still get one of 4 iterations over 16 rows (beyond L2,
    # in L3): a tile of one iteration copies its halo in and out for nothing, 2x slower than streaming.
    depth = min(MAX_DEPTH, max(4, rows // 8))
    return max(rows - 2 * (depth + 2), 16), depth
