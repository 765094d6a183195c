"""Array namespace and device resolution: the one place where arrays change library.

The public functions resolve the namespace ``xp`` and the device once, at
the boundary, and pass them down; the algorithm modules never import an array
library themselves.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

from .backends.registry import library
from .errors import BackendUnavailableError

__all__ = ["BackendUnavailableError", "convert", "namespace_of", "resolve_backend"]


def _import_namespace(name: str) -> ModuleType:
    lib = library(name)  # ValueError naming the choices for an unknown name
    try:
        module = importlib.import_module(lib.module)
    except ImportError as exc:
        raise BackendUnavailableError(f"backend {name!r} is not installed: {lib.install_hint()}") from exc
    return array_api_compat.array_namespace(module.asarray(0.0))


def namespace_of(**arrays: Any) -> tuple[ModuleType, Any]:
    """Return the common namespace and device of named arrays.

    Parameters
    ----------
    **arrays
        The caller's arrays, keyed by the argument name used in error messages.

    Raises
    ------
    TypeError
        If the arrays come from different libraries or are not arrays at all,
        or are NumPy masked arrays or matrices (refused, with what to pass instead).
    ValueError
        If they live on different devices.

    """
    spaces = {}
    for name, value in arrays.items():
        _refuse_subclass(name, value)
        if array_api_compat.is_dask_array(value):
            raise TypeError(
                f"`{name}` is a dask array; wrap the inputs as xarray objects (fusex.labeled.label) for a lazy, "
                "chunk-by-chunk fusion, or call .compute() to fuse in memory"
            )
        try:
            spaces[name] = array_api_compat.array_namespace(value)
        except TypeError:
            raise TypeError(
                f"`{name}` is a {type(value).__name__}, not an array; pass a NumPy, CuPy or torch array "
                "(or an xarray object)"
            ) from None
    names = list(spaces)
    first = names[0]
    for other in names[1:]:
        if spaces[other] is not spaces[first]:
            raise TypeError(
                f"`{first}` is a {_library(arrays[first])} array but `{other}` is a {_library(arrays[other])} array; "
                "convert both to one library first"
            )
    devices = {name: array_api_compat.device(value) for name, value in arrays.items()}
    for other in names[1:]:
        if devices[other] != devices[first]:
            raise ValueError(
                f"`{first}` is on device {devices[first]} but `{other}` is on device {devices[other]}; "
                "move both to one device first"
            )
    return spaces[first], devices[first]


def _refuse_subclass(name: str, value: Any) -> None:
    """Refuse NumPy masked arrays and matrices, whose semantics fusex would otherwise silently drop.

    A mask would count for some reductions and not for others (NumPy's
    min/max honour it, the solver's arithmetic does not), and ``np.matrix``
    keeps two dimensions under every reduction, so neither is read at all.
    """
    if isinstance(value, np.ma.MaskedArray):
        hint = f"; to leave pixels out of the HAADF term, pass saturated={name}.mask" if name == "haadf" else ""
        raise TypeError(
            f"`{name}` is a NumPy masked array, and fusex does not use masks: pass np.ma.filled({name}, value) to say "
            f"what the masked pixels hold, or np.ma.getdata({name}) to use the values under the mask{hint}"
        )
    if isinstance(value, np.matrix):
        raise TypeError(f"`{name}` is an np.matrix, which fusex does not take: pass np.asarray({name})")


def _library(x: Any) -> str:
    return type(x).__module__.split(".")[0]


def resolve_backend(backend: str | None, device: Any, like_xp: ModuleType, like_device: Any) -> tuple[ModuleType, Any]:
    """Return the namespace and device to compute on.

    ``backend=None`` keeps the inputs' library; ``device=None`` keeps the
    inputs' device when the library is unchanged and takes the library's
    default device otherwise.
    """
    xp = like_xp if backend is None else _import_namespace(backend)
    same_library = xp is like_xp
    if device is None:
        return xp, like_device if same_library else _default_device(xp)
    return xp, _parse_device(xp, device)


def _default_device(xp: ModuleType) -> Any:
    return array_api_compat.device(xp.asarray(0.0))


def _parse_device(xp: ModuleType, device: Any) -> Any:
    if array_api_compat.is_torch_namespace(xp):
        import torch

        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError):
            raise ValueError(
                f"torch knows no device {device!r}; use 'cpu', 'cuda' or 'cuda:N' (or a torch.device)"
            ) from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError(
                f"device {device!r} was asked for but torch sees no CUDA GPU here; use device='cpu', "
                "or install a CUDA build of torch (see backends/README.md)"
            )
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())  # the device arrays will report
        return dev
    if array_api_compat.is_cupy_namespace(xp):
        import cupy

        if isinstance(device, str):
            if not device.startswith("cuda"):
                raise ValueError(f"CuPy arrays live on a GPU; `device` must be 'cuda' or 'cuda:N', not {device!r}")
            index = int(device.split(":")[1]) if ":" in device else cupy.cuda.runtime.getDevice()
            return cupy.cuda.Device(index)
        return device if isinstance(device, cupy.cuda.Device) else cupy.cuda.Device(int(device))
    default = _default_device(xp)
    if device not in ("cpu", default):
        raise ValueError(f"the {xp.__name__} backend runs on the CPU only; `device` must be 'cpu', not {device!r}")
    return default


def convert(x: Any, xp: ModuleType, device: Any) -> Any:
    """Return ``x`` as an array of namespace ``xp`` on ``device`` (a new array, never a view of ``x``).

    Host-device moves happen here and nowhere else in fusex.
    """
    if array_api_compat.is_torch_array(x):
        x = x.detach()  # results never carry the caller's autograd graph
    source = array_api_compat.array_namespace(x)
    if source is xp:
        if array_api_compat.device(x) == device:
            return xp.asarray(x, copy=True)
        return array_api_compat.to_device(x, device)
    if array_api_compat.is_torch_namespace(xp) and array_api_compat.is_cupy_array(x):
        import torch

        return torch.from_dlpack(x).to(device, copy=True)
    if array_api_compat.is_cupy_namespace(xp) and array_api_compat.is_torch_array(x) and x.is_cuda:
        with device:
            return xp.asarray(xp.from_dlpack(x.detach()), copy=True)
    host = to_numpy(x)
    if array_api_compat.is_cupy_namespace(xp):
        with device:
            return xp.asarray(host)
    if array_api_compat.is_torch_namespace(xp):
        import torch

        return torch.from_numpy(np.array(host, copy=True)).to(device)
    return xp.asarray(host, copy=True, device=device)


def to_numpy(x: Any) -> np.ndarray:
    """Return a host NumPy array with the data of ``x`` (copying from a GPU explicitly)."""
    if array_api_compat.is_numpy_array(x):
        return x
    if array_api_compat.is_cupy_array(x):
        return x.get()
    if array_api_compat.is_torch_array(x):
        return x.detach().cpu().numpy()
    return np.from_dlpack(x)
