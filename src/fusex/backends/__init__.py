"""Compute engines and what this machine can run.

An engine supplies the solver's three hot functions, ``evaluate``,
``gradient_step`` and ``tv_prox``, with the signatures of the generic
array-API versions in `fusex.objectives` and `fusex.tv`.  The generic engine
runs on any array library; compiled engines (numba on CPU) replace it where
they apply and are parity-tested against it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

import array_api_compat

from .. import objectives, tv
from .._xp import BackendUnavailableError

__all__ = ["Engine", "available", "select_engine"]


class Engine(Protocol):
    """The solver's hot functions for one backend (one engine object serves one solve)."""

    name: str
    evaluate: Callable[..., objectives.Evaluation]
    gradient_step: Callable[..., Any]
    tv_prox: Callable[..., Any]


@dataclass(frozen=True)
class _Functions:
    name: str
    evaluate: Callable[..., objectives.Evaluation]
    gradient_step: Callable[..., Any]
    tv_prox: Callable[..., Any]


GENERIC: Engine = _Functions("generic", objectives.evaluate, objectives.gradient_step, tv.tv_prox)


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _numba_engine() -> Engine:
    try:
        from .numba_engine import NumbaEngine
    except ImportError as exc:
        raise BackendUnavailableError('backend "numba" needs numba: pip install "fusex[numba]"') from exc
    return NumbaEngine()


def _cupy_engine(torch_arrays: bool) -> Engine:
    from .cupy_engine import CupyEngine

    return CupyEngine(torch_arrays=torch_arrays)


def select_engine(backend: str | None, xp: ModuleType, device: Any = None) -> Engine:
    """Return a new engine for a resolved namespace and device.

    ``backend="numba"`` demands the numba engine and ``backend=None`` takes it
    for NumPy when numba is installed; ``backend="numpy"`` forces the generic
    code.  CuPy arrays, and torch CUDA tensors when CuPy is installed, run the
    fused CUDA kernels.  Everything else runs the generic code.
    """
    if backend == "numba" or (backend is None and array_api_compat.is_numpy_namespace(xp) and _has("numba")):
        return _numba_engine()
    if array_api_compat.is_cupy_namespace(xp):
        return _cupy_engine(torch_arrays=False)
    if array_api_compat.is_torch_namespace(xp) and getattr(device, "type", None) == "cuda" and _has("cupy"):
        return _cupy_engine(torch_arrays=True)
    return GENERIC


def available() -> dict[str, bool]:
    """Report which backends this machine can run.

    Returns
    -------
    dict
        ``{"numpy": True, "numba": ..., "array_api_strict": ..., "torch": ...,
        "torch-cuda": ..., "cupy": ...}``; GPU entries are True only when a
        CUDA device is usable.

    """
    report = {
        "numpy": True,
        "numba": _has("numba"),
        "array_api_strict": _has("array_api_strict"),
        "torch": _has("torch"),
        "torch-cuda": False,
        "cupy": False,
    }
    if report["torch"]:
        import torch

        report["torch-cuda"] = bool(torch.cuda.is_available())
    if _has("cupy"):
        try:
            import cupy

            report["cupy"] = cupy.cuda.runtime.getDeviceCount() > 0
        except Exception:  # CuPy raises its own runtime error class when no driver or GPU is present
            report["cupy"] = False
    return report
