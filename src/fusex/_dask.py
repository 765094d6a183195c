"""Lazy fusion of dask-backed xarray inputs, one chunk of batch items at a time.

`fusex.fuse` sends labeled inputs whose data are dask arrays here.  Each chunk
along the batch dimensions (``frame``, ``tilt``, ...) is an independent
batched fusion, so `xarray.apply_ufunc` with ``dask="parallelized"`` maps
`fusex.fuse` over the chunks and the work spreads over whatever dask
scheduler is active: threads, local processes, or a cluster
(``dask.distributed.Client``).  The spatial and element dimensions are core
dimensions: a fusion couples every pixel of an image, so they must be one
chunk each.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from .params import FusionParams

__all__ = ["fuse_lazy", "is_lazy"]


def is_lazy(*arrays: xr.DataArray) -> bool:
    """Return True if any of ``arrays`` holds dask data."""
    return any(a.chunks is not None for a in arrays)


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
            stacklevel=4,
        )
        da = da.chunk({d: -1 for d in core})
    return da


def fuse_lazy(
    haadf: xr.DataArray,
    maps: xr.DataArray,
    elements: Sequence[str] | None,
    *,
    z: Sequence[int] | None,
    params: FusionParams,
    backend: str | None,
    device: Any,
    batch_size: int | None,
    on_divergence: str = "raise",
    saturated: Any = "auto",
    negative: str = "raise",
) -> xr.Dataset:
    """Return a lazy Dataset of the fusion of aligned ``haadf`` (..., y, x) and ``maps`` (..., element, y, x)."""
    from .api import fuse
    from .xarray import ELEMENT_DIM, maps_units, model_in_input_units, params_attrs, per_element_params

    if isinstance(params, str):
        raise ValueError("params='auto' needs the data in memory: tune on one frame (fusex.tune), then fuse the series")
    if not isinstance(params, FusionParams):
        raise TypeError(f"`params` must be a FusionParams (or None), got {type(params).__name__}")
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

    def block(h: Any, m: Any, *given: Any) -> tuple[Any, ...]:
        res = fuse(
            h,
            m,
            elements=elements,
            z=z,
            params=params,
            backend=backend,
            device=device,
            batch_size=batch_size,
            on_divergence=on_divergence,
            saturated=given[0] if given else saturated,
            negative=negative,
        )
        batch = np.shape(res.n_iter)
        scales = (
            np.broadcast_to(np.asarray(res.scale[k], dtype=np.float64), (*batch, *shape))
            for k, shape in (("haadf", (2,)), ("maps", (m.shape[-3], 2)))
        )
        fused, model = res.to_input_units(), model_in_input_units(res)
        counts = np.asarray(res.saturated, dtype=np.int64)
        return (fused, model, np.asarray(res.n_iter), np.asarray(res.converged), counts, *scales)

    fused, model, n_iter, converged, saturated_pixels, haadf_scale, maps_scale = xr.apply_ufunc(
        block,
        haadf,
        maps,
        *([] if mask is None else [mask]),
        input_core_dims=[core_h, core_m, *([] if mask is None else [core_h])],
        output_core_dims=[core_m, core_h, [], [], [], ["bound"], [ELEMENT_DIM, "bound"]],
        dask="parallelized",
        output_dtypes=[dtype, dtype, np.int64, bool, np.int64, np.float64, np.float64],
        dask_gufunc_kwargs={"output_sizes": {"bound": 2}},
    )
    fused.attrs = dict(maps.attrs)
    fused.attrs.setdefault("long_name", "fused elemental maps")
    units = maps_units(maps)
    if units is not None:
        fused.attrs["units"] = units
    model.attrs["long_name"] = "HAADF model sum_e w_e x_e^gamma"
    ds = xr.Dataset(
        {
            "maps": fused,
            "raw": maps,
            "haadf": haadf,
            "haadf_model": model,
            "iterations_run": n_iter,
            "converged": converged,
            "saturated_pixels": saturated_pixels,
            "haadf_offset_range": haadf_scale,
            "maps_offset_range": maps_scale,
        }
    )
    ds.attrs = {**params_attrs(params), "engine": "chosen per chunk", "normalization_undone": 1}
    ds.update(per_element_params(params, (), labels, ()))
    return ds


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
