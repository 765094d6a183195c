r"""The xarray boundary: labeled inputs in, a labeled `xarray.Dataset` out.

`fuse` hands DataArray/Dataset inputs here.  The data (NumPy or CuPy) are
unwrapped, fused by the array code, and wrapped again with the inputs'
coordinates, names and attrs.  xarray cannot hold torch tensors, so with
``backend="torch"`` the computation runs in torch and the results come back
NumPy-backed.

The last two dimensions of the HAADF image are the spatial ones; any other
dimensions (``frame``, ``tilt``, ``time``, ...) are batch dimensions and must
appear on the maps too.  Dask-backed inputs are fused lazily, chunk by chunk
(see `fusex._dask`).

The result Dataset holds

* ``maps`` (..., element, y, x): the fused maps in the units of the input
  maps (the normalization undone, as `FusionResult.to_input_units`), with
  the input maps' attrs and a ``units`` attr (``"counts"`` for integer maps
  without one);
* ``raw`` (..., element, y, x): the maps as given; ``haadf`` (..., y, x): the HAADF image as given;
* ``haadf_model`` (..., y, x): :math:`\sum_e w_e x_e^\gamma`, in the HAADF image's units;
* ``history_haadf``, ``history_poisson``, ``history_tv``, ``history_total``,
  ``history_step``, ``history_backtracks`` along ``iteration`` (after the
  batch dimensions; NaN after an item stopped);
* for a batch, ``iterations_run``, ``converged`` and ``stop_reason`` over the
  batch dimensions, and per-item parameters as ``param_<name>``;
* ``param_lambda_chem``, ``param_lambda_tv`` (..., element) when they were given per element;
* coordinates ``element``, ``z`` and ``weight`` (per element) and the spatial
  coordinates of the inputs;
* attrs: every `FusionParams` field (``lambda_haadf`` resolved; ``n_iter`` is
  the cap), ``engine``, ``iterations_run``, ``converged``, ``stop_reason``, ``fusex_version``, the
  normalization applied (``maps_offset_range``, ``haadf_offset_range``: the
  solver's units are ``(maps - offset) / range``), ``normalization_undone``
  (1: ``maps`` are in input units) and ``saturated_pixels`` (HAADF pixels left
  out of the HAADF term).

Datasets written by fusex 0.1 held ``maps`` in the solver's normalized units;
`to_input_units` reads both.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import array_api_compat
import numpy as np
import xarray as xr

from ._xp import per_image, to_numpy
from .inputs import check_labels, match_labels
from .params import PER_ELEMENT_FIELDS, PER_ITEM_FIELDS, FusionParams, PerElement
from .result import FusionResult

__all__ = [
    "ELEMENT_DIM",
    "check_params_fit",
    "is_labeled",
    "label",
    "labeled_mask",
    "params_attrs",
    "per_element_params",
    "result_to_dataset",
    "to_input_units",
    "unwrap",
]

ELEMENT_DIM = "element"
"""Name of the element dimension of labeled maps."""
_HAADF_NAMES = ("haadf", "HAADF")


def is_labeled(*objects: Any) -> bool:
    """Return True if any of ``objects`` is an xarray DataArray or Dataset."""
    return any(isinstance(o, (xr.DataArray, xr.Dataset)) for o in objects)


def label(
    haadf: Any,
    maps: Any,
    elements: Sequence[str],
    *,
    pixel_size: float | None = None,
    unit: str = "px",
    dims: tuple[str, str] = ("y", "x"),
) -> xr.Dataset:
    """Wrap plain arrays as a Dataset that `fuse` accepts (``haadf`` and ``maps`` variables).

    Parameters
    ----------
    haadf : array (H, W)
        The HAADF image.
    maps : array (E, H, W)
        The elemental maps.
    elements : sequence of str
        Symbols, one per map and each once; they become the ``element`` coordinate.
    pixel_size : float, optional
        Pixel spacing; the spatial coordinates are ``index * pixel_size`` in
        ``unit`` (pixel indices in ``"px"`` when not given).
    unit : str
        Unit of ``pixel_size`` (``"nm"``, ``"Å"``, ...).
    dims : (str, str)
        Names of the row and column dimensions.

    """
    names = check_labels(elements)
    height, width = haadf.shape[-2:]
    step = 1.0 if pixel_size is None else float(pixel_size)
    coords = {
        dims[0]: (dims[0], np.arange(height) * step, {"units": unit}),
        dims[1]: (dims[1], np.arange(width) * step, {"units": unit}),
    }
    return xr.Dataset(
        {
            "haadf": (dims, haadf),
            "maps": ((ELEMENT_DIM, *dims), maps),
        },
        coords={**coords, ELEMENT_DIM: list(names)},
    )


def _from_dataset(ds: xr.Dataset) -> tuple[xr.DataArray, xr.DataArray]:
    haadf_names = [n for n in _HAADF_NAMES if n in ds.data_vars]
    if not haadf_names:
        raise ValueError(
            f"the Dataset has no HAADF variable: name it 'haadf' (variables found: {sorted(map(str, ds.data_vars))})"
        )
    haadf = ds[haadf_names[0]]
    if "maps" in ds.data_vars:
        return haadf, ds["maps"]
    others = [n for n in ds.data_vars if n not in _HAADF_NAMES and ds[n].dims == haadf.dims]
    if not others:
        raise ValueError(
            "the Dataset has no chemical maps: give a 'maps' variable with an 'element' dimension, "
            "or one variable per element named by its symbol, on the HAADF image's dimensions"
        )
    maps = xr.concat([ds[n] for n in others], dim=xr.DataArray([str(n) for n in others], dims=ELEMENT_DIM))
    return haadf, maps.rename(None)


def unwrap(
    haadf: Any, maps: Any, elements: Sequence[str] | None
) -> tuple[xr.DataArray, xr.DataArray, tuple[str, ...] | None]:
    """Check and align labeled inputs; return HAADF (..., y, x), maps (..., element, y, x) and the symbols.

    With ``elements`` given and an ``element`` coordinate on the maps, the
    two must hold the same names; in another order, the maps are reordered
    to follow ``elements`` (taken by name).

    Raises
    ------
    ValueError
        For a missing dimension, misaligned coordinates, extra dimensions,
        repeated element names, or ``elements`` that contradict the
        ``element`` coordinate (both lists are named).

    """
    if isinstance(haadf, xr.Dataset):
        if maps is not None:
            raise TypeError("pass either one Dataset, or `haadf` and `maps`, not a Dataset and `maps`")
        haadf, maps = _from_dataset(haadf)
    if not isinstance(haadf, xr.DataArray) or not isinstance(maps, xr.DataArray):
        raise TypeError(
            "with xarray input give both `haadf` and `maps` as DataArrays (or one Dataset); got "
            f"{type(haadf).__name__} and {type(maps).__name__}"
        )
    if haadf.ndim < 2:
        raise ValueError(f"`haadf` must have two spatial dimensions (its last two), got {haadf.dims}")
    if ELEMENT_DIM not in maps.dims:
        raise ValueError(
            f"`maps` has dimensions {maps.dims} but no '{ELEMENT_DIM}' dimension; "
            f"name the dimension that runs over elements '{ELEMENT_DIM}' (maps.rename({{'...': '{ELEMENT_DIM}'}}))"
        )
    missing = [d for d in haadf.dims if d not in maps.dims]
    extra = [d for d in maps.dims if d not in (*haadf.dims, ELEMENT_DIM)]
    if missing:
        raise ValueError(f"`maps` lacks the HAADF image's dimension(s) {missing}: both must span the same pixels")
    if extra:
        raise ValueError(
            f"`maps` has dimension(s) {extra} that `haadf` lacks; give one HAADF image per map set "
            "(batch dimensions must appear on both)"
        )
    maps = maps.transpose(*haadf.dims[:-2], ELEMENT_DIM, *haadf.dims[-2:])
    try:
        haadf, maps = xr.align(haadf, maps, join="exact")
    except ValueError as exc:
        raise ValueError(
            f"the coordinates of `haadf` and `maps` do not match ({exc}); they must label the same pixels. "
            "Use xr.align or .interp to bring them onto one grid first"
        ) from None
    if ELEMENT_DIM in maps.coords:
        what = f"the '{ELEMENT_DIM}' coordinate of `maps`"
        names = check_labels([str(v) for v in maps.coords[ELEMENT_DIM].values], what)
        if elements is not None:
            order = match_labels(elements, names, what)
            maps, names = maps.isel({ELEMENT_DIM: order}), tuple(names[i] for i in order)
        elements = names
    elif elements is not None:
        elements = check_labels(elements)
    return haadf, maps, elements


def check_params_fit(haadf: xr.DataArray, params: FusionParams) -> None:
    """Refuse per-item parameters that would add batch axes the labeled inputs do not have."""
    batch = tuple(haadf.shape[:-2])
    try:
        fits = np.broadcast_shapes(batch, params.batch_shape) == batch
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(
            f"the per-item parameters have shape {params.batch_shape}, which does not fit the batch dimensions "
            f"{dict(zip(haadf.dims[:-2], batch))} of the labeled inputs; with xarray, give the data a dimension for "
            "them first, e.g. ds.expand_dims(sweep=3) for three parameter values"
        )


def _host_or_device(x: Any) -> Any:
    """NumPy or CuPy data for xarray (torch tensors come back to the host)."""
    return x if array_api_compat.is_cupy_array(x) else np.asarray(to_numpy(x))


def _attr_value(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if value is None:
        return "None"
    if isinstance(value, (list, tuple)):
        return np.asarray(value, dtype=float)
    return value


def labeled_mask(saturated: Any, haadf: xr.DataArray) -> Any:
    """Return a DataArray ``saturated`` mask as data aligned with ``haadf``, and anything else as it is."""
    if not isinstance(saturated, xr.DataArray):
        return saturated
    missing = [d for d in saturated.dims if d not in haadf.dims]
    if missing:
        raise ValueError(f"`saturated` has dimension(s) {missing} that `haadf` lacks; give it the HAADF's dimensions")
    return saturated.broadcast_like(haadf).transpose(*haadf.dims).data


def maps_units(maps: xr.DataArray) -> str | None:
    """Return the input maps' ``units`` attr, or ``"counts"`` for integer maps without one."""
    units = maps.attrs.get("units")
    if units is None and np.issubdtype(maps.dtype, np.integer):
        return "counts"
    return None if units is None else str(units)


def model_in_input_units(result: FusionResult) -> Any:
    """Return the HAADF model of ``result`` with the HAADF normalization undone, ``model * range + offset``."""
    scale = np.asarray(result.scale["haadf"], dtype=np.float64)
    model = result.haadf_model
    return model * per_image(scale[..., 1], model) + per_image(scale[..., 0], model)


def to_input_units(result: FusionResult | xr.Dataset) -> Any:
    """Return the fused maps of a result in the units of the input maps.

    Parameters
    ----------
    result : FusionResult or xarray.Dataset
        A `FusionResult`, or a labeled result from `fusex.fuse` (also one read
        back from a file).

    Returns
    -------
    array or xarray.DataArray
        ``x * range + offset``, per map and batch item, for a `FusionResult`
        (see `FusionResult.to_input_units`); for a Dataset, its ``maps``,
        which fusex writes in input units already (Datasets of fusex 0.1,
        without the ``normalization_undone`` attr, held normalized maps and
        are converted with their ``maps_offset_range``).

    """
    if isinstance(result, FusionResult):
        return result.to_input_units()
    if not isinstance(result, xr.Dataset) or "maps" not in result:
        raise TypeError(f"`result` must be a FusionResult or a Dataset from fusex.fuse, got {type(result).__name__}")
    maps = result["maps"]
    if result.attrs.get("normalization_undone", 0):
        return maps.copy()
    if "maps_offset_range" in result.data_vars:
        scale = result["maps_offset_range"]
        return maps * scale.isel(bound=1) + scale.isel(bound=0)
    flat = np.asarray(result.attrs.get("maps_offset_range", [0.0, 1.0] * maps.sizes[ELEMENT_DIM]), dtype=float)
    offset, span = (xr.DataArray(v, dims=ELEMENT_DIM) for v in flat.reshape(-1, 2).T)
    return maps * span + offset


def result_to_dataset(result: FusionResult, haadf: xr.DataArray, maps: xr.DataArray) -> xr.Dataset:
    """Build the labeled result of a fusion of ``haadf`` and ``maps`` (see the module docstring)."""
    batch_dims = haadf.dims[:-2]
    fused = xr.DataArray(
        _host_or_device(result.to_input_units()), coords=maps.coords, dims=maps.dims, attrs=dict(maps.attrs)
    )
    units = maps_units(maps)
    if units is not None:
        fused.attrs["units"] = units
    z = list(result.z) if result.z else [0] * len(result.elements)
    fused = fused.assign_coords({ELEMENT_DIM: list(result.elements), "z": (ELEMENT_DIM, z)})
    weight_dims = (*batch_dims, ELEMENT_DIM) if isinstance(result.weights, np.ndarray) else (ELEMENT_DIM,)
    fused = fused.assign_coords(weight=(weight_dims, np.asarray(result.weights, dtype=float)))
    model = xr.DataArray(_host_or_device(model_in_input_units(result)), coords=haadf.coords, dims=haadf.dims)
    if "units" in haadf.attrs:
        model.attrs["units"] = haadf.attrs["units"]
    raw = maps.assign_coords({ELEMENT_DIM: fused[ELEMENT_DIM]})
    ds = xr.Dataset({"maps": fused, "raw": raw, "haadf": haadf, "haadf_model": model})
    ds = ds.assign(_history(result, batch_dims))
    params = result.params.to_dict()
    per_item = {k: v for k, v in params.items() if k in PER_ITEM_FIELDS and isinstance(v, (list, tuple))}
    ds.attrs = {
        **params_attrs(result.params),
        "engine": result.engine,
        "normalization_undone": 1,
        "saturated_pixels": int(np.sum(result.saturated)),
    }
    ds.update(per_element_params(result.params, result.batch_shape, result.elements, batch_dims))
    if batch_dims:
        shape = result.batch_shape
        for key, value in per_item.items():
            ds[f"param_{key}"] = (batch_dims, np.broadcast_to(np.asarray(value, dtype=float), shape))
        ds["iterations_run"] = (batch_dims, np.asarray(result.n_iter))
        ds["converged"] = (batch_dims, np.asarray(result.converged))
        ds["stop_reason"] = (batch_dims, np.asarray(result.stop_reason, dtype=str))
        ds["haadf_offset_range"] = ((*batch_dims, "bound"), result.scale["haadf"])
        ds["maps_offset_range"] = ((*batch_dims, ELEMENT_DIM, "bound"), result.scale["maps"])
    else:
        ds.attrs.update(
            iterations_run=result.n_iter,
            converged=int(result.converged),
            stop_reason=result.stop_reason,
            haadf_offset_range=np.asarray(result.scale["haadf"], dtype=float),
            maps_offset_range=np.asarray(result.scale["maps"], dtype=float).ravel(),
        )
    ds["maps"].attrs.setdefault("long_name", "fused elemental maps")
    ds["haadf_model"].attrs["long_name"] = "HAADF model sum_e w_e x_e^gamma"
    return ds


def per_element_params(
    params: FusionParams, batch_shape: tuple[int, ...], elements: Sequence[str], batch_dims: tuple
) -> dict[str, Any]:
    """Variables ``param_<field>`` (..., element) for the fields given per element (``param_prior``: names)."""
    priors = {}
    if isinstance(params.prior, PerElement):
        names = np.broadcast_to(np.asarray(params.priors(elements)), (*batch_shape, len(elements)))
        priors["param_prior"] = ((*batch_dims, ELEMENT_DIM), names)
    return priors | {
        f"param_{name}": (
            (*batch_dims, ELEMENT_DIM),
            params.map_values(name, batch_shape, elements).reshape(*batch_shape, len(elements)),
        )
        for name in PER_ELEMENT_FIELDS
        if isinstance(getattr(params, name), PerElement)
    }


def params_attrs(params: FusionParams) -> dict[str, Any]:
    """Dataset attrs recording ``params`` (per-item fields only in the ``fusex_params`` JSON) and the version."""
    from . import __version__

    values = params.to_dict()
    # a per-element prior is a mapping of names: it goes to the JSON and to the param_prior variable
    scalar = {
        k: v
        for k, v in values.items()
        if not ((k in PER_ITEM_FIELDS or k == "prior") and isinstance(v, (list, tuple, dict)))
    }
    return {
        **{key: _attr_value(value) for key, value in scalar.items()},
        "fusex_params": json.dumps(values),
        "fusex_version": __version__,
    }


def _history(result: FusionResult, batch_dims: tuple) -> dict[str, Any]:
    """History columns as variables: along ``iteration``, after the batch dimensions for a batch."""
    table = result.history
    if not batch_dims:
        return {f"history_{c}": ("iteration", table[c].to_numpy()) for c in table.columns} | {
            "iteration": table.index.to_numpy()
        }
    iterations = np.arange(table.index.get_level_values("iteration").max() + 1)
    n_items = int(np.prod(result.batch_shape))
    out: dict[str, Any] = {"iteration": iterations}
    for column in table.columns:
        wide = table[column].unstack("iteration").reindex(index=range(n_items), columns=iterations)
        values = wide.to_numpy(dtype=float).reshape(*result.batch_shape, iterations.size)
        out[f"history_{column}"] = ((*batch_dims, "iteration"), values)
    return out
