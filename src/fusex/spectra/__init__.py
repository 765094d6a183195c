"""EDS and EELS spectrum images to element maps.

* `integrate_lines` sums the channels of each X-ray line's window in a
  spectrum image (an xarray DataArray or a plain array with its energy axis),
  optionally less a linear background fitted through side windows.
* `integrate_signal` does the same for a HyperSpy/exspy EDS signal or a
  RosettaSciIO signal dict, with the lines and detector resolution of its
  metadata (`lines_from_metadata`); `spectrum_dataarray` labels such a
  signal without integrating it.
* `integrate_eels` integrates EELS edges above a power-law background
  (needs HyperSpy); `edge_onset` gives an edge's onset energy.
* `xray_line` and `detector_fwhm` are the line database (xraydb, MIT) and the
  silicon-drift detector resolution they rest on.
"""

from .eels import edge_onset, integrate_eels
from .integrate import DEFAULT_FWHM_MN_KA, DEFAULT_WINDOW, SpectrumWarning, detector_fwhm, integrate_lines
from .lines import XrayLine, xray_line
from .signals import integrate_signal, lines_from_metadata, spectrum_dataarray

__all__ = [
    "DEFAULT_FWHM_MN_KA",
    "DEFAULT_WINDOW",
    "SpectrumWarning",
    "XrayLine",
    "detector_fwhm",
    "edge_onset",
    "integrate_eels",
    "integrate_lines",
    "integrate_signal",
    "lines_from_metadata",
    "spectrum_dataarray",
    "xray_line",
]
