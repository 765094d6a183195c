"""Shared machinery of the fusex benchmarks: backends, test data and the base class.

Every benchmark class derives from `BackendBenchmark`, which adds a ``backend``
parameter (``numpy``, ``numba``, ``torch-cpu``, ``torch-cuda``, ``cupy``) in
front of the class's own parameters.  Its ``setup``

* raises `NotImplementedError` when the backend cannot run here (asv then
  shows the case as skipped, ``n/a``), or when the case is too large for it
  (`BackendBenchmark.max_size`);
* builds the inputs on the backend's device (phantoms are cached in the
  process and on disk, see `sample`), once per process: asv runs ``setup``
  again before every sample, and the benchmarked calls never modify their
  inputs;
* runs the operation once per process, outside the timing, so that numba
  compilation, CUDA context creation, kernel compilation and the memory pools'
  first allocations are not timed.

The timed methods call `BackendBenchmark.call`, which runs the operation and
then synchronizes the GPU (``torch.cuda.synchronize`` or the CuPy stream's
``synchronize``), so a GPU timing covers the work and not only its launch.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import hashlib
import importlib
import inspect
import itertools
import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

import fusex
from fusex import datasets
from fusex._xp import convert, resolve_backend
from fusex.datasets import Phantom
from fusex.elements import atomic_numbers

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
    "CPU_BACKENDS",
    "GPU_BACKENDS",
    "SIZES",
    "BackendBenchmark",
    "SkipNotImplemented",
    "Target",
    "lattice",
    "resolve_target",
    "sample",
]

#: Backend labels, as in ``scripts/roofline.py`` and ``backends/README.md``.
BACKENDS: list[str] = ["numpy", "numba", "torch-cpu", "torch-cuda", "cupy"]
CPU_BACKENDS: frozenset[str] = frozenset({"numpy", "numba", "torch-cpu"})
GPU_BACKENDS: frozenset[str] = frozenset({"torch-cuda", "cupy"})
#: Image edge lengths; 4096 runs on GPU backends only (see `BackendBenchmark.max_size`).
SIZES: list[int] = [256, 512, 1024, 2048, 4096]

# One column per unit cell for each element, at distinct positions, so that any
# 2 to 5 of them make a valid phantom (the same cell as scripts/roofline.py).
_SITES: dict[str, tuple[tuple[float, float], ...]] = {
    "Sr": ((0.0, 0.0),),
    "Ti": ((0.5, 0.5),),
    "O": ((0.5, 0.0),),
    "Ba": ((0.25, 0.25),),
    "Zr": ((0.75, 0.75),),
}


def lattice(n_elements: int) -> dict[str, tuple[tuple[float, float], ...]]:
    """Return a projected unit cell with ``n_elements`` elements (2 to 5).

    Parameters
    ----------
    n_elements : int
        Number of elements, 2 to 5: Sr, Ti, O, Ba, Zr in this order.

    Returns
    -------
    dict
        Element symbol -> fractional (row, column) positions, for
        `fusex.datasets.phantom`'s ``lattice``.

    """
    if not 2 <= n_elements <= len(_SITES):
        raise ValueError(f"n_elements must be 2 to {len(_SITES)}, got {n_elements}")
    return dict(list(_SITES.items())[:n_elements])


@functools.cache
def sample(size: int, n_elements: int = 3) -> Phantom:
    """Return a square phantom (NumPy, float32), cached in this process and on disk.

    asv runs every benchmark case in its own process, and a 4096 x 4096 phantom
    takes seconds to simulate, so phantoms are kept as ``.npz`` files in
    ``$FUSEX_BENCH_CACHE`` (default: ``fusex-asv-phantoms`` in the temporary
    directory), under a name that includes a hash of `fusex.datasets`' source:
    a commit that changes the simulation gets new files.

    Parameters
    ----------
    size : int
        Edge length in pixels.
    n_elements : int
        Number of elemental maps, 2 to 5.

    Returns
    -------
    Phantom
        ``dose=3.0`` (a few counts per column, where fusion is used), ``seed=0``.

    """
    cells = lattice(n_elements)
    source = hashlib.sha256(inspect.getsource(datasets).encode()).hexdigest()[:12]
    folder = Path(os.environ.get("FUSEX_BENCH_CACHE") or Path(tempfile.gettempdir()) / "fusex-asv-phantoms")
    path = folder / f"phantom-{size}-{n_elements}-{source}.npz"
    if path.is_file():
        with np.load(path) as saved:
            arrays = {name: saved[name] for name in ("haadf", "maps", "truth")}
        z = atomic_numbers(tuple(cells))
        return Phantom(elements=tuple(cells), z=tuple(z), dose=3.0, **arrays)
    made = datasets.phantom((size, size), lattice=cells, dose=3.0, seed=0)
    with contextlib.suppress(OSError):  # a read-only or full disk only costs the next process time
        folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.npz")
        np.savez(partial, haadf=made.haadf, maps=made.maps, truth=made.truth)
        os.replace(partial, path)  # atomic: a concurrent reader sees the whole file or none
    return made


@dataclass(frozen=True)
class Target:
    """Where a benchmark computes: the fusex ``backend`` argument, namespace, device and sync.

    Attributes
    ----------
    label : str
        One of `BACKENDS`.
    backend : str
        The ``backend`` argument for `fusex.fuse` and `fusex.tv_denoise`.
    xp : module
        The array namespace the inputs are built in.
    device : object
        The device the inputs live on.
    gpu : bool
        Whether the work runs on a GPU.
    synchronize : callable
        Blocks until the device's queued work is done (a no-op on the CPU).

    """

    label: str
    backend: str
    xp: ModuleType
    device: Any
    gpu: bool
    synchronize: Callable[[], None] = field(repr=False)

    def asarray(self, array: np.ndarray) -> Any:
        """Return a NumPy array as an array of this target's library on its device."""
        return convert(array, self.xp, self.device)


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
        If the backend is not installed or has no device here; asv skips the case.

    """
    if label not in BACKENDS:
        raise ValueError(f"unknown backend label {label!r}; expected one of {BACKENDS}")
    wanted = os.environ.get("FUSEX_BENCH_BACKENDS", "").replace(",", " ").split()
    if wanted and label not in wanted:
        raise NotImplementedError(f"backend {label!r} is not in FUSEX_BENCH_BACKENDS={' '.join(wanted)}")
    report = fusex.backends.available()
    needs = {"numpy": "numpy", "numba": "numba", "torch-cpu": "torch", "torch-cuda": "torch-cuda", "cupy": "cupy"}
    if not report[needs[label]]:
        raise NotImplementedError(f"backend {label!r} is not available here")
    try:
        if label == "torch-cuda":
            import torch

            xp, device = resolve_backend("torch", "cuda", None, None)
            return Target(label, "torch", xp, device, True, torch.cuda.synchronize)
        if label == "cupy":
            import cupy

            xp, device = resolve_backend("cupy", None, None, None)
            return Target(label, "cupy", xp, device, True, lambda: cupy.cuda.get_current_stream().synchronize())
        if label == "torch-cpu":
            xp, device = resolve_backend("torch", "cpu", None, None)
            return Target(label, "torch", xp, device, False, _no_sync)
        xp, device = resolve_backend("numpy", None, None, None)
        return Target(label, label, xp, device, False, _no_sync)
    except (ImportError, fusex.BackendUnavailableError) as exc:
        raise NotImplementedError(f"backend {label!r} cannot run here: {exc}") from exc


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
    if target.label == "torch-cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()
    result = operation()
    target.synchronize()
    del result
    peak = 0
    if target.label == "torch-cuda":
        import torch

        peak += torch.cuda.max_memory_allocated()
    if pool is not None:
        peak += pool.total_bytes()
    return int(peak)


class BackendBenchmark(abc.ABC):
    """Base class: a ``backend`` parameter, skipping, warm-up and GPU synchronization.

    Subclasses add their own parameters after ``backend`` (``params = [BACKENDS, ...]``,
    ``param_names = ["backend", ...]``), implement `prepare` (check the case, build the
    inputs with ``self.target``) and `run` (the operation, returning its result), and
    define asv's ``time_``/``peakmem_``/``track_`` methods through `call`,
    `track_gpu_peak_memory` and `outcome`.
    """

    params: ClassVar[list[list[Any]]] = [BACKENDS]
    param_names: ClassVar[list[str]] = ["backend"]
    #: Largest image edge each backend is benchmarked at; larger cases are skipped.
    max_size: ClassVar[Mapping[str, int]] = {
        "numpy": 2048,
        "numba": 2048,
        "torch-cpu": 2048,
        "torch-cuda": 4096,
        "cupy": 4096,
    }
    # setup() warms up, so asv's own warm-up calls would only cost time.
    warmup_time: ClassVar[float] = 0.0
    timeout: ClassVar[float] = 300.0

    # per process: case key -> summary of the warm-up run (see `outcome`)
    _warm: ClassVar[dict[tuple[Any, ...], Any]] = {}

    target: Target

    def setup(self, backend: str, *case: Any) -> None:
        """Resolve the backend, build the inputs and, once per process, run the operation untimed.

        Raises
        ------
        NotImplementedError
            If the backend cannot run here or the case is too large for it (asv skips it).

        """
        key = (type(self).__qualname__, backend, *case)
        if getattr(self, "_key", None) == key:
            return  # asv re-runs setup before every sample: keep the inputs (never modified)
        self.target = resolve_target(backend)
        self.prepare(*case)
        if key not in BackendBenchmark._warm:
            BackendBenchmark._warm[key] = self.summarize(self.call())
        self._key = key

    def check_size(self, size: int) -> None:
        """Skip (`NotImplementedError`) a size above `max_size` for this backend."""
        limit = self.max_size[self.target.label]
        if size > limit:
            raise NotImplementedError(f"size {size} is above {limit}, the largest benchmarked on {self.target.label}")

    @abc.abstractmethod
    def prepare(self, *case: Any) -> None:
        """Check the case (raise `NotImplementedError` to skip it) and build the inputs."""

    @abc.abstractmethod
    def run(self) -> Any:
        """Run the benchmarked operation once and return its result (may be asynchronous on a GPU)."""

    def summarize(self, result: Any) -> Any:
        """Return what the ``track_`` methods need from a result (kept per process); default nothing."""
        return None

    def outcome(self) -> Any:
        """Return `summarize` of this case's warm-up run, made in `setup`."""
        return BackendBenchmark._warm[self._key]

    def call(self) -> Any:
        """Run the operation and wait for the GPU to finish it."""
        result = self.run()
        self.target.synchronize()
        return result

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Give each benchmark class its own ``track_gpu_peak_memory``, skipped on CPU backends.

        asv's ``skip_params`` (as set by ``asv_runner``'s ``skip_for_params``) skips
        the CPU cases before ``setup``, so no warm-up run is spent on them.
        """
        super().__init_subclass__(**kwargs)

        def track_gpu_peak_memory(self: BackendBenchmark, *params: Any) -> int:
            """Track the peak GPU memory of one run, in bytes (skipped on CPU backends)."""
            return gpu_peak_bytes(self.target, self.run)

        track_gpu_peak_memory.unit = "bytes"  # type: ignore[attr-defined]
        track_gpu_peak_memory.skip_params = [  # type: ignore[attr-defined]
            case for case in itertools.product(*cls.params) if case[0] not in GPU_BACKENDS
        ]
        cls.track_gpu_peak_memory = track_gpu_peak_memory  # type: ignore[attr-defined]


class FuseInputs:
    """Mixin for the `fusex.fuse` benchmarks: a phantom on the device, one call, its objective.

    Put it before `BackendBenchmark` in the bases; ``fusion`` holds the parameters
    (None: fusex's defaults).
    """

    fusion: ClassVar[fusex.FusionParams | None] = None
    target: Target

    def load(self, size: int, n_elements: int) -> None:
        """Put the HAADF image and ``n_elements`` maps of a ``size`` x ``size`` phantom on the device."""
        data = sample(size, n_elements)
        self.elements = data.elements
        self.haadf, self.maps = self.target.asarray(data.haadf), self.target.asarray(data.maps)

    def run(self) -> fusex.FusionResult:
        """Fuse with ``fusion`` on the benchmarked backend."""
        return fusex.fuse(
            self.haadf, self.maps, elements=self.elements, params=self.fusion, backend=self.target.backend
        )

    def summarize(self, result: fusex.FusionResult) -> Any:
        """Return the final objective."""
        return float(result.history["total"].iloc[-1])
