"""Quirks of real acquisitions: saturated HAADF pixels, negative and all-zero maps.

Each function works in the caller's array library, on arrays that
`fusex.inputs.validate` has already shape-checked, and never modifies them.
"""

from __future__ import annotations

import math
import numbers
import warnings
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

from ._xp import namespace_of, to_numpy

__all__ = ["NEGATIVE_MODES", "clip_negative", "saturation_mask", "zero_maps"]

NEGATIVE_MODES = ("raise", "clip")
"""What `fuse` does with negative map values: refuse them (default) or clip them at 0 with a warning."""


def saturation_mask(haadf: Any, saturated: Any, xp: ModuleType) -> tuple[Any, int]:
    """Find the saturated pixels of ``haadf`` (..., H, W), as given by the caller (any dtype).

    Parameters
    ----------
    haadf : array (..., H, W)
        The HAADF image(s) in their original dtype.
    saturated : "auto", None, False, number or boolean array (..., H, W)
        ``"auto"``: for an integer image with at least two pixels at the
        largest value of its dtype (65535 for uint16: the detector or its
        converter clipped them), those pixels; nothing for floats, or for a
        single such pixel (a lone bright pixel is as likely real).  A number: the pixels at or above it
        (the detector's maximum when known).  A boolean array: True marks the
        pixels to leave out.  None or False: every pixel counts.
    xp : namespace
        The caller's namespace.

    Returns
    -------
    mask : array (..., H, W) of bool, or None
        True at saturated pixels; None when there are none.
    count : int
        Number of saturated pixels (over the whole batch).

    """
    if saturated is None or saturated is False:
        return None, 0
    if isinstance(saturated, str):
        if saturated != "auto":
            raise ValueError(f"`saturated` must be 'auto', None, a number or a boolean mask, got {saturated!r}")
        if not xp.isdtype(haadf.dtype, "integral"):
            return None, 0
        level = xp.iinfo(haadf.dtype).max
        mask = haadf == level
        what = f"at {level}, the largest {haadf.dtype} value"
        if int(xp.sum(xp.astype(mask, xp.int64))) < 2:
            return None, 0
    elif isinstance(saturated, numbers.Real) and not isinstance(saturated, bool):
        mask = haadf >= saturated
        what = f"at or above saturated={saturated:g}"
    else:
        mask = _mask_array(saturated, haadf, xp)
        what = "marked in `saturated`"
    count = int(xp.sum(xp.astype(mask, xp.int64)))
    if count == 0:
        return None, 0
    kept = xp.sum(xp.astype(~mask, xp.int64), axis=(-2, -1))
    if int(xp.min(kept)) < 2:
        raise ValueError(
            f"`haadf` has {count} saturated pixels ({what}), leaving fewer than two pixels of an image for the "
            "HAADF term; acquire with a lower detector gain, or pass saturated=None to use every pixel"
        )
    images = math.prod(haadf.shape[:-2])
    over = f" over its {images} images" if images > 1 else ""
    warnings.warn(
        f"`haadf` has {count} saturated pixels ({what}){over}; they are left out of the HAADF term. Pass "
        "saturated=None to use them anyway, or a number (the detector's maximum) or a boolean mask to choose",
        UserWarning,
        stacklevel=4,
    )
    return mask, count


SATURATION_WARNING = "`haadf` has .* saturated pixels"
"""The start of `saturation_mask`'s warning, for fits of an image whose saturated pixels were reported already."""


def host_saturation_mask(haadf: np.ndarray, saturated: Any) -> np.ndarray | None:
    """`saturation_mask` of a host image, with ``saturated`` (a rule or a mask) given in any library."""
    if not (saturated is None or isinstance(saturated, (bool, str, numbers.Real))):
        saturated = np.asarray(to_numpy(saturated)) if hasattr(saturated, "shape") else np.asarray(saturated)
    return saturation_mask(haadf, saturated, np)[0]


def _mask_array(saturated: Any, haadf: Any, xp: ModuleType) -> Any:
    """Check the caller's boolean mask and broadcast it to the HAADF image's shape."""
    if isinstance(saturated, (list, tuple)):
        saturated = xp.asarray(saturated, device=array_api_compat.device(haadf))
    namespace_of(haadf=haadf, saturated=saturated)  # one library, one device
    if not xp.isdtype(saturated.dtype, "bool"):
        raise TypeError(f"`saturated` has dtype {saturated.dtype}; give a boolean mask (True = saturated pixel)")
    try:
        return xp.broadcast_to(saturated, haadf.shape)
    except (ValueError, RuntimeError):
        raise ValueError(
            f"`saturated` has shape {tuple(saturated.shape)} but `haadf` has shape {tuple(haadf.shape)}; "
            "give one flag per HAADF pixel"
        ) from None


def clip_negative(maps: Any, negative: str, xp: ModuleType) -> Any:
    """Refuse negative map values, or with ``negative="clip"`` return a copy clipped at 0 (and warn)."""
    if negative not in NEGATIVE_MODES:
        raise ValueError(f"`negative` must be 'raise' or 'clip', got {negative!r}")
    lowest = float(xp.min(maps))
    if lowest >= 0:
        return maps
    count = int(xp.sum(xp.astype(maps < 0, xp.int64)))
    if negative == "raise":
        raise ValueError(
            f"`maps` contains negative values (minimum {lowest:g}) in {count} pixels; chemical maps are counts and "
            "must be >= 0. Background-subtracted maps go negative where the background fit overshoots: "
            "integrate without background subtraction to keep raw counts (best for the Poisson term), or pass "
            "negative='clip' to set those values to 0"
        )
    warnings.warn(
        f"`maps` contains negative values (minimum {lowest:g}) in {count} pixels; they are clipped at 0 "
        "(negative='clip'). Clipped maps are no longer Poisson counts: fusex.tune's count splitting does not "
        "apply to them",
        UserWarning,
        stacklevel=4,
    )
    return xp.clip(maps, min=0.0)


def zero_maps(maps: Any, labels: tuple[str, ...], xp: ModuleType) -> np.ndarray:
    """Flag the maps (..., E, H, W) that are zero everywhere (an element listed but absent) and warn about them.

    Returns a host boolean array of the maps' leading shape ``(..., E)``.
    """
    peak = to_numpy(xp.max(maps, axis=(-2, -1)))
    zero = peak == 0
    if zero.any():
        names = sorted({labels[i] for i in np.flatnonzero(zero.any(axis=tuple(range(zero.ndim - 1))))})
        warnings.warn(
            f"the map(s) {names} are zero everywhere (an element listed but absent?); they fuse to zero maps",
            UserWarning,
            stacklevel=4,
        )
    return zero
