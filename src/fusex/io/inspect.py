"""What a file holds, and what `fusex.fuse` would take from it (``fusex inspect FILE``)."""

from __future__ import annotations

import os
from pathlib import Path

from .choose import catalogue, select
from .files import read
from .formats import MICROSCOPE_FORMATS
from .signals import _is_file, _title_of_first_image, read_signals

__all__ = ["inspect"]


def inspect(
    path: str | os.PathLike,
    *,
    haadf: str | os.PathLike | None = None,
    elements: list[str] | None = None,
    lines: list[str] | None = None,
) -> str:
    """Describe every signal of a file and the choice `fusex.io.read` makes with these arguments.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    haadf, elements, lines
        As for `fusex.io.read`.

    Returns
    -------
    str
        One line per signal (title, kind, shape, axes with pixel size and
        units, X-ray lines), then the HAADF image and maps `read` would use,
        or why it would stop and what to pass.

    """
    path = Path(path)
    if path.suffix.lower() not in MICROSCOPE_FORMATS:
        ds = read(path, elements=elements)
        names = ", ".join(map(str, ds["element"].values)) if "element" in ds.coords else "?"
        return (
            f"{path}: haadf {'x'.join(map(str, ds['haadf'].shape))} {ds['haadf'].dtype}, "
            f"maps {'x'.join(map(str, ds['maps'].shape))} {ds['maps'].dtype} ({names})\n"
            "fusex fuse uses them as they are"
        )
    raw = read_signals(path)
    if haadf is not None and _is_file(haadf):
        images = read_signals(haadf)
        raw, haadf = [*raw, *images], _title_of_first_image(images, haadf)
    signals = catalogue(raw)
    out = [f"{path}: {len(signals)} signal(s)"]
    out += [f"  {i}. {s.describe()}" for i, s in enumerate(signals, start=1)]
    try:
        chosen = select(signals, haadf=haadf, elements=elements, lines=lines)
    except ValueError as exc:
        out.append(f"fusex fuse would stop: {exc}")
        return "\n".join(out)
    out.append("fusex fuse would use:")
    out.append(f"  HAADF: {chosen.haadf.label!r} ({chosen.haadf.grid.describe()})")
    if chosen.spectrum is not None:
        what = []
        if chosen.lines:
            what.append(f"lines {', '.join(chosen.lines)}")
        if chosen.elements:
            what.append(f"elements {', '.join(chosen.elements)} (each at its strongest line in the energy range)")
        out.append(f"  maps: integrated from {chosen.spectrum.label!r} at {' and '.join(what)}")
    else:
        out.append(f"  maps: {', '.join(repr(m.label) for m in chosen.maps)}, as given")
    out += [f"  note: {note}" for note in chosen.notes]
    return "\n".join(out)
