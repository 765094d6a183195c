"""Fused CUDA kernels through CuPy, for CuPy arrays and (zero-copy) torch CUDA tensors.

`CupyEngine.evaluate`, `.gradient_step` and `.tv_prox` have the signatures
of the generic functions in `fusex.objectives` and `fusex.tv` and are
parity-tested against them.  Each TV dual iteration is one kernel launch for
the whole stack of maps, and the cost terms are reduced on the device, so one
iteration moves 1 + 2E numbers per item to the host.
"""

from __future__ import annotations

from functools import cache
from types import ModuleType
from typing import Any

import array_api_compat
import array_api_compat.cupy
import cupy
import numpy

from .._per_item import is_guided, item_values, map_values
from ..objectives import Evaluation, prior_values, split_sums
from . import _cuda_program as program
from ._compiled import CompiledEngine, ProxProblem, dual_iterations
from ._scratch import Scratch
from .registry import engine_record

__all__ = ["CupyEngine"]

_BLOCK = (32, 8, 1)


@cache
def _module(ctype: str) -> cupy.RawModule:
    # One module per type: a float32 solve compiles only the float instantiations.
    return cupy.RawModule(
        code=program.source(), options=program.OPTIONS, name_expressions=program.name_expressions(ctype)
    )


def _kernel(name: str, dtype: Any) -> cupy.RawKernel:
    """Return the kernel ``name`` of `kernels.cu` instantiated for ``dtype`` (float32 or float64)."""
    ctype = program.CTYPES[numpy.dtype(dtype).name]
    return _module(ctype).get_function(program.name_expression(name, ctype))


def _int(value: int) -> numpy.int32:
    # Kernel arguments are passed by their NumPy type: C ints must arrive as int32.
    return numpy.int32(value)


def _bool(value: bool) -> numpy.bool_:
    return numpy.bool_(value)


def _grid(height: int, width: int, maps: int) -> tuple[int, int, int]:
    return ((width + _BLOCK[0] - 1) // _BLOCK[0], (height + _BLOCK[1] - 1) // _BLOCK[1], maps)


class CupyEngine(CompiledEngine):
    """Fused CUDA kernels; for torch CUDA tensors, data cross over by DLPack without copies."""

    name = "cupy"
    array = cupy
    max_maps = engine_record("cuda").max_maps  # the grid's z extent indexes the maps

    def __init__(self, torch_arrays: bool = False) -> None:
        self._torch = torch_arrays
        self._scratch = Scratch(cupy.empty)
        if torch_arrays:
            self.name = "cupy-kernels-on-torch"

    # -- array exchange -----------------------------------------------------------------------
    def _in(self, x: Any, name: str) -> cupy.ndarray:
        if isinstance(x, cupy.ndarray):
            return cupy.ascontiguousarray(x)
        if array_api_compat.is_torch_array(x) and x.is_cuda:
            return cupy.ascontiguousarray(cupy.from_dlpack(x.detach()))
        raise TypeError(
            f"the CuPy engine computes on GPU arrays, but `{name}` is a {type(x).__module__}.{type(x).__name__}; "
            "move it to the GPU first"
        )

    def _out(self, x: cupy.ndarray) -> Any:
        if not self._torch:
            return x
        import torch

        return torch.from_dlpack(x)

    def _device(self) -> Any:
        if not self._torch:
            return cupy.cuda.get_current_stream()
        import torch

        stream = torch.cuda.current_stream()
        # Work on torch's stream, so that no synchronization is needed between the two libraries.
        if hasattr(cupy.cuda.Stream, "from_external"):
            return cupy.cuda.Stream.from_external(stream)
        return cupy.cuda.ExternalStream(stream.cuda_stream)

    # -- the three hot functions ----------------------------------------------------------------
    def _items(self, values: Any, n: int, dtype: Any) -> cupy.ndarray:
        """Per-item scalars (a number or ``n`` values) as a device array of ``n`` values."""
        return cupy.asarray(item_values(values, n, dtype))

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
        with self._device():
            x_, h_, b_, w_ = (
                self._in(a, n) for a, n in ((x, "x"), (haadf, "haadf"), (counts, "counts"), (weights, "weights"))
            )
            n_items, n_maps, height, width = x_.shape
            # Without a mask the kernel reads none; a one-element stand-in fills the pointer.
            m_ = cupy.ones(1, dtype=x_.dtype) if mask is None else self._in(mask, "mask").astype(x_.dtype, copy=False)
            x_pow_m1 = cupy.empty_like(x_)
            residual = cupy.empty((n_items, height, width), dtype=x_.dtype)
            sums = cupy.zeros((n_items, 1 + 2 * n_maps), dtype=cupy.float64)
            gm1 = self._items(numpy.asarray(gamma, dtype=numpy.float64) - 1.0, n_items, x_.dtype)
            _kernel("evaluate", x_.dtype)(
                _grid(height, width, n_items),
                _BLOCK,
                (
                    x_,
                    h_,
                    b_,
                    cupy.ascontiguousarray(w_.reshape(n_items, n_maps)),
                    gm1,
                    self._items(eps, n_items, x_.dtype),
                    x_pow_m1,
                    residual,
                    sums,
                    _int(n_maps),
                    _int(height),
                    _int(width),
                    m_,
                    _bool(mask is not None),
                ),
            )
            if is_guided(huber_delta, strength, direction):
                # The kernel sums TV; other priors are summed by CuPy's array code.
                d_ = None if direction is None else self._in(direction, "direction")
                prior = prior_values(x_, array_api_compat.cupy, huber_delta, strength, d_)
                sums[:, 1 + n_maps :] = cupy.sum(prior, axis=(-2, -1), dtype=cupy.float64)
            host = sums.get()
        return split_sums(host, self._out(x_pow_m1), self._out(residual))

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
        with self._device():
            names = ("x", "counts", "weights", "x_pow_m1", "residual")
            arrays = (x, counts, weights, ev.x_pow_m1, ev.residual)
            x_, b_, w_, p_, r_ = (self._in(a, n) for a, n in zip(arrays, names))
            n_items, n_maps, height, width = x_.shape
            out = cupy.empty_like(x_)
            _kernel("gradient_step", x_.dtype)(
                _grid(height, width, n_items),
                _BLOCK,
                (
                    x_,
                    b_,
                    cupy.ascontiguousarray(w_.reshape(n_items, n_maps)),
                    p_,
                    r_,
                    self._items(coef_h, n_items, x_.dtype),
                    cupy.asarray(map_values(coef_c, n_items, n_maps, x_.dtype)),
                    self._items(eps, n_items, x_.dtype),
                    x_.dtype.type(0 if nonneg else -numpy.inf),
                    out,
                    _int(n_maps),
                    _int(height),
                    _int(width),
                ),
            )
        return self._out(out)

    def _prox(self, problem: ProxProblem, n_iter: int, method: str, start: Any) -> tuple[cupy.ndarray, Any]:
        """One launch per dual iteration for the whole stack, in ``(2, M, H, W)`` dual buffers."""
        maps = problem.maps
        n_maps, height, width = maps.shape
        dtype = maps.dtype
        prior = "guided" if problem.guided else "tv"
        grid = _grid(height, width, n_maps)
        per_field = _int(problem.maps_per_field)
        dual_step = _kernel(f"{prior}_dual_step", dtype)
        parameters = (maps, problem.weights, problem.steps, problem.keeps, problem.strengths, problem.xi, per_field)
        nonneg, shape = _bool(problem.nonneg), (_int(height), _int(width))

        def step(beta: float, zero_start: bool, planes: tuple[Any, ...]) -> None:
            dual_step(grid, _BLOCK, (*parameters, dtype.type(beta), nonneg, _bool(zero_start), *planes, *shape))

        buffers = [self._scratch.get(f"dual{b}", (2, *maps.shape), dtype) for b in range(3)]
        # The kernels' dual layout is (2, M, H, W); the caller's (M, 2, H, W) dual is only read.
        last = dual_iterations(step, n_iter, method, buffers, None if start is None else cupy.moveaxis(start, 1, 0))
        out = cupy.empty_like(maps)
        arguments = (maps, problem.weights, problem.strengths, problem.xi, per_field, nonneg, last[0], last[1], out)
        _kernel(f"{prior}_primal", dtype)(grid, _BLOCK, (*arguments, *shape))
        # A copy in C order: the last iterate lives in a scratch buffer that the next call overwrites.
        return out, None if start is None else cupy.moveaxis(last, 0, 1).copy()
