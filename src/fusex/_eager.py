"""The eager fusion of in-memory arrays, and the run options every route shares.

`fusex.fuse` checks its run options once into a `RunOptions` and routes: the
labeled layer (`fusex.labeled`), `fusex.tune` and its hold-out fits all fuse
their arrays here, with `fuse_arrays`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import array_api_compat
import numpy as np

from ._blas import one_blas_thread
from ._xp import convert
from .backends import select_engine
from .backends.registry import resolve_request
from .inputs import validate
from .memory import plan_batch_size
from .params import FusionParams
from .result import FusionResult
from .result._assembly import assemble
from .solver import IterationState, solve

__all__ = ["DIVERGENCE_POLICIES", "RunOptions", "fuse_arrays"]

DIVERGENCE_POLICIES = ("raise", "mark")
"""Values of ``on_divergence``: raise `FusionDivergedError`, or mark the item diverged and go on."""


@dataclass(frozen=True)
class RunOptions:
    """How a fusion runs, as opposed to what it fuses: checked once, where `fusex.fuse` is called.

    Attributes
    ----------
    backend : str or None
        The array library to compute with (None: the inputs' own).
    engine : str
        The compute engine (``"auto"``: chosen for the backend and device).
    device : str, device or None
        The device to compute on (None: the inputs' own).
    batch_size : int or None
        Items solved at once (None: as many as fit in memory).
    on_divergence : {"raise", "mark"}
        What a diverging item does.
    progress : bool
        Show a progress bar.
    callback : callable or None
        ``callback(iteration, state)`` after every iteration.

    """

    backend: str | None = None
    engine: str = "auto"
    device: Any = None
    batch_size: int | None = None
    on_divergence: str = "raise"
    progress: bool = False
    callback: Callable[[int, IterationState], Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.engine, str):
            raise TypeError(f"`engine` must be an engine name (str), default 'auto'; got {type(self.engine).__name__}")
        # A deprecated backend (backend="numba") warns here, once, and becomes its library and engine.
        backend, engine = resolve_request(self.backend, self.engine)
        object.__setattr__(self, "backend", backend)
        object.__setattr__(self, "engine", engine)
        if self.on_divergence not in DIVERGENCE_POLICIES:
            raise ValueError(f"`on_divergence` must be 'raise' or 'mark', got {self.on_divergence!r}")
        if self.callback is not None and not callable(self.callback):
            raise TypeError(f"`callback` must be callable, callback(iteration, state), or None; got {self.callback!r}")

    def keywords(self) -> dict[str, Any]:
        """Return the options as the keywords of `fusex.fuse` (and `fusex.tune`) that set them."""
        return asdict(self)


def fuse_arrays(
    haadf: Any,
    maps: Any,
    *,
    elements: Sequence[str] | None = None,
    z: Sequence[int] | None = None,
    params: FusionParams | None = None,
    run: RunOptions | None = None,
    saturated: Any = "auto",
    negative: str = "raise",
    start: np.ndarray | None = None,
) -> FusionResult:
    """Fuse in-memory arrays (NumPy, CuPy, torch, array-api-strict), in minibatches that fit the device.

    Parameters are those of `fusex.fuse` for array input, with the run
    options in ``run`` (default `RunOptions()`); the result comes back in the inputs' library and on
    their device.  ``start`` (host array ``(n, E, H, W)``, one row per flat batch item, in the
    solver's normalized units, as `FusionResult.maps` holds them) is where each item's iterations
    begin instead of its counts (a NaN there: from the counts): `fusex.tune` continues its screened
    candidates from there.

    Returns
    -------
    FusionResult

    """
    if maps is None:
        raise TypeError("`maps` is missing: pass the elemental maps, or one xarray.Dataset holding HAADF and maps")
    run = RunOptions() if run is None else run
    # BLAS on one thread (as `NumbaEngine.session` keeps it during a solve), from the input checks to the
    # result: every BLAS sum of a fusion is then the same whether or not another runs alongside.
    with one_blas_thread() if isinstance(maps, np.ndarray) else contextlib.nullcontext():
        return _fuse_arrays(haadf, maps, params, run, start, elements, z, saturated, negative)


def _fuse_arrays(
    haadf: Any,
    maps: Any,
    params: FusionParams | None,
    run: RunOptions,
    start: Any,
    elements: Any,
    z: Any,
    saturated: Any,
    negative: str,
) -> FusionResult:
    params = FusionParams() if params is None else params
    if not isinstance(params, FusionParams):
        raise TypeError(f"`params` must be a FusionParams (or None), got {type(params).__name__}")
    checked = validate(
        haadf,
        maps,
        elements=elements,
        z=z,
        normalize=params.normalize,
        backend=run.backend,
        device=run.device,
        params_batch=params.batch_shape,
        saturated=saturated,
        negative=negative,
    )
    params.check_elements(checked.elements)
    itemsize = 8 if checked.maps.dtype == array_api_compat.array_namespace(checked.maps).float64 else 4
    params.check_dtype(np.float64 if itemsize == 8 else np.float32)
    engine = select_engine(checked.xp, checked.device, run.engine)
    n_items = checked.n_items
    size = plan_batch_size(
        n_items,
        tuple(checked.maps.shape[-3:]),
        itemsize,
        engine.name,
        checked.xp,
        checked.device,
        run.batch_size,
        masked=checked.mask is not None,
    )
    if start is not None and tuple(start.shape) != (n_items, *checked.maps.shape[-3:]):
        raise ValueError(f"`start` must have shape {(n_items, *checked.maps.shape[-3:])}, got {tuple(start.shape)}")
    parts = []
    for start_at in range(0, n_items, size):
        problem = checked.chunk(np.arange(start_at, min(n_items, start_at + size)))
        options = {"callback": run.callback, "progress": run.progress, "on_divergence": run.on_divergence}
        if start is not None:
            rows = start[start_at : start_at + problem.counts.shape[0]]
            options["start"] = convert(np.asarray(rows, dtype=np.float64), checked.xp, checked.device)
            options["start"] = checked.xp.astype(options["start"], problem.counts.dtype)
        parts.append(solve(problem, params, engine, **options))
        del problem  # free the device copy before the next minibatch is loaded
    return assemble(checked, params, engine.name, parts)
