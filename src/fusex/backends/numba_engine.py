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

import array_api_compat.numpy
import numba
import numpy as np

from ..objectives import Evaluation, prior_values, split_sums
from ..tv import dual_momentum, tv_weights
from . import _numba_kernels as kernels
from ._per_item import guided_parameters, is_guided, item_values, map_values, map_weights
from ._scratch import Scratch

__all__ = ["CACHED_MAP_PIXELS", "PARALLEL_MIN_PIXELS", "NumbaEngine", "serialized"]

PARALLEL_MIN_PIXELS = 256 * 256
"""Maps with fewer pixels run on one thread: below this, waking the other threads costs about
what they save, and far more when other processes keep the cores busy."""

CACHED_MAP_PIXELS = 512 * 512
"""Stacks of maps up to this size (and at least four per thread) run the TV prox one map per thread:
six dual buffers of a 512 x 512 float32 map (6 MB) stay in a core's share of cache across iterations."""


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
            "use backend='torch' or 'cupy' for device arrays, or convert explicitly"
        )
    return np.ascontiguousarray(x)


class NumbaEngine:
    """Compiled CPU kernels with per-instance scratch memory (make one per solve)."""

    name = "numba"

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
        with _threads_for(x[:, 0].size), _parallel_region():
            kernels.evaluate(
                x,
                _host(haadf, "haadf"),
                _host(counts, "counts"),
                _host(weights, "weights").reshape(n_items, -1),
                x_pow_m1,
                logs,
                residual,
                partials,
                # Without a mask the kernel reads none; a one-pixel stand-in of x's dtype keeps one compiled version.
                np.ones((1, 1, 1), dtype) if mask is None else _host(mask, "mask").astype(dtype, copy=False),
                mask is not None,
            )
        sums = partials.reshape(n_items, x.shape[2], -1).sum(axis=1)
        if is_guided(huber_delta, strength, direction):
            # The kernel sums TV; other priors are summed by NumPy here (a small share of an iteration's work).
            prior = prior_values(x, array_api_compat.numpy, huber_delta, strength, direction)
            sums[:, 1 + x.shape[1] :] = prior.sum(axis=(-2, -1), dtype=np.float64)
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

    def tv_prox(
        self,
        f: Any,
        weight: Any,
        n_iter: int,
        *,
        method: str = "fgp",
        nonneg: bool = True,
        xp: ModuleType,
        dual: Any = None,
        huber_delta: Any = 0.0,
        strength: Any = 0.0,
        direction: Any = None,
    ) -> Any:
        """Prox of each map's prior on the last two axes (see `fusex.tv.tv_prox`, also for the keywords)."""
        f = _host(f, "f")
        if max(tv_weights(weight)) <= 0 or n_iter == 0:
            u = np.maximum(f, 0) if nonneg else f.copy()
            return u if dual is None else (u, dual)
        height, width = f.shape[-2:]
        maps = f.reshape(-1, height, width)
        if is_guided(huber_delta, strength, direction):
            return self._prox_guided(f, maps, weight, n_iter, method, nonneg, dual, huber_delta, strength, direction)
        w, steps = map_weights(weight, maps.shape[0], f.dtype)
        out = np.empty_like(maps)
        # The caller's dual is read only: the kernels write the next one into a fresh array.
        warm = dual is not None
        p = np.array(_host(dual, "dual"), dtype=f.dtype).reshape(-1, 2, height, width) if warm else None
        threads = numba.get_num_threads()
        if maps.size < PARALLEL_MIN_PIXELS or (height * width <= CACHED_MAP_PIXELS and maps.shape[0] >= 4 * threads):
            # Many small maps: one thread per map, each map's dual buffers stay in cache for all iterations.
            betas = np.fromiter(dual_momentum(n_iter, method), dtype=f.dtype, count=n_iter)
            stand_in = np.zeros((1, 2, 1, 1), f.dtype)  # one compiled version: an unused dual of the same type
            with _threads_for(maps.size), _parallel_region():
                kernels.prox_maps(maps, w, steps, betas, nonneg, out, stand_in if p is None else p, warm)
        else:
            # A few large maps: each dual iteration is spread over row bands of one map.
            blocks = max(1, min(height, 4 * threads))
            buffers = [self._scratch.get(f"dual{b}", (2, height, width), f.dtype) for b in range(3)]
            for m, image in enumerate(maps):
                start = None if p is None else p[m]
                self._prox_one(image, w[m], steps[m], n_iter, method, nonneg, buffers, blocks, out[m], start)
        u = out.reshape(f.shape)
        return u if p is None else (u, p.reshape(*f.shape[:-2], 2, height, width))

    @staticmethod
    def _prox_guided(
        f: np.ndarray,
        maps: np.ndarray,
        weight: Any,
        n_iter: int,
        method: str,
        nonneg: bool,
        dual: Any,
        huber_delta: Any,
        strength: Any,
        direction: Any,
    ) -> Any:
        """Huber / directional-TV prox: one thread per map (`kernels.prox_maps_guided`)."""
        height, width = maps.shape[1:]
        w, steps, keeps, gammas = guided_parameters(weight, huber_delta, strength, maps.shape[0], f.dtype)
        if direction is None or not np.any(gammas):
            xi = np.zeros((1, 2, height, width), f.dtype)  # no direction: P is the identity
        else:
            xi = np.ascontiguousarray(_host(direction, "direction"), dtype=f.dtype).reshape(-1, 2, height, width)
        warm = dual is not None
        p = np.array(_host(dual, "dual"), dtype=f.dtype).reshape(-1, 2, height, width) if warm else None
        betas = np.fromiter(dual_momentum(n_iter, method), dtype=f.dtype, count=n_iter)
        out = np.empty_like(maps)
        stand_in = np.zeros((1, 2, 1, 1), f.dtype)
        with _threads_for(maps.size), _parallel_region():
            kernels.prox_maps_guided(
                maps,
                w,
                steps,
                keeps,
                gammas,
                xi,
                maps.shape[0] // xi.shape[0],
                betas,
                nonneg,
                out,
                stand_in if p is None else p,
                warm,
            )
        u = out.reshape(f.shape)
        return u if p is None else (u, p.reshape(*f.shape[:-2], 2, height, width))

    @staticmethod
    def _prox_one(
        image: np.ndarray,
        w: Any,
        step: Any,
        n_iter: int,
        method: str,
        nonneg: bool,
        buffers: list[np.ndarray],
        blocks: int,
        out: np.ndarray,
        start: np.ndarray | None = None,
    ) -> None:
        """Prox of one map; ``start`` (2, H, W), when given, is the first dual and receives the last one."""
        dtype = image.dtype.type
        prev, cur, nxt = buffers
        if start is not None:
            cur[...] = start
        for k, beta in enumerate(dual_momentum(n_iter, method)):
            # Without momentum p_prev is not needed: passing p_cur keeps stale memory out of the sum.
            before = cur if beta == 0.0 else prev
            with _parallel_region():
                kernels.dual_step(
                    image,
                    w,
                    step,
                    dtype(beta),
                    nonneg,
                    k == 0 and start is None,
                    before[0],
                    before[1],
                    cur[0],
                    cur[1],
                    nxt[0],
                    nxt[1],
                    blocks,
                )
            prev, cur, nxt = cur, nxt, prev
        with _parallel_region():
            kernels.primal(image, w, nonneg, cur[0], cur[1], out)
        if start is not None:
            start[...] = cur
