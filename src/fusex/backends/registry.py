"""The one list of what fusex computes on: array libraries, compute engines, and what each needs.

Two choices make up a run, as in PyLops:

* ``backend=``, the **array library** (`Library`): which namespace the
  arrays are converted to before the solve (``None`` keeps the inputs');
* ``engine=``, the **compute engine** (`EngineRecord`): which code runs the
  solver's hot functions on those arrays.  ``"auto"`` takes the first engine
  of `ENGINES` that applies to the arrays' library and device and is
  installed; the generic array-API engine applies everywhere, so it always
  closes the list.

Every other module reads these records (`fusex.backends.select_engine`,
`fusex.backends.available`, `fusex.memory`, the command line's choices, the
test suite's backend parametrization, the benchmarks) instead of keeping a
list of its own.  A new library or engine is one record here.

Public functions: `library`, `library_of`, `engine_record`, `device_kind`,
`targets`, `backend_choices`, `engine_choices`, `resolve_request`, `select`
and `warn_deprecated`.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType, ModuleType
from typing import Any

import array_api_compat

from ..errors import BackendUnavailableError

__all__ = [
    "AUTO",
    "DEPRECATED_BACKENDS",
    "ENGINES",
    "LIBRARIES",
    "EngineRecord",
    "Library",
    "Target",
    "backend_choices",
    "device_kind",
    "engine_choices",
    "engine_record",
    "library",
    "library_of",
    "resolve_request",
    "select",
    "targets",
    "warn_deprecated",
]

AUTO = "auto"
"""The ``engine=`` value that lets `select` choose from the arrays."""


@dataclass(frozen=True)
class Library:
    """An array library fusex can compute on (a ``backend=`` value).

    Attributes
    ----------
    name : str
        The ``backend=`` value, and the library's name in messages.
    module : str
        The module to import.
    devices : tuple of str
        Device kinds its arrays can live on (``"cpu"``, ``"cuda"``), the
        default first.
    extra : str or None
        The ``fusex[...]`` extra that installs it (None: a dependency of fusex).
    requirements : mapping
        Device kind -> requirements file in the repository's ``backends/``
        folder.
    is_namespace : callable
        Whether an array namespace is this library's.
    gpu_count : callable or None
        The imported module -> number of usable CUDA devices (None: no CUDA).
    gpu_free_bytes : callable or None
        ``(module, device) ->`` free bytes on a CUDA device, counting the
        library's cached blocks.
    auto_engine : str or None
        The engine ``engine="auto"`` means when ``backend=`` names this
        library; None lets the arrays decide.  ``backend="numpy"`` has always
        meant NumPy's own, generic code (the reference implementation).
    """

    name: str
    module: str
    devices: tuple[str, ...]
    extra: str | None
    requirements: Mapping[str, str]
    is_namespace: Callable[[ModuleType], bool]
    gpu_count: Callable[[ModuleType], int] | None = None
    gpu_free_bytes: Callable[[ModuleType, Any], int] | None = None
    auto_engine: str | None = None

    def installed(self) -> bool:
        """Whether the library can be imported here (without importing it)."""
        return importlib.util.find_spec(self.module) is not None

    def usable(self, kind: str) -> bool:
        """Whether arrays of this library can live on a device of ``kind`` on this machine."""
        if kind not in self.devices or not self.installed():
            return False
        if kind == "cpu":
            return True
        try:
            return self.gpu_count is not None and self.gpu_count(importlib.import_module(self.module)) > 0
        except Exception:  # CuPy raises its own runtime error class when no driver or GPU is present
            return False

    def install_hint(self) -> str:
        """Return what to install for this library, for error messages."""
        return f'pip install "fusex[{self.extra}]"' if self.extra else "reinstall fusex"


@dataclass(frozen=True)
class EngineRecord:
    """A compute engine (an ``engine=`` value): the code that runs the solver's hot functions.

    Attributes
    ----------
    name : str
        The ``engine=`` value.
    libraries : tuple of str or None
        Names of the `Library` records whose arrays it runs on (None: any).
    devices : tuple of str or None
        Device kinds it runs on (None: any).
    needs : str or None
        A module it imports beyond the array library (None: nothing).
    extra : str or None
        The ``fusex[...]`` extra that installs ``needs``.
    requirements : str or None
        Requirements file in the repository's ``backends/`` folder.
    factory : callable
        ``(xp, device) ->`` a new engine object (`fusex.backends.Engine`).
    reports : tuple of str
        The names its engine objects report (``FusionResult.engine``).
    arrays_per_item : tuple of float
        Peak working memory of one batch item while it is solved, ``(a, b)``:
        ``a`` arrays of ``(H, W)`` per map plus ``b`` per item, the device copy
        of the inputs and the result included (see `fusex.memory`).
    max_maps : int or None
        Most maps one launch can hold (the CUDA grid's z extent); None: no limit.
    """

    name: str
    libraries: tuple[str, ...] | None
    devices: tuple[str, ...] | None
    needs: str | None
    extra: str | None
    requirements: str | None
    factory: Callable[[ModuleType, Any], Any]
    reports: tuple[str, ...]
    arrays_per_item: tuple[float, float]
    max_maps: int | None = None

    def applies(self, lib: Library | None, kind: str) -> bool:
        """Whether this engine runs on arrays of ``lib`` on a device of ``kind``."""
        if self.libraries is not None and (lib is None or lib.name not in self.libraries):
            return False
        return self.devices is None or kind in self.devices

    def installed(self) -> bool:
        """Whether what it needs beyond the array library can be imported here."""
        return self.needs is None or importlib.util.find_spec(self.needs) is not None

    def install_hint(self) -> str:
        """Return what to install for this engine, for error messages."""
        return f'pip install "fusex[{self.extra}]"' if self.extra else "reinstall fusex"


@dataclass(frozen=True)
class Target:
    """An array library on one device kind: one case of the test suite and benchmarks.

    ``label`` is the library's name, with ``-<device kind>`` added for
    libraries that run on several (``"torch-cpu"``, ``"torch-cuda"``).
    """

    label: str
    library: str
    device: str
    requirements: str | None = None


def _load(module: str, attribute: str) -> Any:
    """Import an engine's module when it is first selected (numba and CuPy are optional)."""
    return getattr(importlib.import_module(module, __package__), attribute)


def _generic(xp: ModuleType, device: Any) -> Any:
    return _load(".generic", "GENERIC")


def _numba(xp: ModuleType, device: Any) -> Any:
    return _load(".numba_engine", "NumbaEngine")()


def _cuda(xp: ModuleType, device: Any) -> Any:
    return _load(".cupy_engine", "CupyEngine")(torch_arrays=array_api_compat.is_torch_namespace(xp))


def _cupy_gpus(cupy: ModuleType) -> int:
    return int(cupy.cuda.runtime.getDeviceCount())


def _cupy_free(cupy: ModuleType, device: Any) -> int:
    with device:
        free, _ = cupy.cuda.runtime.memGetInfo()
    return int(free + cupy.get_default_memory_pool().free_bytes())


def _torch_gpus(torch: ModuleType) -> int:
    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def _torch_free(torch: ModuleType, device: Any) -> int:
    free, _ = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


LIBRARIES: tuple[Library, ...] = (
    Library(
        name="numpy",
        module="numpy",
        devices=("cpu",),
        extra=None,
        requirements=MappingProxyType({"cpu": "numpy.txt"}),
        is_namespace=array_api_compat.is_numpy_namespace,
        auto_engine="generic",
    ),
    Library(
        name="array_api_strict",
        module="array_api_strict",
        devices=("cpu",),
        extra="test",
        requirements=MappingProxyType({}),
        is_namespace=array_api_compat.is_array_api_strict_namespace,
    ),
    Library(
        name="torch",
        module="torch",
        devices=("cpu", "cuda"),
        extra="torch",
        requirements=MappingProxyType({"cpu": "torch-cpu.txt", "cuda": "torch-cuda.txt"}),
        is_namespace=array_api_compat.is_torch_namespace,
        gpu_count=_torch_gpus,
        gpu_free_bytes=_torch_free,
    ),
    Library(
        name="cupy",
        module="cupy",
        devices=("cuda",),
        extra="cupy",
        requirements=MappingProxyType({"cuda": "cupy-cuda12.txt"}),
        is_namespace=array_api_compat.is_cupy_namespace,
        gpu_count=_cupy_gpus,
        gpu_free_bytes=_cupy_free,
    ),
)
"""Every array library fusex computes on."""

# Memory: rounded up from scripts/memory.py (numba 11.4 arrays per map on 3 x 2048 x 2048,
# CuPy 15 on 3 x 4096 x 4096, generic NumPy/torch 22 on 3 x 2048 x 2048).
ENGINES: tuple[EngineRecord, ...] = (
    EngineRecord(
        name="numba",
        libraries=("numpy",),
        devices=("cpu",),
        needs="numba",
        extra="numba",
        requirements="numba.txt",
        factory=_numba,
        reports=("numba",),
        # scripts/memory.py, 3 x 2048 x 2048 float32: 129.5 bytes per pixel and element (the accelerated step's
        # iterates and evaluations, the TV prox's tiles and hand-over of two dual iterates between sweeps, and
        # per item the HAADF image, background and residual of the refit at the step's start, and the model
        # and new image and residual of its fused passes)
        arrays_per_item=(30.0, 8.0),
    ),
    EngineRecord(
        name="cuda",
        libraries=("cupy", "torch"),
        devices=("cuda",),
        needs="cupy",
        extra="cupy",
        requirements="cupy-cuda12.txt",
        factory=_cuda,
        reports=("cupy", "cupy-kernels-on-torch"),
        # not measured since each step refits at its start: 3 more planes per item than then, as on the CPU
        arrays_per_item=(15.0, 8.0),
        max_maps=65535,  # the kernels put the maps of a batch on the grid's z axis
    ),
    EngineRecord(
        name="generic",
        libraries=None,
        devices=None,
        needs=None,
        extra=None,
        requirements=None,
        factory=_generic,
        reports=("generic",),
        # scripts/memory.py, 3 x 2048 x 2048 float32 on NumPy: 136 bytes per pixel and element
        arrays_per_item=(32.0, 8.0),
    ),
)
"""Every compute engine, in the order ``engine="auto"`` tries them; the generic one applies everywhere."""

DEPRECATED_BACKENDS: Mapping[str, tuple[str, str]] = MappingProxyType({"numba": ("numpy", "numba")})
"""Former ``backend=`` values that named an engine: value -> (library, engine) they stand for."""


def library(name: str) -> Library:
    """Return the library record a ``backend=`` value names (deprecated values included, without a warning).

    Raises
    ------
    ValueError
        If no library has that name; the message lists the choices.
    """
    name = DEPRECATED_BACKENDS.get(name, (name, ""))[0]
    for lib in LIBRARIES:
        if lib.name == name:
            return lib
    raise _unknown_backend(name)


def _unknown_backend(name: object) -> ValueError:
    return ValueError(
        f"unknown `backend` {name!r}; choose one of {list(backend_choices())} or None (use the inputs' library)"
    )


def library_of(xp: ModuleType) -> Library | None:
    """Return the record of an array namespace's library, or None for a library fusex does not list."""
    return next((lib for lib in LIBRARIES if lib.is_namespace(xp)), None)


def engine_record(name: str) -> EngineRecord:
    """Return the engine record with this ``engine=`` name, or whose engine objects report this name.

    Raises
    ------
    ValueError
        If no engine has that name; the message lists the choices.
    """
    for record in ENGINES:
        if name == record.name or name in record.reports:
            return record
    raise _unknown_engine(name)


def _unknown_engine(name: object) -> ValueError:
    return ValueError(f"unknown `engine` {name!r}; choose one of {list(engine_choices())}")


def device_kind(xp: ModuleType, device: Any) -> str:
    """Return the kind, ``"cpu"`` or ``"cuda"``, of the device arrays of ``xp`` live on."""
    if getattr(device, "type", None) == "cuda":  # a torch.device
        return "cuda"
    lib = library_of(xp)
    return lib.devices[0] if lib is not None and len(lib.devices) == 1 else "cpu"


def targets() -> tuple[Target, ...]:
    """Every library on every device kind it runs on, as the test suite and benchmarks label them."""
    return tuple(
        Target(lib.name if len(lib.devices) == 1 else f"{lib.name}-{kind}", lib.name, kind, lib.requirements.get(kind))
        for lib in LIBRARIES
        for kind in lib.devices
    )


def backend_choices() -> tuple[str, ...]:
    """Every accepted ``backend=`` string: the libraries, then the deprecated engine names."""
    return (*(lib.name for lib in LIBRARIES), *DEPRECATED_BACKENDS)


def engine_choices() -> tuple[str, ...]:
    """Every accepted ``engine=`` string: ``"auto"``, then the engines."""
    return (AUTO, *(record.name for record in ENGINES))


def resolve_request(backend: str | None, engine: str = AUTO) -> tuple[str | None, str]:
    """Split a ``backend=`` / ``engine=`` pair into the array library and the engine they ask for.

    Parameters
    ----------
    backend : str or None
        A ``backend=`` value (`backend_choices`); None keeps the inputs' library.
        A deprecated value (``"numba"``) warns and stands for its library and
        engine (`DEPRECATED_BACKENDS`).
    engine : str
        An ``engine=`` value (`engine_choices`).

    Returns
    -------
    library : str or None
        The library to convert the arrays to (None: the inputs').
    engine : str
        The engine to pass to `select`: the one asked for, or the one the
        deprecated backend or the named library stands for, else ``"auto"``.

    Raises
    ------
    ValueError
        For an unknown ``backend`` or ``engine`` (a non-string included), or
        a deprecated ``backend`` combined with another engine.
    """
    if not isinstance(engine, str) or engine not in engine_choices():
        raise _unknown_engine(engine)
    if backend is None:
        return None, engine
    if not isinstance(backend, str):
        raise _unknown_backend(backend)
    if backend in DEPRECATED_BACKENDS:
        name, implied = DEPRECATED_BACKENDS[backend]
        if engine not in (AUTO, implied):
            raise ValueError(
                f"backend={backend!r} means backend={name!r}, engine={implied!r}, which contradicts "
                f"engine={engine!r}: pass backend={name!r}, engine={engine!r}"
            )
        warn_deprecated(f"backend={backend!r} is deprecated: pass engine={implied!r} (and backend={name!r} or None)")
        return name, implied
    lib = library(backend)
    return lib.name, engine if engine != AUTO or lib.auto_engine is None else lib.auto_engine


def select(xp: ModuleType, device: Any, engine: str = AUTO) -> EngineRecord:
    """Return the record of the engine to run on arrays of ``xp`` on ``device``.

    ``engine="auto"`` takes the first of `ENGINES` that applies to the arrays
    and is installed (numba for NumPy on the CPU, the CUDA kernels for CuPy
    and for torch on a GPU when CuPy is installed, else the generic code).

    Raises
    ------
    ValueError
        If ``engine`` is unknown, or does not run on these arrays (the message
        names what it runs on and what to pass instead).
    BackendUnavailableError
        If the engine asked for needs a package that is not installed (the
        message names the extra to install).
    """
    lib, kind = library_of(xp), device_kind(xp, device)
    if engine == AUTO:
        return next(r for r in ENGINES if r.applies(lib, kind) and r.installed())
    record = engine_record(engine)
    if record.name != engine:  # a name its engine objects report, not an ``engine=`` value
        raise _unknown_engine(engine)
    if not record.applies(lib, kind):
        arrays = f"{lib.name if lib else getattr(xp, '__name__', 'these')} arrays on the {kind}"
        libraries, devices = record.libraries or (), record.devices or ()
        raise ValueError(
            f"`engine={engine!r}` runs on {' or '.join(libraries)} arrays on the {' or '.join(devices)}, not on "
            f"{arrays}: pass engine='auto' or engine='generic', or compute where it runs "
            f"(backend={' or '.join(map(repr, libraries))}, device={' or '.join(map(repr, devices))})"
        )
    if not record.installed():
        raise BackendUnavailableError(
            f"`engine={engine!r}` needs {record.needs}, which is not installed: {record.install_hint()}"
        )
    return record


_PACKAGE = __name__.partition(".")[0]


def warn_deprecated(message: str) -> None:
    """Issue a DeprecationWarning attributed to the first caller outside fusex.

    Python shows a DeprecationWarning by default only where the warned-about
    call is made from ``__main__``, so it must point at the caller's line, not
    at the fusex function that noticed (nor at a dataclass's generated
    ``__init__``, whose globals are its module's).
    """
    frame, level = sys._getframe(1), 2  # stacklevel 2 is this function's caller
    while frame is not None and frame.f_globals.get("__name__", "").partition(".")[0] == _PACKAGE:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, DeprecationWarning, stacklevel=level)
