"""Shared machinery of the fusex benchmarks: the backends and the `XPBenchmark` base class.

Every benchmark class derives from `XPBenchmark`, which puts a ``backend``
parameter (``numpy``, ``numba``, ``torch-cpu``, ``torch-cuda``, ``cupy``) in
front of the class's own parameters, on the shape of SciPy's benchmark base of
the same name.  A benchmark's ``setup(self, backend, ...)``

* calls ``super().setup(backend, operation)``, which raises
  `NotImplementedError` when the backend cannot run here (asv then shows the
  case as skipped, ``n/a``) and sets ``self.func``: the operation followed by
  the device's synchronization (``torch.cuda.synchronize`` or the CuPy
  stream's ``synchronize``), so that a GPU timing covers the work and not only
  its launch;
* skips a case too large for the backend (`XPBenchmark.check_size`), builds its
  inputs on the backend's device with ``self.target.asarray``;
* ends with `XPBenchmark.warm_up`, which runs the operation once per process,
  untimed, so that numba compilation, CUDA context creation, kernel
  compilation and the memory pools' first allocations are not timed.

The timed methods call ``self.func()``.  Only fusex's public API is used.  The
backend labels and what each runs on come from `fusex.backends.registry`:
every target but the test suite's ``array_api_strict``, and the engines made
for one library and device alone (``numba``).  For commits older than the
registry the same five labels are read from `fusex.backends.available`.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import itertools
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

import fusex

from .phantoms import sample

try:
    from fusex.backends import registry
except ImportError:  # a fusex older than its backend registry: see _BEFORE_REGISTRY
    registry = None

# Imported once here, where asv's fork server imports the benchmarks, rather than in every
# benchmark process it forks.  Importing initializes no GPU (forking after that would break CUDA).
for _module in ("numba", "torch"):
    with contextlib.suppress(ImportError):
        importlib.import_module(_module)

try:  # asv >= 0.6 ships asv_runner; its SkipNotImplemented is a NotImplementedError that asv skips
    from asv_runner.benchmarks.mark import SkipNotImplemented
except ImportError:  # pragma: no cover - only when run outside asv
    SkipNotImplemented = NotImplementedError

__all__ = [
    "BACKENDS",
    "GPU_BACKENDS",
    "SIZES",
    "FuseInputs",
    "SkipNotImplemented",
    "Target",
    "XPBenchmark",
    "resolve_target",
]


# array_api_strict is the test suite's strict namespace (NumPy underneath), not a library to time.
_UNTIMED: frozenset[str] = frozenset({"array_api_strict"})


@dataclass(frozen=True)
class _Case:
    """What a backend label runs on: array library, device kind, and the engine it demands (None: the library's)."""

    library: str
    kind: str
    engine: str | None


# What the labels meant before fusex had a registry, so that asv can still benchmark those commits:
# label -> the case, and the key of fusex.backends.available() that says whether it runs here.
_BEFORE_REGISTRY: dict[str, tuple[_Case, str]] = {
    "numpy": (_Case("numpy", "cpu", None), "numpy"),
    "numba": (_Case("numpy", "cpu", "numba"), "numba"),
    "torch-cpu": (_Case("torch", "cpu", None), "torch"),
    "torch-cuda": (_Case("torch", "cuda", None), "torch-cuda"),
    "cupy": (_Case("cupy", "cuda", None), "cupy"),
}


def _cases() -> dict[str, _Case]:
    """Return label -> `_Case`: every registry target, each followed by the engines made for it alone (numba)."""
    if registry is None:
        return {label: case for label, (case, _) in _BEFORE_REGISTRY.items()}
    cases = {}
    for target in registry.targets():
        if target.library in _UNTIMED:
            continue
        cases[target.label] = _Case(target.library, target.device, None)
        for record in registry.ENGINES:
            if record.libraries == (target.library,) and record.devices == (target.device,):
                cases[record.name] = _Case(target.library, target.device, record.name)
    return cases


def _why_not(label: str, case: _Case) -> str | None:
    """Return why the case cannot run on this machine, or None if it can."""
    if registry is None:
        return None if fusex.backends.available()[_BEFORE_REGISTRY[label][1]] else "not available here"
    if not registry.library(case.library).usable(case.kind):
        return f"{case.library} cannot run on the {case.kind} here"
    if case.engine is not None and not registry.engine_record(case.engine).installed():
        return f"the {case.engine} engine is not installed"
    return None


_CASES: dict[str, _Case] = _cases()
#: Backend labels (``numpy``, ``numba``, ``torch-cpu``, ``torch-cuda``, ``cupy``), from `fusex.backends.registry`.
BACKENDS: list[str] = list(_CASES)
GPU_BACKENDS: frozenset[str] = frozenset(label for label, case in _CASES.items() if case.kind == "cuda")
#: Image edge lengths; 4096 runs on GPU backends only (see `XPBenchmark.max_size`).
SIZES: list[int] = [256, 512, 1024, 2048, 4096]


@dataclass(frozen=True)
class Target:
    """Where a benchmark computes: array library, device, engine and synchronization.

    Attributes
    ----------
    label : str
        One of `BACKENDS`.
    library : str
        ``"numpy"``, ``"torch"`` or ``"cupy"``: fusex's ``backend`` argument.
    kind : str
        The device kind, ``"cpu"`` or ``"cuda"``.
    device : object
        The device the inputs live on (a ``torch.device``, a ``cupy.cuda.Device``, or ``"cpu"``).
    engine : str or None
        The engine the label demands (``"numba"``), or None for the library's own choice.
    synchronize : callable
        Blocks until the device's queued work is done (a no-op on the CPU).

    """

    label: str
    library: str
    kind: str
    device: Any
    engine: str | None
    synchronize: Callable[[], None] = field(repr=False)

    @property
    def gpu(self) -> bool:
        """Whether the work runs on a GPU."""
        return self.kind == "cuda"

    def asarray(self, array: np.ndarray) -> Any:
        """Return a copy of a NumPy array as an array of this target's library on its device."""
        if self.library == "torch":
            import torch

            return torch.tensor(array, device=self.device)
        if self.library == "cupy":
            import cupy

            with self.device:
                return cupy.array(array)
        return np.array(array)

    def keywords(self, function: Callable[..., Any]) -> dict[str, Any]:
        """Return the keyword arguments that make a fusex function (`fusex.fuse`, ...) run on this target.

        ``backend=library``, and ``engine=`` when the label demands one.  A function without
        an ``engine`` argument (`fusex.tv_denoise`, or any function of a fusex older than
        ``engine=``) keeps the inputs' library, where fusex's automatic choice is the engine
        made for it alone (numba for NumPy on the CPU) whenever that is installed.
        """
        if self.engine is None:
            return {"backend": self.library}
        if "engine" in inspect.signature(function).parameters:
            return {"backend": self.library, "engine": self.engine}
        return {}


def _no_sync() -> None:
    return None


@functools.cache
def resolve_target(label: str) -> Target:
    """Return the `Target` for a backend label.

    Parameters
    ----------
    label : str
        One of `BACKENDS`.

    Returns
    -------
    Target

    Raises
    ------
    NotImplementedError
        If the backend is not installed, has no device here, or is left out by
        ``$FUSEX_BENCH_BACKENDS``; asv skips the case.

    """
    if label not in _CASES:
        raise ValueError(f"unknown backend label {label!r}; expected one of {BACKENDS}")
    wanted = os.environ.get("FUSEX_BENCH_BACKENDS", "").replace(",", " ").split()
    if wanted and label not in wanted:
        raise SkipNotImplemented(f"backend {label!r} is not in FUSEX_BENCH_BACKENDS={' '.join(wanted)}")
    case = _CASES[label]
    why = _why_not(label, case)
    if why is not None:
        raise SkipNotImplemented(f"backend {label!r}: {why}")
    library, kind = case.library, case.kind
    if library == "torch":
        import torch

        if kind == "cuda":
            device = torch.device("cuda", torch.cuda.current_device())
            return Target(label, library, kind, device, case.engine, torch.cuda.synchronize)
        return Target(label, library, kind, torch.device("cpu"), case.engine, _no_sync)
    if library == "cupy":
        import cupy

        def synchronize() -> None:
            cupy.cuda.get_current_stream().synchronize()

        return Target(label, library, kind, cupy.cuda.Device(), case.engine, synchronize)
    return Target(label, library, kind, "cpu", case.engine, _no_sync)


def gpu_peak_bytes(target: Target, operation: Callable[[], Any]) -> int:
    """Run ``operation`` once and return the peak GPU memory it held, in bytes.

    torch: ``torch.cuda.max_memory_allocated`` after resetting the peak.  CuPy
    (the ``cupy`` backend, and the fused kernels that torch CUDA tensors run
    through CuPy): the default memory pool's ``total_bytes`` after freeing its
    cached blocks first, i.e. what the pool had to hold.  Both count the
    inputs, which are resident during the run; for torch-cuda the two are
    added, an upper bound of the true peak.

    Raises
    ------
    SkipNotImplemented
        On CPU backends, where there is no GPU memory to report.

    """
    if not target.gpu:
        raise SkipNotImplemented(f"no GPU memory on backend {target.label!r}")
    pool = None
    if "cupy" in sys.modules:
        import cupy

        pool = cupy.get_default_memory_pool()
    target.synchronize()
    if pool is not None:
        pool.free_all_blocks()
    if target.library == "torch":
        import torch

        torch.cuda.reset_peak_memory_stats()
    result = operation()
    target.synchronize()
    del result
    peak = 0
    if target.library == "torch":
        import torch

        peak += torch.cuda.max_memory_allocated()
    if pool is not None:
        peak += pool.total_bytes()
    return int(peak)


def _synchronized(operation: Callable[[], Any], synchronize: Callable[[], None]) -> Callable[[], Any]:
    """Return ``operation`` followed by ``synchronize``, returning the operation's result."""

    @functools.wraps(operation)
    def call() -> Any:
        result = operation()
        synchronize()
        return result

    return call


class XPBenchmark:
    """Base class: a ``backend`` parameter, skipping, warm-up and GPU synchronization.

    Subclasses add their own parameters after ``backend`` (``params = [BACKENDS, ...]``,
    ``param_names = ["backend", ...]``) and define ``setup(self, backend, ...)``, which calls
    ``super().setup(backend, operation)`` first, builds the inputs with ``self.target`` and
    ends with ``self.warm_up(...)``; the ``time_`` and ``peakmem_`` methods call
    ``self.func()``, the ``track_`` methods read `outcome`.  Every subclass also gets
    ``track_gpu_peak_memory``, skipped on CPU backends.

    Attributes
    ----------
    target : Target
        The resolved backend (set by `setup`).
    operation : callable
        The benchmarked operation as given to `setup`.
    func : callable
        The benchmarked operation followed by the device's synchronization (set by `setup`).

    """

    params: ClassVar[list[list[Any]]] = [BACKENDS]
    param_names: ClassVar[list[str]] = ["backend"]
    #: Largest image edge benchmarked, by backend label or else by device kind (``"cpu"``, ``"cuda"``);
    #: larger cases are skipped.
    max_size: ClassVar[Mapping[str, int]] = {"cpu": 2048, "cuda": 4096}
    # setup() warms up, so asv's own warm-up calls would only cost time.
    warmup_time: ClassVar[float] = 0.0
    timeout: ClassVar[float] = 300.0

    # per process: case -> summary of its warm-up run (see `outcome`)
    _warm: ClassVar[dict[tuple[Any, ...], Any]] = {}

    target: Target
    operation: Callable[[], Any]
    func: Callable[[], Any]

    def setup(self, backend: str, operation: Callable[[], Any]) -> None:
        """Resolve the backend (skipping it if it cannot run here) and wrap ``operation`` with its sync.

        Parameters
        ----------
        backend : str
            One of `BACKENDS`, from asv's parametrization.
        operation : callable
            The benchmarked call, with no arguments; it may return before a GPU has finished.

        Raises
        ------
        NotImplementedError
            If the backend cannot run here (asv skips the case).

        """
        self.target = resolve_target(backend)
        self.operation = operation
        self.func = _synchronized(operation, self.target.synchronize)

    def check_size(self, size: int) -> None:
        """Skip (`NotImplementedError`) a size above `max_size` for this backend."""
        limit = self.max_size.get(self.target.label, self.max_size[self.target.kind])
        if size > limit:
            raise SkipNotImplemented(f"size {size} is above {limit}, the largest benchmarked on {self.target.label}")

    def warm_up(self, *case: Any) -> None:
        """Run ``self.func`` once per process for this case, untimed, and keep `summarize` of its result.

        asv runs ``setup`` again before every sample; the inputs are rebuilt (cheap copies),
        the warm-up is not.

        Parameters
        ----------
        *case : object
            The case's parameters after ``backend``.

        """
        self._case = (type(self).__qualname__, self.target.label, *case)
        if self._case not in XPBenchmark._warm:
            XPBenchmark._warm[self._case] = self.summarize(self.func())

    def summarize(self, result: Any) -> Any:
        """Return what the ``track_`` methods need from a result (kept per process); default nothing."""
        return None

    def outcome(self) -> Any:
        """Return `summarize` of this case's warm-up run, made in `setup`."""
        return XPBenchmark._warm[self._case]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Give each benchmark class its own ``track_gpu_peak_memory``, skipped on CPU backends.

        asv's ``skip_params`` (as set by ``asv_runner``'s ``skip_for_params``) skips
        the CPU cases before ``setup``, so no warm-up run is spent on them.
        """
        super().__init_subclass__(**kwargs)

        def track_gpu_peak_memory(self: XPBenchmark, *params: Any) -> int:
            """Track the peak GPU memory of one run, in bytes (skipped on CPU backends)."""
            return gpu_peak_bytes(self.target, self.operation)

        track_gpu_peak_memory.unit = "bytes"  # type: ignore[attr-defined]
        track_gpu_peak_memory.skip_params = [  # type: ignore[attr-defined]
            case for case in itertools.product(*cls.params) if case[0] not in GPU_BACKENDS
        ]
        cls.track_gpu_peak_memory = track_gpu_peak_memory  # type: ignore[attr-defined]


class FuseInputs:
    """Mixin for the `fusex.fuse` benchmarks: a phantom on the device, one call, its objective.

    Put it before `XPBenchmark` in the bases and pass ``self.fuse`` to ``super().setup``;
    ``fusion`` holds the parameters (None: fusex's defaults).
    """

    fusion: ClassVar[fusex.FusionParams | None] = None
    target: Target

    def load(self, size: int, n_elements: int) -> None:
        """Put the HAADF image and ``n_elements`` maps of a ``size`` x ``size`` phantom on the device."""
        data = sample(size, n_elements)
        self.elements = data.elements
        self.haadf, self.maps = self.target.asarray(data.haadf), self.target.asarray(data.maps)

    def fuse(self, **options: Any) -> fusex.FusionResult:
        """Fuse with ``fusion`` on the benchmarked backend (``options``: more `fusex.fuse` keywords)."""
        return fusex.fuse(
            self.haadf,
            self.maps,
            elements=self.elements,
            params=self.fusion,
            **self.target.keywords(fusex.fuse),
            **options,
        )

    def summarize(self, result: fusex.FusionResult) -> Any:
        """Return the final objective."""
        return float(result.history["total"].iloc[-1])
