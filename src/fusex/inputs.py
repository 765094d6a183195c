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

import numpy as np

from ._per_item import per_item
from ._quirks import clip_negative, saturation_mask, zero_maps
from ._xp import convert, namespace_of, resolve_backend, to_numpy
from .elements import atomic_numbers

__all__ = ["FusionProblem", "Validated", "check_labels", "match_labels", "prepare", "stack_maps", "validate"]


@dataclass(frozen=True)
class FusionProblem:
    """Validated, converted and normalized data, ready for the solver.

    Attributes
    ----------
    haadf : array (n, H, W)
    counts : array (n, E, H, W)
        The chemical maps after normalization (the data of the Poisson term)
        of ``n`` items of the batch.
    items : numpy.ndarray
        The flat (C-order) indices of these items in the whole batch.
    batch_shape : tuple of int
        The shape of the whole batch (``()`` for one fusion).
    elements : tuple of str
        Labels of the maps (symbols when known, else ``"map0"``, ...).
    z : tuple of int or None
    xp, device :
        Namespace and device the solver computes on.
    input_xp, input_device :
        Namespace and device of the caller's arrays, for the results.
    haadf_mask : array (n, H, W) or None
        Per-pixel weight of the HAADF term (0 leaves a saturated pixel out),
        None when every pixel counts.

    """

    haadf: Any
    counts: Any
    items: np.ndarray
    batch_shape: tuple[int, ...]
    elements: tuple[str, ...]
    z: tuple[int, ...] | None
    xp: ModuleType
    device: Any
    input_xp: ModuleType
    input_device: Any
    haadf_mask: Any = None


def check_labels(elements: Any, what: str = "`elements`") -> tuple[str, ...]:
    """Return map names as a tuple of strings; refuse a bare string, non-strings and repeated names."""
    if isinstance(elements, str):
        raise TypeError(f"{what} must be a list of symbols such as ['Sr', 'Ti', 'O'], not the string {elements!r}")
    labels = tuple(elements)
    odd = [e for e in labels if not isinstance(e, str)]
    if odd:
        raise TypeError(
            f"{what} must hold names (strings such as 'Sr' or 'Fe_Ka'), got {odd[0]!r}; give atomic numbers with `z=`"
        )
    repeated = sorted({e for e in labels if labels.count(e) > 1})
    if repeated:
        raise ValueError(
            f"{what} names {repeated} more than once ({list(labels)}); give each map its own name "
            "(e.g. 'Fe_Ka' and 'Fe_La' for two lines of one element)"
        )
    return labels


def match_labels(elements: Any, names: tuple[str, ...], what: str) -> list[int]:
    """Return, for each name in ``elements``, its position among ``names`` (the labels the data carry).

    The same names in another order are a reordering, not a contradiction:
    the maps are taken by name.  Any other difference raises, naming both lists.
    """
    labels = check_labels(elements)
    if sorted(labels) != sorted(names):
        raise ValueError(
            f"`elements` {list(labels)} contradicts {what} {list(names)}; give the same names (in any order: the "
            "maps are then taken by name), or leave `elements` out"
        )
    return [names.index(e) for e in labels]


def stack_maps(maps: Any, elements: Sequence[str] | None = None) -> tuple[Any, tuple[str, ...] | None]:
    """Accept ``{symbol: map}``, a sequence of (..., H, W) maps, or one (..., E, H, W) array.

    Returns the maps as one array and the mapping's keys (None for the other
    forms).  With ``elements`` too, a mapping's maps are taken in the order
    of ``elements``, whose names must be the keys (see `match_labels`).
    """
    if elements is not None:
        check_labels(elements)
    if isinstance(maps, Mapping):
        if not maps:
            raise ValueError("`maps` is an empty mapping; give at least one element map")
        names = check_labels([str(k) for k in maps], "the keys of `maps`")
        arrays = list(maps.values())
        if elements is not None:
            order = match_labels(elements, names, "the keys of `maps`")
            names, arrays = tuple(names[i] for i in order), [arrays[i] for i in order]
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
    return xp.stack(arrays, axis=-3), names


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
    if elements is not None:
        check_labels(elements)
    if elements is None:
        elements = names
    if elements is not None and len(elements) != n:
        raise ValueError(f"`elements` has {len(elements)} symbols but `maps` has {n} maps; give one symbol per map")
    if z is not None:
        try:
            values = list(z)
            if any(isinstance(v, (bool, np.bool_)) for v in values):
                raise TypeError  # True would read as Z = 1
            z = tuple(operator.index(v) for v in values)
        except TypeError:
            raise TypeError(f"`z` must hold integer atomic numbers (not booleans), got {z!r}") from None
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


def _minmax_scale(x: Any, name: str, labels: Sequence[str] | None, xp: ModuleType, excluded: Any = None) -> np.ndarray:
    """Return ``(offset, range)`` of each map (or image) on the last two axes, for min-max scaling to [0, 1].

    Pixels where ``excluded`` is True (saturated ones) do not count.  A map
    that is zero everywhere keeps ``(0, 1)``, so it stays zero.
    """
    lo_x = hi_x = x
    if excluded is not None:
        # An excluded pixel takes a value that cannot be the extreme of the others.
        lo_x = xp.where(excluded, xp.max(x, axis=(-2, -1), keepdims=True), x)
        hi_x = xp.where(excluded, xp.min(x, axis=(-2, -1), keepdims=True), x)
    lo = xp.min(lo_x, axis=(-2, -1))
    span = xp.max(hi_x, axis=(-2, -1)) - lo
    scale = np.stack([to_numpy(lo), to_numpy(span)], axis=-1).astype(np.float64)
    flat = scale.reshape(-1, 2)
    if labels is not None:
        flat[(flat[:, 0] == 0) & (flat[:, 1] == 0), 1] = 1.0
    for i in np.flatnonzero(flat[:, 1] <= 0)[:1]:
        which = f"`{name}`" if labels is None else f"map {labels[i % len(labels)]!r} of `{name}`"
        if x.ndim > (2 if labels is None else 3):
            item = np.unravel_index(i // (1 if labels is None else len(labels)), scale.shape[: -2 if labels else -1])
            which += f" in batch item {tuple(int(v) for v in item)}"
        raise ValueError(
            f"{which} is constant (every value is {flat[i, 0]:g}), so min-max normalization would divide by "
            "zero; drop that map, or pass FusionParams(normalize='none')"
        )
    return scale


def _peak_scale(x: Any, xp: ModuleType) -> np.ndarray:
    """Return ``(0, max)`` of each map: a scale-only normalization, which keeps zeros at 0 and totals proportional.

    A map that is zero everywhere keeps ``(0, 1)``.
    """
    peak = to_numpy(xp.max(x, axis=(-2, -1))).astype(np.float64)
    return np.stack([np.zeros_like(peak), np.where(peak > 0, peak, 1.0)], axis=-1)


@dataclass(frozen=True)
class Validated:
    """The caller's data, checked and measured on its own library; chunks go to the compute backend on demand.

    Attributes
    ----------
    haadf, maps : arrays (D, H, W) and (D, E, H, W)
        Float views or copies of the caller's data, data batch flattened to ``D`` items.
    data_index : numpy.ndarray
        For each item of the (broadcast) batch, the index of its data item.
    batch_shape : tuple of int
        Shape of the whole batch: the data's batch shape broadcast against the parameters'.
    scale : dict
        ``{"haadf": (offset, range), "maps": ((offset, range), ...)}``: the
        normalization applied, so results can be mapped back to input units;
        for a batch, arrays of shape ``batch_shape + (2,)`` and
        ``batch_shape + (E, 2)``.
    mask : array (D, H, W) or None
        The HAADF term's pixel mask (0 at saturated pixels, 1 elsewhere), in
        the data's float dtype; None when every pixel counts.
    saturated : int or numpy.ndarray
        Number of saturated HAADF pixels left out; for a batch, an integer
        array of ``batch_shape``, one count per item.

    """

    haadf: Any
    maps: Any
    data_index: np.ndarray
    batch_shape: tuple[int, ...]
    elements: tuple[str, ...]
    z: tuple[int, ...] | None
    xp: ModuleType
    device: Any
    input_xp: ModuleType
    input_device: Any
    scale: dict[str, Any]
    _offsets: tuple[np.ndarray, np.ndarray]
    _ranges: tuple[np.ndarray, np.ndarray]
    mask: Any = None
    saturated: Any = 0

    @property
    def n_items(self) -> int:
        """Number of fusions in the batch."""
        return int(self.data_index.size)

    def chunk(self, items: np.ndarray) -> FusionProblem:
        """Return items ``items`` (flat batch indices) normalized on the compute backend."""
        rows = self.data_index[items]
        in_xp, xp = self.input_xp, self.xp
        h, m, keep = self.haadf, self.maps, self.mask
        if not (rows.size == self.haadf.shape[0] and np.array_equal(rows, np.arange(rows.size))):
            index = in_xp.asarray(rows.tolist(), dtype=in_xp.int64, device=self.input_device)
            h, m = in_xp.take(h, index, axis=0), in_xp.take(m, index, axis=0)
            keep = None if keep is None else in_xp.take(keep, index, axis=0)
        h, m = convert(h, xp, self.device), convert(m, xp, self.device)
        keep = None if keep is None else convert(keep, xp, self.device)
        (h_lo, m_lo), (h_span, m_span) = self._offsets, self._ranges
        h = (h - per_item(h_lo[rows], h, xp)) / per_item(h_span[rows], h, xp)
        m = (m - per_item(m_lo[rows], m, xp)) / per_item(m_span[rows], m, xp)
        return FusionProblem(
            h,
            m,
            items,
            self.batch_shape,
            self.elements,
            self.z,
            xp,
            self.device,
            self.input_xp,
            self.input_device,
            keep,
        )


def validate(
    haadf: Any,
    maps: Any,
    *,
    elements: Sequence[str] | None,
    z: Sequence[int] | None,
    normalize: str,
    backend: str | None,
    device: Any,
    params_batch: tuple[int, ...] = (),
    saturated: Any = "auto",
    negative: str = "raise",
) -> Validated:
    """Check the caller's data on its own library and measure its normalization.

    ``haadf`` is ``(..., H, W)`` and ``maps`` ``(..., E, H, W)`` with the same
    leading batch shape; ``params_batch``, the batch shape of per-item
    parameters, broadcasts against it.  Nothing moves to the compute device
    yet (see `Validated.chunk`).  ``saturated`` and ``negative`` are as in
    `fusex.fuse` (see `fusex._quirks`).
    """
    maps, names = stack_maps(maps, elements)
    input_xp, input_device = namespace_of(haadf=haadf, maps=maps)
    xp, dev = resolve_backend(backend, device, input_xp, input_device)
    data_batch = _check_shapes(haadf, maps)
    try:
        batch_shape = tuple(np.broadcast_shapes(data_batch, tuple(params_batch)))
    except ValueError:
        raise ValueError(
            f"the inputs' batch shape {data_batch} and the per-item parameters' shape {tuple(params_batch)} do not "
            "broadcast; give parameters with one value per batch item, or a single value"
        ) from None
    labels, znums = _resolve_z(elements, z, names, maps.shape[-3])

    ixp = input_xp
    excluded, _ = saturation_mask(haadf, saturated, ixp)
    h, m = as_float(haadf, "haadf", ixp), as_float(maps, "maps", ixp)
    dtype = ixp.result_type(h.dtype, m.dtype)
    h, m = ixp.astype(h, dtype, copy=False), ixp.astype(m, dtype, copy=False)
    check_finite(h, "haadf", ixp)
    check_finite(m, "maps", ixp)
    m = clip_negative(m, negative, ixp)
    zero_maps(m, labels, ixp)
    n_maps = m.shape[-3]
    if normalize == "minmax":
        haadf_scale = _minmax_scale(h, "haadf", None, ixp, excluded)
        map_scales = _minmax_scale(m, "maps", labels, ixp)
    elif normalize == "scale":
        haadf_scale = _minmax_scale(h, "haadf", None, ixp, excluded)
        map_scales = _peak_scale(m, ixp)
    else:
        haadf_scale = np.broadcast_to(np.array([0.0, 1.0]), (*data_batch, 2))
        map_scales = np.broadcast_to(np.array([0.0, 1.0]), (*data_batch, n_maps, 2))
    flat_h, flat_m = haadf_scale.reshape(-1, 2), map_scales.reshape(-1, n_maps, 2)
    data_index = np.broadcast_to(np.arange(flat_h.shape[0]).reshape(data_batch), batch_shape).reshape(-1)
    if batch_shape:
        scale = {
            "haadf": flat_h[data_index].reshape(*batch_shape, 2),
            "maps": flat_m[data_index].reshape(*batch_shape, n_maps, 2),
        }
    else:
        scale = {"haadf": tuple(flat_h[0].tolist()), "maps": tuple(tuple(v) for v in flat_m[0].tolist())}
    per_item = np.zeros(flat_h.shape[0], dtype=np.int64)
    if excluded is not None:
        per_item = to_numpy(ixp.sum(ixp.astype(excluded, ixp.int64), axis=(-2, -1))).reshape(-1)
    counts = per_item[data_index].reshape(batch_shape) if batch_shape else int(per_item[0])
    return Validated(
        ixp.reshape(h, (-1, *h.shape[-2:])),
        ixp.reshape(m, (-1, *m.shape[-3:])),
        data_index,
        batch_shape,
        labels,
        znums,
        xp,
        dev,
        input_xp,
        input_device,
        scale,
        (flat_h[:, 0], flat_m[..., 0]),
        (flat_h[:, 1], flat_m[..., 1]),
        None if excluded is None else ixp.reshape(ixp.astype(~excluded, dtype), (-1, *h.shape[-2:])),
        counts,
    )


def prepare(haadf: Any, maps: Any, **options: Any) -> FusionProblem:
    """Validate the caller's data and return the whole batch normalized on the compute backend."""
    checked = validate(haadf, maps, **options)
    return checked.chunk(np.arange(checked.n_items))


def _check_shapes(haadf: Any, maps: Any) -> tuple[int, ...]:
    """Check that ``haadf`` (..., H, W) and ``maps`` (..., E, H, W) agree; return their batch shape."""
    if haadf.ndim < 2:
        raise ValueError(
            f"`haadf` must be an image of shape (H, W) or a batch (..., H, W), got shape {tuple(haadf.shape)}"
        )
    if maps.ndim < 3:
        raise ValueError(
            f"`maps` must have shape (element, H, W) or (..., element, H, W), got shape {tuple(maps.shape)}"
        )
    if tuple(maps.shape[-2:]) != tuple(haadf.shape[-2:]):
        raise ValueError(
            f"`haadf` has shape {tuple(haadf.shape)} but each map in `maps` is {tuple(maps.shape[-2:])}; "
            "they must cover the same pixels (crop or bin one to match)"
        )
    batch = tuple(haadf.shape[:-2])
    if tuple(maps.shape[:-3]) != batch:
        raise ValueError(
            f"`haadf` has batch shape {batch} (shape {tuple(haadf.shape)}) but `maps` has batch shape "
            f"{tuple(maps.shape[:-3])} (shape {tuple(maps.shape)}); give one HAADF image per set of maps, "
            "with the batch axes before (element, H, W)"
        )
    if maps.shape[-3] == 0 or haadf.shape[-2] < 2 or haadf.shape[-1] < 2:
        raise ValueError(f"`maps` of shape {tuple(maps.shape)} is too small: need at least one map of 2 x 2 pixels")
    if 0 in batch:
        raise ValueError(f"the batch shape {batch} of `haadf` and `maps` is empty; give at least one item")
    return batch
