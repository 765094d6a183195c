r"""The labeled layer: xarray inputs in, a labeled `xarray.Dataset` out, eagerly or lazily.

`fusex.fuse` hands DataArray/Dataset inputs here.  The data (NumPy or CuPy) are
unwrapped, fused by the array code (`fusex.fuse` on arrays), and wrapped again
with the inputs' coordinates, names and attrs.  xarray cannot hold torch
tensors, so with ``backend="torch"`` the computation runs in torch and the
results come back NumPy-backed.

The last two dimensions of the HAADF image are the spatial ones; any other
dimensions (``frame``, ``tilt``, ``time``, ...) are batch dimensions and must
appear on the maps too.

Dask-backed inputs are fused lazily, one chunk of batch items at a time: each
chunk along the batch dimensions is an independent batched fusion, so
`xarray.apply_ufunc` with ``dask="parallelized"`` maps the fusion over the
chunks and the work spreads over whatever dask scheduler is active (threads,
local processes, or a cluster, ``dask.distributed.Client``).  The spatial and
element dimensions are core dimensions: a fusion couples every pixel of an
image, so they must be one chunk each.

The result Dataset, built in one place for both, holds

* ``maps`` (..., element, y, x): the fused maps in the units of the input
  maps (the normalization undone, as `FusionResult.to_input_units`), with
  the input maps' attrs and a ``units`` attr (``"counts"`` for integer maps
  without one);
* ``raw`` (..., element, y, x): the maps as given; ``haadf`` (..., y, x): the HAADF image as given;
* ``haadf_model`` (..., y, x): :math:`\sum_e w_e x_e^\gamma`, in the HAADF image's units;
* ``haadf_background`` (..., y, x): the fitted offset and smooth background
  :math:`c + B` (`FusionResult.haadf_background`) times the HAADF image's
  range, so ``haadf_model + haadf_background`` is the whole HAADF model in
  the image's units;
* ``history_haadf``, ``history_poisson``, ``history_tv``, ``history_total``,
  ``history_step``, ``history_backtracks``, ``history_tv_iterations`` along ``iteration`` (after the
  batch dimensions; NaN after an item stopped).  A lazy result's
  ``iteration`` runs to the cap ``n_iter`` (its chunks are fused later, so
  it cannot know where they stop), an eager one's to the last iteration run;
* for a batch, ``iterations_run``, ``converged`` and ``stop_reason`` over the
  batch dimensions, and per-item parameters as ``param_<name>``;
* ``param_lambda_chem``, ``param_lambda_tv`` (..., element) when they were given per element;
* coordinates ``element``, ``z`` and ``weight`` (per element; a lazy result
  has ``element`` only) and the spatial coordinates of the inputs;
* attrs: every `FusionParams` field (``lambda_haadf`` resolved; ``n_iter`` is
  the cap), ``engine``, ``iterations_run``, ``converged``, ``stop_reason``, ``fusex_version``, the
  normalization applied (``maps_offset_range``, ``haadf_offset_range``: the
  solver's units are ``(maps - offset) / range``), ``normalization_undone``
  (1: ``maps`` are in input units) and ``saturated_pixels`` (HAADF pixels left
  out of the HAADF term).  A lazy result holds the per-item ones
  (``iterations_run`` ... ``saturated_pixels``) as variables, computed with
  the rest.

Datasets written by fusex 0.1 held ``maps`` in the solver's normalized units;
`to_input_units` reads both.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import array_api_compat
import numpy as np
import xarray as xr

from ._eager import RunOptions, fuse_arrays
from ._per_item import per_item
from ._version import __version__
from ._xp import to_numpy
from .inputs import check_labels, match_labels
from .params import PER_ELEMENT_FIELDS, PER_ITEM_FIELDS, FusionParams, PerElement
from .result import FusionResult
from .result._history import HISTORY_COLUMNS

__all__ = [
    "ELEMENT_DIM",
    "check_params_fit",
    "fuse_labeled",
    "is_labeled",
    "is_lazy",
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
_STOP_REASON = np.dtype("<U16")
"""Fixed-width text for a lazy ``stop_reason`` (dask needs the dtype before the chunks run)."""


def is_labeled(*objects: Any) -> bool:
    """Return True if any of ``objects`` is an xarray DataArray or Dataset."""
    return any(isinstance(o, (xr.DataArray, xr.Dataset)) for o in objects)


def is_lazy(*arrays: xr.DataArray) -> bool:
    """Return True if any of ``arrays`` holds dask data."""
    return any(a.chunks is not None for a in arrays)


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


def fuse_labeled(
    haadf: Any,
    maps: Any,
    *,
    elements: Sequence[str] | None,
    z: Sequence[int] | None,
    params: FusionParams | None,
    run: RunOptions,
    saturated: Any = "auto",
    negative: str = "raise",
) -> xr.Dataset:
    """Fuse labeled inputs (DataArrays, or one Dataset): eagerly, or lazily for dask data.

    Parameters are those of `fusex.fuse`, with the run options in ``run``.

    Returns
    -------
    xarray.Dataset
        The labeled result (see the module docstring); lazy for dask-backed inputs.

    """
    haadf, maps, symbols = unwrap(haadf, maps, elements)
    if isinstance(params, FusionParams):
        check_params_fit(haadf, params)
    if is_lazy(haadf, maps):
        return _fuse_lazy(haadf, maps, symbols, z=z, params=params, run=run, saturated=saturated, negative=negative)
    result = fuse_arrays(
        haadf.data,
        maps.data,
        elements=symbols,
        z=z,
        params=params,
        run=run,
        saturated=labeled_mask(saturated, haadf),
        negative=negative,
    )
    return result_to_dataset(result, haadf, maps)


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
    return model * per_item(scale[..., 1], model) + per_item(scale[..., 0], model)


def background_in_input_units(result: FusionResult) -> Any:
    """Return the HAADF background of ``result`` in the HAADF image's units, ``background * range``.

    The normalization's offset is already in `model_in_input_units`, so the two add up to the whole model.
    """
    span = np.asarray(result.scale["haadf"], dtype=np.float64)[..., 1]
    return result.haadf_background * per_item(span, result.haadf_background)


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


def _summary(result: FusionResult) -> dict[str, Any]:
    """Return the per-item outcome of ``result`` as arrays of its batch shape (offset ranges with a ``bound`` axis)."""
    return {
        "iterations_run": np.asarray(result.n_iter, dtype=np.int64),
        "converged": np.asarray(result.converged, dtype=bool),
        "stop_reason": np.asarray(result.stop_reason, dtype=str),
        "saturated_pixels": np.asarray(result.saturated, dtype=np.int64),
        "haadf_offset_range": np.asarray(result.scale["haadf"], dtype=np.float64),
        "maps_offset_range": np.asarray(result.scale["maps"], dtype=np.float64),
    }


def _summary_dims(batch_dims: tuple) -> dict[str, tuple]:
    """Return the dimensions of each `_summary` variable."""
    dims = dict.fromkeys(("iterations_run", "converged", "stop_reason", "saturated_pixels"), batch_dims)
    return dims | {
        "haadf_offset_range": (*batch_dims, "bound"),
        "maps_offset_range": (*batch_dims, ELEMENT_DIM, "bound"),
    }


def _history(result: FusionResult, length: int) -> dict[str, np.ndarray]:
    """Return each history column as an array ``(*batch, length)`` over iterations ``0 .. length - 1`` (NaN: done)."""
    table = result.history
    iterations = np.arange(length)
    if not result.batch_shape:
        return {
            c: table[c].to_numpy() if len(table) == length else table[c].reindex(iterations).to_numpy(dtype=float)
            for c in table.columns
        }
    n_items = int(np.prod(result.batch_shape))
    out = {}
    for column in table.columns:
        wide = table[column].unstack("iteration").reindex(index=range(n_items), columns=iterations)
        out[column] = wide.to_numpy(dtype=float).reshape(*result.batch_shape, length)
    return out


def result_to_dataset(result: FusionResult, haadf: xr.DataArray, maps: xr.DataArray) -> xr.Dataset:
    """Build the labeled result of an eager fusion of ``haadf`` and ``maps`` (see the module docstring)."""
    iterations = result.history.index.get_level_values("iteration")
    return _dataset(
        haadf,
        maps,
        _host_or_device(result.to_input_units()),
        _host_or_device(model_in_input_units(result)),
        _host_or_device(background_in_input_units(result)),
        history=_history(result, int(iterations.max()) + 1),
        summary=_summary(result),
        params=result.params,
        elements=result.elements,
        engine=result.engine,
        element_coords=(list(result.z) if result.z else [0] * len(result.elements), result.weights),
    )


def _dataset(
    haadf: xr.DataArray,
    maps: xr.DataArray,
    fused: Any,
    model: Any,
    background: Any,
    *,
    history: dict[str, Any],
    summary: dict[str, Any],
    params: FusionParams,
    elements: Sequence[str],
    engine: str,
    element_coords: tuple[list[int], Any] | None,
) -> xr.Dataset:
    """Build a result Dataset (the one place one is built) from an eager fusion's data or from dask chunks.

    ``history`` and ``summary`` hold arrays over the batch dimensions (NumPy,
    or dask for a lazy result, whose ``element_coords``, the atomic numbers
    and the HAADF weights, are not known before it is computed: None).
    """
    lazy = element_coords is None
    batch_dims = haadf.dims[:-2]
    fused = xr.DataArray(fused, coords=maps.coords, dims=maps.dims, attrs=dict(maps.attrs))
    units = maps_units(maps)
    if units is not None:
        fused.attrs["units"] = units
    fused = fused.assign_coords({ELEMENT_DIM: list(elements)})
    if not lazy:
        z, weights = element_coords
        weight_dims = (*batch_dims, ELEMENT_DIM) if isinstance(weights, np.ndarray) else (ELEMENT_DIM,)
        fused = fused.assign_coords(z=(ELEMENT_DIM, z), weight=(weight_dims, np.asarray(weights, dtype=float)))
    model = xr.DataArray(model, coords=haadf.coords, dims=haadf.dims)
    background = xr.DataArray(background, coords=haadf.coords, dims=haadf.dims)
    if "units" in haadf.attrs:
        model.attrs["units"] = haadf.attrs["units"]
        background.attrs["units"] = haadf.attrs["units"]
    raw = maps.assign_coords({ELEMENT_DIM: fused[ELEMENT_DIM]})
    ds = xr.Dataset({"maps": fused, "raw": raw, "haadf": haadf, "haadf_model": model, "haadf_background": background})
    length = next(iter(history.values())).shape[-1]
    columns = {f"history_{c}": ((*batch_dims, "iteration"), values) for c, values in history.items()}
    ds = ds.assign({**columns, "iteration": np.arange(length)})
    ds.attrs = {**params_attrs(params), "engine": engine, "normalization_undone": 1}
    ds.update(per_element_params(params, tuple(haadf.shape[:-2]), elements, batch_dims))
    counts = summary.pop("saturated_pixels")
    if lazy:
        ds["saturated_pixels"] = (batch_dims, counts)
    else:
        ds.attrs["saturated_pixels"] = int(np.sum(counts))
    if batch_dims or lazy:
        dims = _summary_dims(batch_dims)
        for key, value in params.to_dict().items():
            if key in PER_ITEM_FIELDS and isinstance(value, (list, tuple)):
                ds[f"param_{key}"] = (batch_dims, np.broadcast_to(np.asarray(value, dtype=float), haadf.shape[:-2]))
        ds.update({name: (dims[name], values) for name, values in summary.items()})
    else:
        ds.attrs.update(
            iterations_run=int(summary["iterations_run"]),
            converged=int(summary["converged"]),
            stop_reason=str(summary["stop_reason"]),
            haadf_offset_range=summary["haadf_offset_range"],
            maps_offset_range=summary["maps_offset_range"].ravel(),
        )
    ds["maps"].attrs.setdefault("long_name", "fused elemental maps")
    ds["haadf_model"].attrs["long_name"] = "HAADF model sum_e w_e x_e^gamma"
    ds["haadf_background"].attrs["long_name"] = "HAADF offset and smooth background c + B"
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


def _one_chunk(da: xr.DataArray, core: list[str], name: str) -> xr.DataArray:
    if da.chunks is None:
        return da
    split = [d for d in core if len(da.chunksizes[d]) > 1]
    if split:
        warnings.warn(
            f"`{name}` is split into several chunks along {split}; a fusion couples every pixel of an image, so "
            f"fusex rechunks them to one chunk each. Chunk only along batch dimensions (e.g. "
            f"{name}.chunk({{'frame': 8}})) to avoid this",
            UserWarning,
            stacklevel=5,
        )
        da = da.chunk({d: -1 for d in core})
    return da


def _fuse_lazy(
    haadf: xr.DataArray,
    maps: xr.DataArray,
    elements: Sequence[str] | None,
    *,
    z: Sequence[int] | None,
    params: FusionParams | None,
    run: RunOptions,
    saturated: Any,
    negative: str,
) -> xr.Dataset:
    """Return a lazy Dataset of the fusion of aligned ``haadf`` (..., y, x) and ``maps`` (..., element, y, x)."""
    params = FusionParams() if params is None else params
    if not isinstance(params, FusionParams):
        raise TypeError(f"`params` must be a FusionParams (or None), got {type(params).__name__}")
    if run.callback is not None:
        raise ValueError(
            "`callback` cannot follow a lazy fusion: its chunks run later, inside dask tasks; "
            "compute the inputs first (.load()) to watch the iterations"
        )
    if params.batch_shape:
        raise ValueError(
            "per-item parameters (array-valued FusionParams fields) cannot follow dask chunks; with dask-backed "
            "input give one value per field, and run one fuse per parameter set"
        )
    mask = None if saturated is None or isinstance(saturated, (str, int, float)) else _mask_like(saturated, haadf)
    labels = [str(v) for v in maps[ELEMENT_DIM].values] if elements is None else list(elements)
    params.check_elements(labels)  # here, not when the first chunk is computed
    y, x = haadf.dims[-2:]
    core_h, core_m = [y, x], [ELEMENT_DIM, y, x]
    haadf, maps = _one_chunk(haadf, core_h, "haadf"), _one_chunk(maps, core_m, "maps")
    wide = np.float64 in (haadf.dtype, maps.dtype)
    dtype = np.dtype(np.float64 if wide else np.float32)
    params.check_dtype(dtype)
    length = params.n_iter + 1  # row 0 is the starting point; a chunk stops at the cap at the latest
    chunk_run = replace(run, progress=False)  # one bar per chunk would interleave

    def block(h: Any, m: Any, *given: Any) -> tuple[Any, ...]:
        res = fuse_arrays(
            h,
            m,
            elements=elements,
            z=z,
            params=params,
            run=chunk_run,
            saturated=given[0] if given else saturated,
            negative=negative,
        )
        summary = _summary(res)
        summary["stop_reason"] = summary["stop_reason"].astype(_STOP_REASON)
        shapes = {"haadf_offset_range": (2,), "maps_offset_range": (m.shape[-3], 2)}
        for key, shape in shapes.items():  # one fusion's ranges have no batch axes; a chunk's have its own
            summary[key] = np.broadcast_to(summary[key], (*res.batch_shape, *shape))
        history = _history(res, length)
        return (
            res.to_input_units(),
            model_in_input_units(res),
            background_in_input_units(res),
            *summary.values(),
            *(np.asarray(history[c], dtype=np.float64) for c in HISTORY_COLUMNS),
        )

    summary_dims = _summary_dims(())
    outputs = xr.apply_ufunc(
        block,
        haadf,
        maps,
        *([] if mask is None else [mask]),
        input_core_dims=[core_h, core_m, *([] if mask is None else [core_h])],
        output_core_dims=[core_m, core_h, core_h, *(list(d) for d in summary_dims.values())]
        + [["iteration"]] * len(HISTORY_COLUMNS),
        dask="parallelized",
        output_dtypes=[dtype, dtype, dtype, np.int64, bool, _STOP_REASON, np.int64, np.float64, np.float64]
        + [np.float64] * len(HISTORY_COLUMNS),
        dask_gufunc_kwargs={"output_sizes": {"bound": 2, "iteration": length}},
    )
    fused, model, background, *rest = outputs
    summary = {name: value.data for name, value in zip(summary_dims, rest[: len(summary_dims)])}
    history = {c: value.data for c, value in zip(HISTORY_COLUMNS, rest[len(summary_dims) :])}
    return _dataset(
        haadf,
        maps,
        fused.data,
        model.data,
        background.data,
        history=history,
        summary=summary,
        params=params,
        elements=labels,
        engine="chosen per chunk",
        element_coords=None,
    )


def _mask_like(saturated: Any, haadf: xr.DataArray) -> xr.DataArray:
    """Return a boolean ``saturated`` mask as a DataArray with ``haadf``'s dimensions, sizes and chunks.

    A DataArray is matched by dimension name (in any order, broadcast over
    the ones it lacks); a plain (NumPy or dask) array by position, aligned
    with ``haadf``'s last dimensions.
    """
    if not isinstance(saturated, xr.DataArray):
        ndim = getattr(saturated, "ndim", None)
        if ndim is None or not 0 < ndim <= haadf.ndim:
            raise TypeError(
                f"`saturated` must be 'auto', None, a number or a boolean mask shaped like `haadf` {haadf.shape}, "
                f"got {type(saturated).__name__}"
            )
        saturated = xr.DataArray(saturated, dims=haadf.dims[haadf.ndim - ndim :])
    if saturated.dtype != bool:
        raise TypeError(f"`saturated` has dtype {saturated.dtype}; give a boolean mask (True = saturated pixel)")
    wrong = {d: (n, haadf.sizes.get(d)) for d, n in saturated.sizes.items() if haadf.sizes.get(d) != n}
    if wrong:
        raise ValueError(
            f"`saturated` has sizes {dict(saturated.sizes)} but `haadf` has {dict(haadf.sizes)}; give one flag per "
            "HAADF pixel, with the HAADF's dimensions"
        )
    mask = saturated.variable.set_dims(dict(haadf.sizes)).transpose(*haadf.dims)
    mask = xr.DataArray(mask)
    return mask.chunk(dict(haadf.chunksizes)) if haadf.chunks is not None else mask
