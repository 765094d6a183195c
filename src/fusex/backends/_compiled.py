r"""The TV prox that the compiled engines share: each engine supplies only its kernels.

`CompiledEngine.tv_prox` holds what does not depend on where the kernels run:
the early return (no positive weight, or no iteration), the per-map dual
parameters, the direction field, the warm-start dual's intake and the shape of
the result.  `dual_iterations` holds the dual iteration itself as the host
drives it: FISTA's momentum sequence and the rotation of three dual buffers
(previous, current, next), calling the engine's kernel once per iteration.
An engine subclasses `CompiledEngine` and supplies its array exchange and
`CompiledEngine._prox`, which runs the kernels on a `ProxProblem`.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from .._per_item import any_positive, guided_parameters, is_guided
from ..tv import dual_momentum

__all__ = ["DUAL_FLOOR", "CompiledEngine", "DualStep", "ProxProblem", "dual_iterations", "momentum"]

DUAL_FLOOR = 1e-19
"""Dual components smaller than this are stored as 0 by every compiled kernel.

Where a map is flat the dual decays geometrically through the subnormal range,
and arithmetic on subnormal floats is many times slower on x86 (a warm-started
3x512² prox ran 3x slower); a dual this small moves the map by less than
``weight * 1e-19``.  The CUDA kernels apply the same floor, so that the engines agree.
"""

DualStep = Callable[[float, bool, tuple[Any, Any, Any, Any, Any, Any]], None]
"""One dual iteration on the device: ``step(beta, zero_start, planes)``.

``planes`` is ``(py_prev, px_prev, py_cur, px_cur, py_out, px_out)``; ``zero_start``
means the extrapolated dual point is 0 (the first iteration of a cold start), so
no input plane is read.
"""


@dataclass(frozen=True)
class ProxProblem:
    r"""One prox call as the kernels take it: a stack of maps and the dual parameters of each.

    Attributes
    ----------
    maps : array
        ``(M, H, W)``, C-contiguous, in the engine's array library.
    weights, steps, keeps, strengths : array
        ``(M,)`` of the maps' dtype: :math:`w`, the dual step :math:`s`, the
        momentum keep :math:`a` and the direction strength :math:`\gamma_d`
        (`fusex._per_item.guided_parameters`; for TV :math:`a = 1`, :math:`\gamma_d = 0`).
    xi : array
        The direction fields ``(F, 2, H, W)``; zeros when no map is pulled along
        a direction, and a ``(1, 2, 1, 1)`` stand-in that no kernel reads for TV.
    maps_per_field : int
        Map ``m`` takes the field ``xi[m // maps_per_field]``.
    nonneg : bool
        Whether the prox projects onto :math:`u \ge 0`.
    guided : bool
        Whether any map's prior is Huber or directional TV (the general dual step);
        otherwise every map's prior is TV.
    """

    maps: Any
    weights: Any
    steps: Any
    keeps: Any
    strengths: Any
    xi: Any
    maps_per_field: int
    nonneg: bool
    guided: bool


def momentum(n_iter: int, method: str, dtype: Any) -> np.ndarray:
    """Return the momentum weights of `fusex.tv.dual_momentum` as a host array (for kernels that run them all)."""
    return np.fromiter(dual_momentum(n_iter, method), dtype=dtype, count=n_iter)


def dual_iterations(step: DualStep, n_iter: int, method: str, buffers: Sequence[Any], start: Any = None) -> Any:
    """Run ``n_iter`` dual iterations through ``step`` and return the buffer that holds the last iterate.

    Parameters
    ----------
    step : callable
        The engine's dual kernel (`DualStep`).
    n_iter : int
        Number of iterations.
    method : {"fgp", "gp"}
        With or without FISTA momentum (`fusex.tv.dual_momentum`).
    buffers : sequence of three arrays
        Scratch arrays whose first axis holds :math:`(p_y, p_x)`; their contents on entry do not matter.
    start : array, optional
        The first dual iterate, in the buffers' layout; without it the dual starts at 0.
    """
    prev, cur, nxt = buffers
    if start is not None:
        cur[...] = start
    for k, beta in enumerate(dual_momentum(n_iter, method)):
        # Without momentum p_prev is not read: passing p_cur keeps stale memory out of the sum.
        before = cur if beta == 0.0 else prev
        step(beta, k == 0 and start is None, (before[0], before[1], cur[0], cur[1], nxt[0], nxt[1]))
        prev, cur, nxt = cur, nxt, prev
    return cur


class CompiledEngine(ABC):
    """The TV prox of a compiled engine, less its kernels.

    A subclass sets `array` and supplies `_in` (and `_out`, `_device` where its
    arrays need them) and `_prox`.
    """

    name: str
    array: ClassVar[ModuleType]
    """The engine's array library (NumPy or CuPy)."""

    max_maps: ClassVar[int | None] = None
    """The most maps one kernel launch takes (``None``: no limit)."""

    @abstractmethod
    def _in(self, x: Any, name: str) -> Any:
        """Return ``x`` as a C-contiguous array of the engine's library, or raise `TypeError` naming ``name``."""

    def _out(self, x: Any) -> Any:
        """Return a result array in the form the caller passed its arrays in."""
        return x

    def _device(self) -> contextlib.AbstractContextManager[Any]:
        """Context in which the engine's work runs (a device stream, for instance)."""
        return contextlib.nullcontext()

    @abstractmethod
    def _prox(self, problem: ProxProblem, n_iter: int, method: str, start: Any) -> tuple[Any, Any]:
        """Run the prox: return ``u`` ``(M, H, W)`` and, when ``start`` is given, the last dual ``(M, 2, H, W)``.

        ``start`` (``(M, 2, H, W)`` of the maps' dtype, or ``None`` for a cold
        start) is the caller's dual: it is only read, and the returned dual is a
        new array.
        """

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
        with self._device():
            f_ = self._in(f, "f")
            if not any_positive(weight) or n_iter == 0:
                u = self._out(self.array.maximum(f_, 0) if nonneg else f_.copy())
                return u if dual is None else (u, dual)
            height, width = f_.shape[-2:]
            maps = f_.reshape(-1, height, width)
            if self.max_maps is not None and maps.shape[0] > self.max_maps:
                raise ValueError(
                    f"the {self.name} engine's kernels take at most {self.max_maps} maps per call, "
                    f"got {maps.shape[0]}; split the stack into smaller ones"
                )
            problem = self._problem(maps, weight, nonneg, huber_delta, strength, direction)
            start = None
            if dual is not None:
                start = self._in(dual, "dual").astype(f_.dtype, copy=False).reshape(-1, 2, height, width)
            u, last = self._prox(problem, n_iter, method, start)
            u = self._out(u.reshape(f_.shape))
            if dual is None:
                return u
            return u, self._out(last.reshape(*f_.shape[:-2], 2, height, width))

    def _problem(
        self, maps: Any, weight: Any, nonneg: bool, huber_delta: Any, strength: Any, direction: Any
    ) -> ProxProblem:
        n_maps, height, width = maps.shape
        guided = is_guided(huber_delta, strength, direction)
        if not guided:  # TV: a = 1 and gamma_d = 0 whatever the other keywords hold
            huber_delta, strength = 0.0, 0.0
        host = guided_parameters(weight, huber_delta, strength, n_maps, maps.dtype)
        if not guided:
            xi = self.array.zeros((1, 2, 1, 1), maps.dtype)
        elif direction is None or not np.any(host[3]):
            xi = self.array.zeros((1, 2, height, width), maps.dtype)  # no direction: P is the identity
        else:
            field = self._in(direction, "direction").astype(maps.dtype, copy=False)
            xi = self.array.ascontiguousarray(field).reshape(-1, 2, height, width)
        w, s, a, g = (self.array.asarray(v) for v in host)
        return ProxProblem(maps, w, s, a, g, xi, n_maps // xi.shape[0], nonneg, guided)
