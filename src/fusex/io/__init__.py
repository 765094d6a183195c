"""Reading acquisitions and saving results.

* `read` opens an input file by its suffix: ``.npz`` (the tutorial layout, one
  array per element plus ``HAADF``), ``.nc``/``.zarr`` (a Dataset with
  ``haadf`` and ``maps``), ``.h5`` (HyperSpy's, or plain datasets), and through
  RosettaSciIO ``.emd``, ``.bcf``, ``.dm3``/``.dm4``, ``.hspy`` and ``.zspy``
  files: their spectrum image is integrated at its X-ray lines, and the HAADF
  image is chosen on the maps' grid (`fusex.io.choose`; `inspect` shows the
  choice).  `INPUT_FORMATS` lists every suffix.
* `from_rsciio`, `from_hyperspy` and `to_hyperspy` convert RosettaSciIO
  reader output and HyperSpy signals (GPL packages, optional).
* `save` writes a result Dataset to netCDF (``.nc``) or zarr (``.zarr``)
  atomically: the file appears complete or not at all, a failed write
  never replaces a good file, and nothing but an earlier fusex result is
  ever replaced (`check_output` tells beforehand).  `load` reads it back.
"""

from .files import check_output, load, read, read_npz, save
from .formats import INPUT_FORMATS
from .inspect import inspect
from .signals import from_hyperspy, from_rsciio, read_rsciio, to_hyperspy

__all__ = [
    "INPUT_FORMATS",
    "check_output",
    "from_hyperspy",
    "from_rsciio",
    "inspect",
    "load",
    "read",
    "read_npz",
    "read_rsciio",
    "save",
    "to_hyperspy",
]
