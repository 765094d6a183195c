"""Reading acquisitions and saving results.

* `read` opens an input file by its suffix: ``.npz`` (the tutorial layout, one
  array per element plus ``HAADF``), ``.nc``/``.zarr`` (a Dataset with
  ``haadf`` and ``maps``), and through RosettaSciIO ``.emd``, ``.bcf``,
  ``.dm3``/``.dm4`` and ``.hspy`` files holding a HAADF image and element maps.
* `from_rsciio`, `from_hyperspy` and `to_hyperspy` convert RosettaSciIO
  reader output and HyperSpy signals (GPL packages, optional).
* `save` writes a result Dataset to netCDF (``.nc``) or zarr (``.zarr``)
  atomically: the file appears complete or not at all, and a failed write
  never replaces a good file.  `load` reads it back.
"""

from .files import load, read, read_npz, save
from .signals import from_hyperspy, from_rsciio, read_rsciio, to_hyperspy

__all__ = ["from_hyperspy", "from_rsciio", "load", "read", "read_npz", "read_rsciio", "save", "to_hyperspy"]
