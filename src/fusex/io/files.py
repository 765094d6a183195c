"""npz input, and atomic netCDF/zarr results."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import xarray as xr

from ..xarray import label
from .signals import RSCIIO_READERS, read_rsciio

__all__ = ["load", "read", "read_npz", "save"]

_HAADF_KEYS = ("haadf", "HAADF", "Haadf")


def read_npz(path: str | os.PathLike, *, elements: list[str] | None = None) -> xr.Dataset:
    """Read the tutorial ``.npz`` layout: one 2-D array per element plus ``HAADF``.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.npz`` file.
    elements : list of str, optional
        Keys to use as maps, in this order (default: every key but the HAADF one).

    Returns
    -------
    xarray.Dataset
        ``haadf`` (y, x) and ``maps`` (element, y, x), pixel coordinates.

    """
    with np.load(path) as archive:
        keys = list(archive.keys())
        haadf_key = next((k for k in _HAADF_KEYS if k in keys), None)
        if haadf_key is None:
            raise ValueError(f"{path}: no HAADF array (looked for {_HAADF_KEYS}; keys are {keys})")
        names = [k for k in keys if k != haadf_key] if elements is None else list(elements)
        missing = [n for n in names if n not in keys]
        if missing:
            raise ValueError(f"{path}: no array for element(s) {missing}; keys are {keys}")
        if not names:
            raise ValueError(f"{path}: holds a HAADF image but no elemental maps")
        haadf = archive[haadf_key]
        maps = [archive[n] for n in names]
    shapes = {m.shape for m in maps} | {haadf.shape}
    if len(shapes) != 1 or haadf.ndim != 2:
        raise ValueError(f"{path}: HAADF and maps must be 2-D arrays of one shape, found shapes {sorted(shapes)}")
    return label(haadf, np.stack(maps), names)


def read(path: str | os.PathLike, *, elements: list[str] | None = None) -> xr.Dataset:
    """Open an acquisition for `fusex.fuse` by its suffix (``.npz``, ``.nc``, ``.zarr``, RosettaSciIO formats).

    A saved fusion result opens as its inputs (``haadf`` and the ``raw`` maps),
    so it can be fused again with other parameters.

    Raises
    ------
    ValueError
        For an unknown suffix or a file without HAADF and maps.
    FileNotFoundError
        If ``path`` does not exist.

    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return read_npz(path, elements=elements)
    if suffix in (".nc", ".zarr"):
        ds = load(path)
        if "raw" in ds and "fusex_version" in ds.attrs:
            # A saved fusion result: its inputs are the raw maps and the HAADF image, not the fused maps.
            ds = xr.Dataset({"haadf": ds["haadf"], "maps": ds["raw"]})
        if elements is not None:
            ds = ds.sel(element=list(elements))
        return ds
    if suffix in RSCIIO_READERS:
        return read_rsciio(path, elements=elements)
    known = ", ".join([".npz", ".nc", ".zarr", *RSCIIO_READERS])
    raise ValueError(f"{path}: unknown file type {suffix!r}; fusex reads {known}")


def _engine_for_netcdf() -> str | None:
    for module, engine in (("netCDF4", "netcdf4"), ("h5netcdf", "h5netcdf")):
        try:
            __import__(module)
        except ImportError:
            continue
        return engine
    return "scipy"  # netCDF3, always available with scipy


def save(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write a Dataset to ``.nc`` (netCDF) or ``.zarr`` atomically.

    The data go to a temporary sibling first, which then replaces ``path`` in
    one rename; on any error the temporary is removed and an existing file at
    ``path`` is left as it was.  GPU-backed variables are copied to the host.

    Returns
    -------
    pathlib.Path
        The path written.

    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".nc", ".zarr"):
        raise ValueError(f"cannot save to {path}: use a .nc (netCDF) or .zarr path")
    ds = ds.as_numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent)) / path.name
    try:
        if suffix == ".nc":
            ds.to_netcdf(tmp, engine=_engine_for_netcdf())
            os.replace(tmp, path)
        else:
            # Format 2 stores strings and consolidated metadata by its own specification.
            ds.to_zarr(tmp, mode="w", zarr_format=2, consolidated=True)
            _replace_directory(tmp, path)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)
    return path


def _replace_directory(new: Path, target: Path) -> None:
    """Swap a finished zarr store into place (a directory cannot be replaced in one rename)."""
    if not target.exists():
        os.replace(new, target)
        return
    old = new.parent / (target.name + ".old")
    os.replace(target, old)
    try:
        os.replace(new, target)
    except OSError:
        os.replace(old, target)  # put the good store back
        raise


def load(path: str | os.PathLike) -> xr.Dataset:
    """Read a saved result (``.nc`` or ``.zarr``) fully into memory."""
    path = Path(path)
    if path.suffix.lower() == ".zarr":
        with xr.open_zarr(path) as ds:
            return ds.load()
    with xr.open_dataset(path) as ds:
        return ds.load()
