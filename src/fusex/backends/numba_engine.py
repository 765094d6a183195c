"""The numba engine: the generic algorithm's three hot functions as CPU kernels.

`NumbaEngine.evaluate`, `.gradient_step` and `.tv_prox` have the signatures
of their generic counterparts in `fusex.objectives` and `fusex.tv` and are
parity-tested against them.  They accept NumPy arrays only and raise for
anything else (never copying device memory to the host behind the caller's
back).  An engine instance keeps scratch buffers for one solve, so the
inner loops do not pay for fresh memory every iteration.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import numba
import numpy as np

from ..objectives import Evaluation
from ..tv import dual_momentum
from . import _numba_kernels as kernels
from ._scratch import Scratch

__all__ = ["PARALLEL_MIN_PIXELS", "NumbaEngine"]

PARALLEL_MIN_PIXELS = 256 * 256
"""Maps with fewer pixels run on one thread: below this, waking the other threads costs about
what they save, and far more when other processes keep the cores busy."""


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
        gamma: float,
        eps: float,
        lambdas: tuple[float, float, float],
        xp: ModuleType,
    ) -> Evaluation:
        """Evaluate every cost term at ``x`` (see `fusex.objectives.evaluate`)."""
        x = _host(x, "x")
        dtype = x.dtype.type
        # NumPy's SIMD log and exp outrun numba's scalar libm calls several times over, and
        # exp((gamma-1) log x) beats np.power, which leaves its fast path on the zeros of sparse maps.
        x_pow_m1 = np.empty_like(x)
        if gamma == 1.0:
            x_pow_m1.fill(1)
        else:
            with np.errstate(divide="ignore"):  # log 0 = -inf, and exp(-inf) = 0 = 0**(gamma-1)
                np.log(x, out=x_pow_m1)
            np.exp(np.multiply(x_pow_m1, dtype(gamma - 1.0), out=x_pow_m1), out=x_pow_m1)
        logs = self._scratch.get("log", x.shape, x.dtype)
        np.log(np.add(x, dtype(eps), out=logs), out=logs)
        residual = np.empty(x.shape[1:], dtype=x.dtype)
        partials = self._scratch.get("partials", (x.shape[1], 3), np.float64)
        with _threads_for(x[0].size):
            kernels.evaluate(
                x,
                _host(haadf, "haadf"),
                _host(counts, "counts"),
                _host(weights, "weights").reshape(-1),
                x_pow_m1,
                logs,
                residual,
                partials,
            )
        sq, poisson, tv = (float(v) for v in partials.sum(axis=0))
        psi1 = 0.5 * sq
        lam_h, lam_c, lam_tv = lambdas
        return Evaluation(psi1, poisson, tv, lam_h * psi1 + lam_c * poisson + lam_tv * tv, x_pow_m1, residual)

    def gradient_step(
        self,
        x: Any,
        counts: Any,
        weights: Any,
        ev: Evaluation,
        *,
        gamma: float,
        eps: float,
        lam_h: float,
        lam_c: float,
        eta: float,
        xp: ModuleType,
    ) -> Any:
        """Projected gradient step (see `fusex.objectives.gradient_step`)."""
        x = _host(x, "x")
        dtype = x.dtype.type
        out = np.empty_like(x)
        with _threads_for(x[0].size):
            kernels.gradient_step(
                x,
                _host(counts, "counts"),
                _host(weights, "weights").reshape(-1),
                ev.x_pow_m1,
                ev.residual,
                dtype(eta * gamma * lam_h),
                dtype(eta * lam_c),
                dtype(eps),
                out,
            )
        return out

    def tv_prox(
        self, f: Any, weight: float, n_iter: int, *, method: str = "fgp", nonneg: bool = True, xp: ModuleType
    ) -> Any:
        """TV prox of each map on the last two axes (see `fusex.tv.tv_prox`)."""
        f = _host(f, "f")
        if weight <= 0 or n_iter == 0:
            return np.maximum(f, 0) if nonneg else f.copy()
        dtype = f.dtype.type
        maps = f.reshape(-1, *f.shape[-2:])
        out = np.empty_like(maps)
        height, width = maps.shape[-2:]
        # A few bands per thread balance the load; each band re-forms one primal row.
        blocks = max(1, min(height, 4 * numba.get_num_threads()))
        w, step = dtype(weight), dtype(1.0 / (8.0 * weight))
        # Three rotating dual buffers: previous, current and next iterate.
        buffers = [self._scratch.get(f"dual{b}", (2, height, width), f.dtype) for b in range(3)]
        with _threads_for(height * width):
            for m, image in enumerate(maps):
                self._prox_one(image, w, step, n_iter, method, nonneg, buffers, blocks, out[m])
        return out.reshape(f.shape)

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
    ) -> None:
        dtype = image.dtype.type
        prev, cur, nxt = buffers
        for k, beta in enumerate(dual_momentum(n_iter, method)):
            # Without momentum p_prev is not needed: passing p_cur keeps stale memory out of the sum.
            before = cur if beta == 0.0 else prev
            kernels.dual_step(
                image,
                w,
                step,
                dtype(beta),
                nonneg,
                k == 0,
                before[0],
                before[1],
                cur[0],
                cur[1],
                nxt[0],
                nxt[1],
                blocks,
            )
            prev, cur, nxt = cur, nxt, prev
        kernels.primal(image, w, nonneg, cur[0], cur[1], out)
