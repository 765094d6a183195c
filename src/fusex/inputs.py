"""Validation and preparation of the caller's data, always on copies.

Every check names the offending argument and says how to fix it.  Nothing
here writes into the caller's arrays.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ._xp import convert, namespace_of, resolve_backend
from .elements import atomic_numbers

__all__ = ["FusionProblem", "prepare"]


@dataclass(frozen=True)
class FusionProblem:
    """Validated, converted and normalized data, ready for the solver.

    Attributes
    ----------
    haadf : array (H, W)
    counts : array (E, H, W)
        The chemical maps after normalization (the data of the Poisson term).
    elements : tuple of str
        Labels of the maps (symbols when known, else ``"map0"``, ...).
    z : tuple of int or None
    xp, device :
        Namespace and device the solver computes on.
    input_xp, input_device :
        Namespace and device of the caller's arrays, for the results.
    scale : dict
        ``{"haadf": (offset, range), "maps": ((offset, range), ...)}``: the
        normalization applied, so results can be mapped back to input units.

    """

    haadf: Any
    counts: Any
    elements: tuple[str, ...]
    z: tuple[int, ...] | None
    xp: ModuleType
    device: Any
    input_xp: ModuleType
    input_device: Any
    scale: dict[str, Any]


def _stack_maps(maps: Any) -> tuple[Any, tuple[str, ...] | None]:
    """Accept ``{symbol: map}``, a sequence of 2-D maps, or one (E, H, W) array."""
    if isinstance(maps, Mapping):
        if not maps:
            raise ValueError("`maps` is an empty mapping; give at least one element map")
        names = tuple(str(k) for k in maps)
        arrays = list(maps.values())
    elif isinstance(maps, (list, tuple)):
        if not maps:
            raise ValueError("`maps` is empty; give at least one element map")
        names, arrays = None, list(maps)
    else:
        return maps, None
    xp, _ = namespace_of(**{f"maps[{i}]": a for i, a in enumerate(arrays)})
    shapes = {tuple(a.shape) for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"the maps in `maps` have different shapes {sorted(shapes)}; all must be (H, W) of one size")
    return xp.stack(arrays), names


def as_float(x: Any, name: str, xp: ModuleType) -> Any:
    """Return ``x`` as native float32 or float64 (integers and half precision become float32)."""
    if xp.isdtype(x.dtype, "real floating"):
        target = xp.float64 if xp.finfo(x.dtype).bits >= 64 else xp.float32
        return x if x.dtype == target else xp.astype(x, target)
    if xp.isdtype(x.dtype, "integral"):
        return xp.astype(x, xp.float32)
    raise TypeError(f"`{name}` has dtype {x.dtype}; pass real numbers (integer counts or floats)")


def check_finite(x: Any, name: str, xp: ModuleType) -> None:
    if not bool(xp.all(xp.isfinite(x))):
        bad = int(xp.sum(xp.astype(~xp.isfinite(x), xp.int64)))
        raise ValueError(f"`{name}` contains {bad} NaN or infinite values; fill or crop them before fusing")


def _resolve_z(
    elements: Sequence[str] | None, z: Sequence[int] | None, names: tuple[str, ...] | None, n: int
) -> tuple[tuple[str, ...], tuple[int, ...] | None]:
    if elements is not None and isinstance(elements, str):
        raise TypeError(f"`elements` must be a list of symbols such as ['Sr', 'Ti', 'O'], not the string {elements!r}")
    if elements is None:
        elements = names
    if elements is not None and len(elements) != n:
        raise ValueError(f"`elements` has {len(elements)} symbols but `maps` has {n} maps; give one symbol per map")
    if z is not None:
        try:
            z = tuple(operator.index(v) for v in z)
        except TypeError:
            raise TypeError(f"`z` must hold integer atomic numbers, got {z!r}") from None
        if len(z) != n:
            raise ValueError(f"`z` has {len(z)} atomic numbers but `maps` has {n} maps; give one per map")
        if not all(1 <= v <= 118 for v in z):
            raise ValueError(f"`z` must hold atomic numbers between 1 and 118, got {z!r}")
    elif elements is not None:
        try:
            z = atomic_numbers(elements)
        except ValueError:
            if elements is not names:
                raise
            z = None  # labels from dict keys or coordinates need not be symbols; weights that need Z say so

    labels = tuple(elements) if elements is not None else tuple(f"map{i}" for i in range(n))
    return labels, z


def _minmax(x: Any, name: str, labels: Sequence[str] | None, xp: ModuleType) -> tuple[Any, list[tuple[float, float]]]:
    """Rescale each map (or the single image) on the last two axes to [0, 1]."""
    lo = xp.min(x, axis=(-2, -1), keepdims=True)
    hi = xp.max(x, axis=(-2, -1), keepdims=True)
    span = hi - lo
    flat_lo = [float(v) for v in xp.reshape(lo, (-1,))]
    flat_span = [float(v) for v in xp.reshape(span, (-1,))]
    for i, s in enumerate(flat_span):
        if s <= 0:
            which = f"`{name}`" if labels is None else f"map {labels[i]!r} of `{name}`"
            raise ValueError(
                f"{which} is constant (every value is {flat_lo[i]:g}), so min-max normalization would divide by "
                "zero; drop that map, or pass FusionParams(normalize='none')"
            )
    return (x - lo) / span, list(zip(flat_lo, flat_span))


def prepare(
    haadf: Any,
    maps: Any,
    *,
    elements: Sequence[str] | None,
    z: Sequence[int] | None,
    normalize: str,
    backend: str | None,
    device: Any,
) -> FusionProblem:
    """Validate the caller's data and return normalized copies on the compute backend."""
    maps, names = _stack_maps(maps)
    input_xp, input_device = namespace_of(haadf=haadf, maps=maps)
    xp, dev = resolve_backend(backend, device, input_xp, input_device)

    if haadf.ndim != 2:
        raise ValueError(f"`haadf` must be one image of shape (H, W), got shape {tuple(haadf.shape)}")
    if maps.ndim != 3:
        raise ValueError(f"`maps` must have shape (element, H, W), got shape {tuple(maps.shape)}")
    if tuple(maps.shape[-2:]) != tuple(haadf.shape):
        raise ValueError(
            f"`haadf` has shape {tuple(haadf.shape)} but each map in `maps` is {tuple(maps.shape[-2:])}; "
            "they must cover the same pixels (crop or bin one to match)"
        )
    if maps.shape[0] == 0 or haadf.shape[0] < 2 or haadf.shape[1] < 2:
        raise ValueError(f"`maps` of shape {tuple(maps.shape)} is too small: need at least one map of 2 x 2 pixels")
    labels, znums = _resolve_z(elements, z, names, maps.shape[0])

    h = as_float(convert(haadf, xp, dev), "haadf", xp)
    m = as_float(convert(maps, xp, dev), "maps", xp)
    dtype = xp.result_type(h.dtype, m.dtype)
    h, m = xp.astype(h, dtype), xp.astype(m, dtype)
    check_finite(h, "haadf", xp)
    check_finite(m, "maps", xp)
    lowest = float(xp.min(m))
    if lowest < 0:
        raise ValueError(
            f"`maps` contains negative values (minimum {lowest:g}); chemical maps are counts and must be >= 0. "
            "If they were background-subtracted, clip them at 0 first"
        )
    if normalize == "minmax":
        h, haadf_scale = _minmax(h, "haadf", None, xp)
        m, map_scales = _minmax(m, "maps", labels, xp)
        scale = {"haadf": haadf_scale[0], "maps": tuple(map_scales)}
    else:
        scale = {"haadf": (0.0, 1.0), "maps": ((0.0, 1.0),) * m.shape[0]}
    return FusionProblem(h, m, labels, znums, xp, dev, input_xp, input_device, scale)
