"""Compute engines and what this machine can run.

An engine supplies the solver's three hot functions, ``evaluate``,
``gradient_step`` and ``tv_prox``, with the signatures of the generic
array-API versions in `fusex.objectives` and `fusex.tv`.  The generic engine
runs on any array library; compiled engines (numba on the CPU, CUDA kernels
on a GPU) replace it where they apply and are parity-tested against it.
Which library and engine exist, and where each applies, is listed once, in
`fusex.backends.registry`.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any, Protocol

from ..errors import BackendUnavailableError
from . import registry
from .registry import AUTO, warn_deprecated

__all__ = ["Engine", "available", "select_engine"]


class Engine(Protocol):
    """The solver's hot functions for one backend (one engine object serves one solve).

    ``evaluate`` returns a `fusex.objectives.Evaluation`.  An engine may also
    have ``session()``, a context manager that `fusex.solver.solve` holds for
    the whole solve (the numba engine keeps NumPy's BLAS on one thread there,
    with `fusex._blas.one_blas_thread`; a fusion of NumPy arrays holds that
    from its input checks to its result as well).
    """

    name: str
    evaluate: Callable[..., Any]
    gradient_step: Callable[..., Any]
    tv_prox: Callable[..., Any]


def select_engine(xp: ModuleType, device: Any = None, engine: str = AUTO) -> Engine:
    """Return a new engine for a resolved namespace and device.

    Parameters
    ----------
    xp : module
        The array namespace the solve runs in.
    device : object
        The device the arrays live on.
    engine : {"auto", "generic", "numba", "cuda"}
        ``"auto"`` (default) takes the numba kernels for NumPy on the CPU when
        numba is installed, the fused CUDA kernels for CuPy arrays and for
        torch CUDA tensors when CuPy is installed, and the generic array-API
        code for everything else.  A name demands that engine.

    Raises
    ------
    ValueError
        If ``engine`` is unknown or does not run on these arrays.
    BackendUnavailableError
        If ``engine`` needs a package that is not installed.

    Notes
    -----
    The former call ``select_engine(backend, xp, device)`` still works and
    warns: a ``backend`` string or None in first place is read that way.
    """
    if xp is None or isinstance(xp, str):
        warn_deprecated("select_engine(backend, xp, device) is deprecated: call select_engine(xp, device, engine=...)")
        backend, xp, device = xp, device, None if engine == AUTO else engine
        _, engine = registry.resolve_request(backend)
    record = registry.select(xp, device, engine)
    try:
        return record.factory(xp, device)
    except BackendUnavailableError:
        raise
    except ImportError as exc:  # installed, but broken (e.g. built for another NumPy)
        raise BackendUnavailableError(
            f"the {record.name} engine needs {record.needs}, which does not import here ({exc}): "
            f"{record.install_hint()}"
        ) from exc


def available() -> dict[str, bool]:
    """Report which backends this machine can run.

    Returns
    -------
    dict
        One entry per library on each device kind it runs on, the library's
        name for its first (``"torch"`` is torch on the CPU) and
        ``"<name>-<kind>"`` for the others (``"torch-cuda"``), and one per
        engine that needs a package of its own (``"numba"``):
        ``{"numpy": True, "array_api_strict": ..., "torch": ...,
        "torch-cuda": ..., "cupy": ..., "numba": ...}``.  GPU entries are True
        only when a CUDA device is usable.

    """
    report = {
        lib.name if kind == lib.devices[0] else f"{lib.name}-{kind}": lib.usable(kind)
        for lib in registry.LIBRARIES
        for kind in lib.devices
    }
    modules = {lib.module for lib in registry.LIBRARIES}
    report |= {r.name: r.installed() for r in registry.ENGINES if r.needs is not None and r.needs not in modules}
    return report
