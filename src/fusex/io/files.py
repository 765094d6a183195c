"""npz input, and atomic netCDF/zarr results."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import xarray as xr

from ..errors import FusexError, OutputExistsError, UnreadableFileError
from ..labeled import label
from ._swap import exchange
from .formats import INPUT_FORMATS, MICROSCOPE_FORMATS
from .signals import read_rsciio

__all__ = ["check_output", "load", "read", "read_npz", "save"]

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

    Raises
    ------
    UnreadableFileError
        If the file is empty, truncated or not an ``.npz`` archive, lacks the
        HAADF image or an element asked for, or holds arrays of different shapes.
    ValueError
        If ``elements`` names a map twice.

    """
    names = _unique_elements(elements)
    with _reading(path, "not a complete .npz archive"):
        loaded = np.load(path)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise UnreadableFileError(path, "it holds a single .npy array, not an .npz archive of HAADF and maps")
    with loaded as archive, _reading(path, "a damaged .npz archive"):
        keys = list(archive.keys())
        haadf_key = next((k for k in _HAADF_KEYS if k in keys), None)
        if haadf_key is None:
            raise UnreadableFileError(path, f"no HAADF array (looked for {_HAADF_KEYS}; keys are {keys})")
        names = [k for k in keys if k != haadf_key] if names is None else names
        missing = [n for n in names if n not in keys]
        if missing:
            raise UnreadableFileError(path, f"no array for element(s) {missing}; keys are {keys}")
        if not names:
            raise UnreadableFileError(path, "holds a HAADF image but no elemental maps")
        haadf = archive[haadf_key]
        maps = [archive[n] for n in names]
    shapes = {m.shape for m in maps} | {haadf.shape}
    if len(shapes) != 1 or haadf.ndim != 2:
        raise UnreadableFileError(
            path, f"HAADF and maps must be 2-D arrays of one shape, found shapes {sorted(shapes)}"
        )
    return label(haadf, np.stack(maps), names)


def _unique_elements(elements: list[str] | None) -> list[str] | None:
    if elements is None:
        return None
    names = list(elements)
    repeated = sorted({str(n) for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"elements names {repeated} more than once ({names}); name each map once")
    return names


@contextmanager
def _reading(path: str | os.PathLike, what: str | None = None) -> Iterator[None]:
    """Turn whatever a third-party reader raises on a bad file into one `UnreadableFileError` naming it.

    Readers fail on damaged files with anything from `EOFError` and
    `zipfile.BadZipFile` to codec errors; the original stays chained as the cause.
    A missing optional package and running out of memory are not the file's fault and pass through.
    """
    try:
        yield
    except (FusexError, ImportError, MemoryError):
        raise
    except Exception as exc:
        raise UnreadableFileError(path, _describe(path, exc, what)) from exc


def _describe(path: str | os.PathLike, exc: Exception, what: str | None) -> str:
    """One line: what the file seems to be, and the reader's own words."""
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        return "the file is empty (0 bytes)"
    cause = f"{type(exc).__name__}: {' '.join(str(exc).split()) or 'no details'}"
    return f"{what} ({cause})" if what else cause


def read(
    path: str | os.PathLike,
    *,
    elements: list[str] | None = None,
    haadf: str | os.PathLike | None = None,
    lines: list[str] | None = None,
) -> xr.Dataset:
    """Open an acquisition for `fusex.fuse` by its suffix (``.npz``, ``.nc``, ``.zarr``, RosettaSciIO formats).

    A saved fusion result opens as its inputs (``haadf`` and the ``raw`` maps),
    so it can be fused again with other parameters.  Microscope files
    (`fusex.io.formats.MICROSCOPE_FORMATS`) go through `read_rsciio`: their
    spectrum image is integrated at its X-ray lines, and the HAADF image is
    chosen on the maps' grid (see `fusex.io.choose`).

    Parameters
    ----------
    path : str or os.PathLike
        The file; its suffix tells the format (`fusex.io.formats.INPUT_FORMATS`).
    elements : list of str, optional
        The maps to use, by name; for a spectrum image, the element symbols
        to integrate (each at its strongest line in the energy range).
    haadf : str or os.PathLike, optional
        Microscope files only: the title of the HAADF image, or another file
        holding it.
    lines : list of str, optional
        Microscope files only: X-ray lines to integrate from the spectrum
        image (``["Fe_Ka", "O_Ka"]``), instead of those in its metadata.

    Raises
    ------
    UnreadableFileError
        For a file that is empty, truncated, corrupt, without HAADF and maps,
        with repeated element labels, or without an element asked for.  It is
        both an `OSError` and a `ValueError`, and names the file.
    ValueError
        For an unknown suffix, or ``elements`` naming a map twice.
    FileNotFoundError
        If ``path`` does not exist.

    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    names = _unique_elements(elements)
    suffix = path.suffix.lower()
    if (haadf is not None or lines is not None) and suffix not in MICROSCOPE_FORMATS:
        raise ValueError(f"`haadf` and `lines` pick among a microscope file's signals; {suffix} files hold one layout")
    if suffix == ".npz":
        return read_npz(path, elements=names)
    if suffix in (".nc", ".zarr"):
        ds = load(path)
        if "raw" in ds and "fusex_version" in ds.attrs:
            # A saved fusion result: its inputs are the raw maps and the HAADF image, not the fused maps.
            ds = xr.Dataset({"haadf": ds["haadf"], "maps": ds["raw"]})
        return _select(path, ds, names)
    if suffix in MICROSCOPE_FORMATS:
        with _reading(path):
            return read_rsciio(path, elements=names, haadf=haadf, lines=lines)
    known = ", ".join(INPUT_FORMATS)
    raise ValueError(f"{path}: unknown file type {suffix!r}; fusex reads {known}")


def _select(path: Path, ds: xr.Dataset, names: list[str] | None) -> xr.Dataset:
    """Check a loaded Dataset holds labeled inputs, and pick the maps ``names``."""
    if "haadf" not in ds or "maps" not in ds:
        raise UnreadableFileError(path, f"no 'haadf' and 'maps' variables (it holds {sorted(map(str, ds.data_vars))})")
    if "element" not in ds.coords:
        if names is None:
            return ds
        raise UnreadableFileError(path, f"its maps carry no element labels to pick {names} from")
    labels = [str(e) for e in ds["element"].values]
    repeated = sorted({e for e in labels if labels.count(e) > 1})
    if repeated:
        raise UnreadableFileError(path, f"its element labels {labels} repeat {repeated}; each map needs its own label")
    if names is None:
        return ds
    missing = [n for n in names if n not in labels]
    if missing:
        raise UnreadableFileError(path, f"no map for element(s) {missing}; its maps are {labels}")
    return ds.sel(element=names)


_ZARR_METADATA = frozenset({".zattrs", ".zgroup", ".zmetadata", "zarr.json"})
_ZARR_READ_ATTEMPTS = 20
_XARRAY_IN_MEMORY_NETCDF4 = (2025, 9)  # the first xarray to write netCDF4 (h5netcdf) to memory


def save(ds: xr.Dataset, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Write a Dataset to ``.nc`` (netCDF) or ``.zarr`` atomically, replacing nothing but an earlier fusex result.

    Parameters
    ----------
    ds : xarray.Dataset
        The Dataset to write; GPU-backed variables are copied to the host.
    path : str or os.PathLike
        A ``.nc`` or ``.zarr`` path; missing parent folders are created.
    overwrite : bool, optional
        Whether an existing fusex result at ``path`` (a file or store with the
        ``fusex_version`` attribute that `fusex.fuse` writes) may be replaced.
        Default True, so that saving again updates a result; False refuses.
        Anything else at ``path`` (a file or folder fusex did not write, a
        store holding other files too, a symbolic link) is never replaced.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    OutputExistsError
        If something is at ``path`` that may not be replaced.
    OSError
        If writing fails (a full disk, a file size limit, no permission):
        ``path`` is left as it was and the temporary is removed.
    ValueError
        For a suffix other than ``.nc`` or ``.zarr``.
    TypeError
        If ``ds`` is not an `xarray.Dataset`.

    Notes
    -----
    The data go to a hidden sibling ``.NAME.fusex-tmp-PID-XXXXXXXX`` first and
    reach ``path`` only when complete and flushed to the disk.

    * ``.nc``: the file is assembled in memory (so it needs free memory as
      large as the file) and written with plain file I/O, then renamed over
      ``path`` in one step.  HDF5 writing straight to a disk that fills up
      crashes the process; this way a full disk is an `OSError`.  The engine
      is h5netcdf (netCDF4) if installed, else scipy (netCDF3).
    * ``.zarr``: a store is a folder, which no plain rename replaces.  On
      Linux the new store and the old one trade places in one
      ``renameat2(RENAME_EXCHANGE)`` call and the old one, now under the
      hidden name, is deleted: at every moment ``path`` holds a complete
      store, the old or the new, whenever the process dies.  Elsewhere, or
      on a filesystem without that call, the old store first moves aside to
      ``.NAME.fusex-old-PID-XXXXXXXX``; if the process dies before the new one
      moves in, the next save to ``path`` moves the old one back.

    A save first removes the temporaries that killed saves to the same path
    left behind (those whose process no longer runs).

    """
    path = Path(path)
    if not isinstance(ds, xr.Dataset):
        raise TypeError(
            f"save writes an xarray.Dataset, not a {type(ds).__name__}; fuse labeled input "
            "(fusex.labeled.label) to get a result Dataset"
        )
    ds = ds.as_numpy()
    if path.parent.is_dir():
        _tidy(path)
    check_output(path, overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path, "tmp")
    try:
        if path.suffix.lower() == ".nc":
            _write_file(tmp, ds.to_netcdf(engine=_netcdf_engine()))
            os.replace(tmp, path)
        else:
            # Format 2 stores strings and consolidated metadata by its own specification.
            ds.to_zarr(tmp, mode="w-", zarr_format=2, consolidated=True)
            _sync_tree(tmp)
            _swap_in(tmp, path)
        _sync_folder(path.parent)
    finally:
        _remove(tmp)  # after a swap, the old store
    return path


def check_output(path: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Raise unless `save` may write ``path``, without writing anything.

    Parameters
    ----------
    path : str or os.PathLike
        The path `save` would write.
    overwrite : bool, optional
        As for `save`.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    OutputExistsError
        If something is at ``path`` that may not be replaced.
    ValueError
        For a suffix other than ``.nc`` or ``.zarr``.

    """
    path = Path(path)
    if path.suffix.lower() not in (".nc", ".zarr"):
        raise ValueError(f"cannot save to {path}: use a .nc (netCDF) or .zarr path")
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be True or False, got {overwrite!r}")
    _check_replaceable(path, overwrite)
    return path


def _netcdf_engine() -> str:
    try:
        import h5netcdf  # noqa: F401
    except ImportError:
        return "scipy"  # netCDF3; scipy is a dependency of fusex
    if tuple(int(n) for n in re.findall(r"\d+", xr.__version__)[:2]) < _XARRAY_IN_MEMORY_NETCDF4:
        raise ImportError(
            f"saving .nc needs xarray >= {'.'.join(map(str, _XARRAY_IN_MEMORY_NETCDF4))} to write netCDF4 in memory "
            f'(this is xarray {xr.__version__}); pip install "fusex[io]"'
        )
    return "h5netcdf"


def _write_file(path: Path, data: bytes | memoryview) -> None:
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _sync_tree(root: Path) -> None:
    """Flush every file of a store, so that a power cut after the swap cannot leave it empty."""
    for folder, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _sync_folder(folder)


def _sync_folder(folder: str | os.PathLike) -> None:
    if os.name != "posix":
        return  # Windows cannot open a folder to flush it
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _swap_in(new: Path, target: Path) -> None:
    """Put the finished store ``new`` at ``target``; any old store ends up at ``new`` or is removed."""
    if not os.path.lexists(target):
        os.rename(new, target)
        return
    if exchange(new, target):
        return
    old = _temporary(target, "old")
    os.rename(target, old)
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(old, target)
        raise
    _remove(old)


def _temporary(path: Path, kind: str) -> Path:
    return path.parent / f".{path.name}.fusex-{kind}-{os.getpid()}-{secrets.token_hex(4)}"


def _tidy(path: Path) -> None:
    """Clean up after killed saves to ``path``: move back an old store left aside, remove temporaries."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.fusex-(tmp|old)-(\d+)-[0-9a-f]+")
    leftovers = []
    for entry in path.parent.iterdir():
        match = pattern.fullmatch(entry.name)
        if match and not _running(int(match[2])):
            leftovers.append((match[1], entry))
    aside = sorted((e for kind, e in leftovers if kind == "old"), key=lambda e: e.lstat().st_mtime_ns)
    if aside and not os.path.lexists(path):
        os.rename(aside[-1], path)
    for _, entry in leftovers:
        _remove(entry)


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True  # another thread of this process may be saving to the same path
    if os.name != "posix":
        return False  # no safe liveness probe without extra packages: only this process counts as running
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        path.unlink()


def _check_replaceable(path: Path, overwrite: bool) -> None:
    """Raise `OutputExistsError` unless ``path`` is free, or holds a fusex result that may be replaced."""
    if not os.path.lexists(path):
        return
    store = path.suffix.lower() == ".zarr"
    kind = "a symbolic link" if path.is_symlink() else "a folder" if path.is_dir() else "a file"
    advice = "choose another path, or move it away yourself"
    if path.is_symlink() or path.is_dir() != store:
        raise OutputExistsError(path, f"it is {kind}, not a fusex result; {advice}")
    try:
        with _reading(path), _open(path) as existing:
            attrs, names = dict(existing.attrs), {str(n) for n in existing.variables}
    except UnreadableFileError as exc:
        raise OutputExistsError(
            path, f"it is {kind} that is not a readable fusex result ({exc.reason}); {advice}"
        ) from exc
    if "fusex_version" not in attrs:
        raise OutputExistsError(path, f"it is {kind} that fusex did not write (no fusex_version attribute); {advice}")
    if store:
        extra = sorted(set(os.listdir(path)) - names - _ZARR_METADATA)
        if extra:
            raise OutputExistsError(path, f"the store also holds {extra}, which fusex did not write; {advice}")
    if not overwrite:
        raise OutputExistsError(
            path, "it is an earlier fusex result; save with overwrite=True (fusex fuse --overwrite) to replace it"
        )


def _open(path: Path) -> xr.Dataset:
    return xr.open_zarr(path) if path.suffix.lower() == ".zarr" else xr.open_dataset(path)


def load(path: str | os.PathLike) -> xr.Dataset:
    """Read a saved result (``.nc`` or ``.zarr``) fully into memory.

    A zarr store that `save` replaces while it is being read is read again, so
    the Dataset returned is the old store or the new one, never a mix.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    UnreadableFileError
        If it is empty, truncated, corrupt or not netCDF/zarr (an `OSError`
        and a `ValueError`, naming the file).

    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if path.suffix.lower() != ".zarr":
        with _reading(path), _open(path) as ds:
            return ds.load()
    for _ in range(_ZARR_READ_ATTEMPTS):
        before = _identity(path)
        try:
            with _reading(path), _open(path) as ds:
                loaded = ds.load()
        except UnreadableFileError:
            if _identity(path) == before:
                raise
        else:
            if _identity(path) == before:
                return loaded
        time.sleep(0.01)  # replaced during the read: give the save a moment to finish its clean-up
    raise UnreadableFileError(path, f"it was replaced while being read, {_ZARR_READ_ATTEMPTS} times in a row")


def _identity(path: Path) -> tuple[int, int, int] | None:
    """Return what tells the store at ``path`` from its replacement (a reused inode number has a new ctime)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino, st.st_ctime_ns
