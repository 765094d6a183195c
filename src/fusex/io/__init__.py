"""Reading acquisitions and saving results.

* `read` opens an input file by its suffix: ``.npz`` (the tutorial layout, one
  array per element plus ``HAADF``), ``.nc``/``.zarr`` (a Dataset with
  ``haadf`` and ``maps``).
* `save` writes a result Dataset to netCDF (``.nc``) or zarr (``.zarr``)
  atomically: the file appears complete or not at all, and a failed write
  never replaces a good file.  `load` reads it back.
"""

from .files import load, read, read_npz, save

__all__ = ["load", "read", "read_npz", "save"]
