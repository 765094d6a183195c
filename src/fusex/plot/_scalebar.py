"""Scale bars of the map figures: a round length in a readable unit, drawn in the image's coordinates."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from ._data import Maps

__all__ = ["bar_length", "scale_bar"]

_METRES = {"m": 1.0, "mm": 1e-3, "µm": 1e-6, "\u03bcm": 1e-6, "um": 1e-6, "nm": 1e-9, "Å": 1e-10, "pm": 1e-12}
"""Length units a scale bar can convert between, in metres (µ as the micro sign or the Greek letter)."""
_BAR_UNITS = ("m", "mm", "µm", "nm")


def bar_length(most: float, unit: str) -> tuple[float, str]:
    """Choose a scale bar of at most ``most`` (in ``unit``): its length in ``unit`` and its label.

    The bar is 1, 2 or 5 times a power of ten.  A length unit whose number
    would reach 1000, or fall below 1 in a unit above nm, gives way to the SI
    prefix that brings it into [1, 1000) (a 5 nm bar, not 0.005 µm), down to
    nm, the unit of atomic-scale images (0.2 nm, not 200 pm); other units
    (px, none) stay.
    """
    factor = _METRES.get(unit)
    shown, scale = unit, 1.0
    if factor is not None and (most >= 1000 or (most < 1 and factor > _METRES["nm"])):
        shown = next((u for u in _BAR_UNITS if most * factor / _METRES[u] >= 1), _BAR_UNITS[-1])
        scale = factor / _METRES[shown]
    value = most * scale
    power = 10.0 ** np.floor(np.log10(value))
    length = next(m * power for m in (5, 2, 1) if m * power <= value * (1 + 1e-9))
    label = f"{float(f'{length:.6g}'):g} {shown}".strip()
    return float(length / scale), label


def scale_bar(ax: Axes, data: Maps) -> Any:
    """Draw a scale bar about a fifth of the image wide, labeled in the coordinate units."""
    from matplotlib.font_manager import FontProperties
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    x0, x1, y0, y1 = data.extent
    length, text = bar_length(abs(x1 - x0) / 5, data.unit)
    bar = AnchoredSizeBar(
        ax.transData, length, text, "lower right", pad=0.3, sep=2, color="white",
        size_vertical=abs(y1 - y0) / 60, fontproperties=FontProperties(size=7), frameon=True, borderpad=0.4,
    )  # fmt: skip
    bar.patch.set(facecolor="black", alpha=0.45, edgecolor="none")
    bar.set_gid("fusex-scalebar")
    return ax.add_artist(bar)
