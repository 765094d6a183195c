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
from functools import partial
from types import ModuleType
from typing import Any

import numba
import numpy as np

from .._per_item import any_positive, item_values, map_values
from ..objectives import Evaluation, split_sums
from . import _numba_kernels as kernels
from ._compiled import CompiledEngine, ProxProblem, dual_iterations, momentum
from ._scratch import Scratch

__all__ = ["CACHED_MAP_PIXELS", "PARALLEL_MIN_PIXELS", "NumbaEngine", "serialized"]

PARALLEL_MIN_PIXELS = 256 * 256
"""Maps with fewer pixels run on one thread: below this, waking the other threads costs about
what they save, and far more when other processes keep the cores busy."""

CACHED_MAP_PIXELS = 512 * 512
"""Maps up to this size run the TV prox one map per thread, however few: six dual buffers of a
512 x 512 float32 map (6 MB) stay in a core's share of cache across iterations, and a whole prox is
one parallel region instead of one per dual iteration.  Measured on the 2-core machine for 3 maps
and 10 warm iterations, with other processes busy: 7.4 ms against 21.6 ms in row bands at 256²,
18.5 against 22.0 ms at 512².  Larger maps (buffers beyond the cache) run in row bands: under
that load one map per thread was faster there too (58.9 against 115.5 ms at 1024²), but on an idle
machine row bands gain 1.6-1.9x from the second thread at 1024²."""


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


class NumbaEngine(CompiledEngine):
    """Compiled CPU kernels with per-instance scratch memory (make one per solve)."""

    name = "numba"
    array = np

    def __init__(self) -> None:
        self._scratch = Scratch(np.empty)

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
        gm1 = (item_values(gamma, n_items, np.float64) - 1.0).astype(dtype).reshape(-1, 1, 1, 1)
        # NumPy's SIMD log and exp outrun numba's scalar libm calls several times over, and
        # exp((gamma-1) log x) beats np.power, which leaves its fast path on the zeros of sparse maps.
        x_pow_m1 = np.empty_like(x)
        # log 0 = -inf and exp(-inf) = 0 = 0**(gamma-1); for gamma = 1, 0 * -inf is NaN, overwritten below.
        with np.errstate(divide="ignore", invalid="ignore"):
            np.log(x, out=x_pow_m1)
            np.multiply(x_pow_m1, gm1, out=x_pow_m1)
        np.exp(x_pow_m1, out=x_pow_m1)
        for n in np.flatnonzero(gm1.reshape(-1) == 0):
            x_pow_m1[n] = 1
        logs = self._scratch.get("log", x.shape, dtype)
        np.log(np.add(x, item_values(eps, n_items, dtype).reshape(-1, 1, 1, 1), out=logs), out=logs)
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
                map_values(huber_delta, n_items, x.shape[1], dtype),
                map_values(strength, n_items, x.shape[1], dtype),
                np.ascontiguousarray(np.broadcast_to(xi, (n_items, *xi.shape[1:]))) if directed else xi,
                directed,
                x_pow_m1,
                logs,
                residual,
                partials,
                # Without a mask the kernel reads none; a one-pixel stand-in of x's dtype keeps one compiled version.
                np.ones((1, 1, 1), dtype) if mask is None else _host(mask, "mask").astype(dtype, copy=False),
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

    def _in(self, x: Any, name: str) -> np.ndarray:
        return _host(x, name)

    def _prox(self, problem: ProxProblem, n_iter: int, method: str, start: Any) -> tuple[np.ndarray, Any]:
        maps = problem.maps
        height, width = maps.shape[1:]
        out = np.empty_like(maps)
        # The kernels write the last dual into a fresh array: the caller's is only read.
        p = None if start is None else start.copy()
        threads = numba.get_num_threads()
        if problem.guided or maps.size < PARALLEL_MIN_PIXELS or height * width <= CACHED_MAP_PIXELS:
            # One thread per map, each map's dual buffers stay in cache for all its iterations.
            stand_in = np.zeros((1, 2, 1, 1), maps.dtype)  # one compiled version: an unused dual of the same type
            with _threads_for(maps.size), _parallel_region():
                kernels.prox_maps(
                    maps,
                    problem.weights,
                    problem.steps,
                    problem.keeps,
                    problem.strengths,
                    problem.xi,
                    problem.maps_per_field,
                    problem.guided,
                    momentum(n_iter, method, maps.dtype),
                    problem.nonneg,
                    out,
                    stand_in if p is None else p,
                    p is not None,
                )
            return out, p
        # A few large TV maps: each dual iteration is spread over row bands of one map.
        blocks = max(1, min(height, 4 * threads))
        buffers = [self._scratch.get(f"dual{b}", (2, height, width), maps.dtype) for b in range(3)]
        for m, image in enumerate(maps):
            step = partial(_band_step, image, problem.weights[m], problem.steps[m], problem.nonneg, blocks)
            last = dual_iterations(step, n_iter, method, buffers, None if p is None else p[m])
            with _parallel_region():
                kernels.primal(image, problem.weights[m], problem.nonneg, last[0], last[1], out[m])
            if p is not None:
                p[m] = last
        return out, p


def _band_step(
    image: np.ndarray, weight: Any, step: Any, nonneg: bool, blocks: int, beta: float, zero_start: bool, planes: Any
) -> None:
    """One dual iteration of one large map, its rows in ``blocks`` parallel bands (`kernels.dual_step`)."""
    with _parallel_region():
        kernels.dual_step(image, weight, step, image.dtype.type(beta), nonneg, zero_start, *planes, blocks)
