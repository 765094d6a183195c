"""Figures for fused maps (needs the optional matplotlib: ``pip install "fusex[plot]"``).

Every function takes a `FusionResult` or the labeled result `xarray.Dataset` of
`fusex.fuse`, returns the Figure, draws on given axes when asked (never making a
new figure then), never calls ``plt.show`` and never modifies its inputs.  Maps are
shown in the units of the maps given to `fuse` (normalization undone), images of a
Dataset in its spatial coordinates, those of a `FusionResult` in pixels.
"""

from ._convergence import convergence
from ._maps import compare_maps, line_profile, rgb_overlay
from ._scores import score_surface

__all__ = ["compare_maps", "convergence", "line_profile", "rgb_overlay", "score_surface"]
