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

from ..objectives import Evaluation, prior_values, split_sums
from ..tv import dual_momentum, tv_weights
from ._cuda_source import GRADIENT_STEP, GUIDED_KERNELS, TV_KERNELS
from ._per_item import guided_parameters, is_guided, item_values, map_values, map_weights
from ._scratch import Scratch

__all__ = ["CupyEngine"]

_BLOCK = (32, 8, 1)
_GRID_Z = 65535  # CUDA's limit on the grid's z extent, which indexes maps and items
_CTYPES = {cupy.dtype(cupy.float32): "float", cupy.dtype(cupy.float64): "double"}


@cache
def _module(dtype: cupy.dtype) -> cupy.RawModule:
    ctype = _CTYPES[cupy.dtype(dtype)]
    source = f"typedef {ctype} T;\n" + (TV_KERNELS + GUIDED_KERNELS).replace("_T(", f"_{ctype}(")
    return cupy.RawModule(code=source, options=("-std=c++14",))


@cache
def _step_kernel(dtype: cupy.dtype) -> cupy.ElementwiseKernel:
    params, out, body = GRADIENT_STEP
    return cupy.ElementwiseKernel(params, out, body, "fusex_gradient_step")


def _int(value: int) -> numpy.int32:
    # Kernel arguments are passed by their NumPy type: C ints must arrive as int32.
    return numpy.int32(value)


def _bool(value: bool) -> numpy.bool_:
    return numpy.bool_(value)


def _grid(height: int, width: int, maps: int) -> tuple[int, int, int]:
    return ((width + _BLOCK[0] - 1) // _BLOCK[0], (height + _BLOCK[1] - 1) // _BLOCK[1], maps)


class CupyEngine:
    """Fused CUDA kernels; for torch CUDA tensors, data cross over by DLPack without copies."""

    name = "cupy"

    def __init__(self, torch_arrays: bool = False) -> None:
        self._torch = torch_arrays
        self._scratch = Scratch(cupy.empty)
        if torch_arrays:
            self.name = "cupy-kernels-on-torch"

    # -- array exchange -----------------------------------------------------------------------
    def _in(self, x: Any) -> cupy.ndarray:
        if isinstance(x, cupy.ndarray):
            return cupy.ascontiguousarray(x)
        if array_api_compat.is_torch_array(x) and x.is_cuda:
            return cupy.ascontiguousarray(cupy.from_dlpack(x.detach()))
        raise TypeError(f"the CuPy engine computes on GPU arrays, got {type(x).__module__}.{type(x).__name__}")

    def _out(self, x: cupy.ndarray) -> Any:
        if not self._torch:
            return x
        import torch

        return torch.from_dlpack(x)

    def _stream(self) -> Any:
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
        with self._stream():
            x_, h_, b_, w_ = (self._in(a) for a in (x, haadf, counts, weights))
            n_items, n_maps, height, width = x_.shape
            # Without a mask the kernel reads none; a one-element stand-in fills the pointer.
            m_ = cupy.ones(1, dtype=x_.dtype) if mask is None else self._in(mask).astype(x_.dtype, copy=False)
            x_pow_m1 = cupy.empty_like(x_)
            residual = cupy.empty((n_items, height, width), dtype=x_.dtype)
            sums = cupy.zeros((n_items, 1 + 2 * n_maps), dtype=cupy.float64)
            gm1 = self._items(numpy.asarray(gamma, dtype=numpy.float64) - 1.0, n_items, x_.dtype)
            _module(x_.dtype).get_function(f"evaluate_{_CTYPES[x_.dtype]}")(
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
                d_ = None if direction is None else self._in(direction)
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
        with self._stream():
            x_, b_, w_, p_, r_ = (self._in(a) for a in (x, counts, weights, ev.x_pow_m1, ev.residual))
            n_items, n_maps = x_.shape[:2]
            column = (n_items, 1, 1, 1)
            c_h, e_ = (self._items(v, n_items, x_.dtype).reshape(column) for v in (coef_h, eps))
            c_c = cupy.asarray(map_values(coef_c, n_items, n_maps, x_.dtype)).reshape(n_items, n_maps, 1, 1)
            floor = x_.dtype.type(0 if nonneg else -numpy.inf)
            residual = r_.reshape(n_items, 1, *r_.shape[1:])
            out = _step_kernel(x_.dtype)(x_, b_, w_, p_, residual, c_h, c_c, e_, floor)
        return self._out(out)

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
        with self._stream():
            f_ = self._in(f)
            if max(tv_weights(weight)) <= 0 or n_iter == 0:
                u = self._out(cupy.maximum(f_, 0) if nonneg else f_.copy())
                return u if dual is None else (u, dual)
            dtype = f_.dtype.type
            height, width = f_.shape[-2:]
            maps = f_.reshape(-1, height, width)
            if maps.shape[0] > _GRID_Z:
                raise ValueError(
                    f"the CUDA kernels take at most {_GRID_Z} maps per call, got {maps.shape[0]}; "
                    "split the stack into smaller ones"
                )
            if is_guided(huber_delta, strength, direction):
                prior = (huber_delta, strength, direction)
                return self._prox_guided(f_, maps, weight, n_iter, method, nonneg, dual, *prior)
            w, step = (cupy.asarray(a) for a in map_weights(weight, maps.shape[0], f_.dtype))
            grid = _grid(height, width, maps.shape[0])
            module = _module(f_.dtype)
            dual_step = module.get_function(f"dual_step_{_CTYPES[f_.dtype]}")
            buffers = [self._scratch.get(f"dual{b}", (2, *maps.shape), f_.dtype) for b in range(3)]
            prev, cur, nxt = buffers
            warm = dual is not None
            if warm:
                # (maps, 2, H, W) -> the kernels' (2, maps, H, W) layout; the caller's dual is only read
                cur[...] = cupy.moveaxis(self._in(dual).reshape(maps.shape[0], 2, height, width), 1, 0)
            for k, beta in enumerate(dual_momentum(n_iter, method)):
                before = cur if beta == 0.0 else prev
                dual_step(
                    grid,
                    _BLOCK,
                    (
                        maps,
                        w,
                        step,
                        dtype(beta),
                        _bool(nonneg),
                        _bool(k == 0 and not warm),
                        before[0],
                        before[1],
                        cur[0],
                        cur[1],
                        nxt[0],
                        nxt[1],
                        _int(height),
                        _int(width),
                    ),
                )
                prev, cur, nxt = cur, nxt, prev
            out = cupy.empty_like(maps)
            module.get_function(f"primal_{_CTYPES[f_.dtype]}")(
                grid, _BLOCK, (maps, w, _bool(nonneg), cur[0], cur[1], out, _int(height), _int(width))
            )
            if warm:
                dual_out = cupy.ascontiguousarray(cupy.moveaxis(cur, 0, 1)).reshape(*f_.shape[:-2], 2, height, width)
        u = self._out(out.reshape(f_.shape))
        return (u, self._out(dual_out)) if warm else u

    def _prox_guided(
        self,
        f_: cupy.ndarray,
        maps: cupy.ndarray,
        weight: Any,
        n_iter: int,
        method: str,
        nonneg: bool,
        dual: Any,
        huber_delta: Any,
        strength: Any,
        direction: Any,
    ) -> Any:
        """Huber / directional-TV prox (`GUIDED_KERNELS`): one launch per dual iteration for the whole stack."""
        dtype = f_.dtype.type
        n_maps, height, width = maps.shape
        host = guided_parameters(weight, huber_delta, strength, n_maps, f_.dtype)
        w, step, keep, gamma = (cupy.asarray(a) for a in host)
        if direction is None:
            xi = cupy.zeros((1, 2, height, width), f_.dtype)  # no direction: P is the identity
        else:
            xi = cupy.ascontiguousarray(self._in(direction).astype(f_.dtype, copy=False).reshape(-1, 2, height, width))
        per_field = _int(n_maps // xi.shape[0])
        grid = _grid(height, width, n_maps)
        module = _module(f_.dtype)
        dual_step = module.get_function(f"dual_step_guided_{_CTYPES[f_.dtype]}")
        prev, cur, nxt = (self._scratch.get(f"dual{b}", (2, *maps.shape), f_.dtype) for b in range(3))
        warm = dual is not None
        if warm:
            cur[...] = cupy.moveaxis(self._in(dual).reshape(n_maps, 2, height, width), 1, 0)
        for k, beta in enumerate(dual_momentum(n_iter, method)):
            before = cur if beta == 0.0 else prev
            args = (maps, w, step, keep, gamma, xi, per_field, dtype(beta), _bool(nonneg), _bool(k == 0 and not warm))
            buffers = (before[0], before[1], cur[0], cur[1], nxt[0], nxt[1])
            dual_step(grid, _BLOCK, (*args, *buffers, _int(height), _int(width)))
            prev, cur, nxt = cur, nxt, prev
        out = cupy.empty_like(maps)
        module.get_function(f"primal_guided_{_CTYPES[f_.dtype]}")(
            grid, _BLOCK, (maps, w, gamma, xi, per_field, _bool(nonneg), cur[0], cur[1], out, _int(height), _int(width))
        )
        u = self._out(out.reshape(f_.shape))
        if not warm:
            return u
        dual_out = cupy.ascontiguousarray(cupy.moveaxis(cur, 0, 1)).reshape(*f_.shape[:-2], 2, height, width)
        return u, self._out(dual_out)
