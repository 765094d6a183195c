"""The search of `fusex.tune`: the grid's score surface, its widening at the edges, and the per-element choice.

Everything here works on held-out scores (`fusex._folds`): a `Surface` of
scores over the grid, the parameters each element would pick from it, and
the final choice per element between fusion and the simple candidates (the
raw map and Gaussian blurs), recorded with its uncertainty.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import xarray as xr

from ._folds import HoldOut
from ._quirks import SATURATION_WARNING, host_saturation_mask
from ._xp import convert, to_numpy
from .params import PER_ELEMENT_FIELDS, FusionParams

PER_ELEMENT_LABELS = ("prior",)
"""Label fields that `FusionParams` takes per element (as a mapping element -> name)."""

SIMPLER_WITHIN = 1.0
"""An element takes the fusion only where it beats the best simple candidate by more than this many
standard errors of their paired held-out difference (`decide`)."""

WIDENED = ("lambda_tv", "lambda_chem")
"""Grid fields widened when a choice lands on an edge (weights whose useful range is not known in advance)."""


@dataclass(frozen=True)
class Surface:
    """Held-out scores over a grid: ``values (*grid, E)``, ``parts (K, *grid, E)`` or None, ``diverged (*grid)``.

    ``weights (*grid, E)`` are the HAADF weights each candidate's fits used
    (needed to leave an element out of the HAADF model).  ``screened
    (*grid, E)`` are the scores after the screening iterations (`Screening`),
    ``finished (*grid)`` marks the candidates solved to convergence (the
    others' ``values`` and ``parts`` are NaN), and ``maps`` maps a grid
    point to its last fits ``(K, E, H, W)`` in normalized units, where later
    fits start: every candidate's without screening, else only those of
    candidates that can still go on or have finished (host memory grows
    with what is kept, not with the grid).
    """

    candidates: dict[str, np.ndarray]
    values: np.ndarray
    parts: np.ndarray | None
    diverged: np.ndarray
    weights: np.ndarray
    elements: tuple[str, ...]
    screened: np.ndarray
    finished: np.ndarray
    maps: dict[tuple[int, ...], np.ndarray]
    calibration: np.ndarray | None = None  # (*grid, E, 2): each fit's held-out calibration, if any

    def at(self, base: FusionParams, index: Sequence[int]) -> FusionParams:
        """Return ``base`` with the grid fields at ``index``."""
        return base.replace(**{name: _value(values[i]) for (name, values), i in zip(self.candidates.items(), index)})

    def label(self, index: Sequence[int]) -> str:
        """Name the grid point ``index``."""
        fields = ", ".join(f"{name}={_text(values[i])}" for (name, values), i in zip(self.candidates.items(), index))
        return f"fusion {fields}"

    def part(self, index: Sequence[int], e: int) -> np.ndarray | None:
        """Return the parts ``(K,)`` of grid point ``index`` for element ``e`` (None without parts)."""
        return None if self.parts is None else self.parts[(slice(None), *index, e)]


@dataclass(frozen=True)
class Screening:
    r"""How `search` spends its iterations: screen every candidate briefly, finish the promising ones.

    Every candidate first runs ``iterations`` solver iterations and is scored
    there; per element, the ``keep`` best screened scores (over this search
    and any earlier one it extends) mark their candidates, and only those
    continue, from where they stopped, to the solver's own stopping rule.
    The others are dropped: their converged scores are never computed (NaN
    in `Surface.values`, their screened ones in `Surface.screened`).  The
    screening runs on the hold-out's first ``parts`` parts (None: all); the
    survivors' fits on the other parts start from their own data, never from
    another part's fit (which saw their held-out data).  With ``window``, it
    runs on the central ``window`` x ``window`` pixels of a larger image only
    (`central_window`), and every survivor starts again from its own data on
    the whole image.
    """

    iterations: int = 20
    keep: int = 2
    parts: int | None = None
    window: int | None = None


@dataclass(frozen=True)
class Option:
    """A fusion that may be returned: its parameters, per-element scores ``(E,)``, parts ``(K, E)`` and fits.

    ``maps`` ``(K, E, H, W)`` are its fold fits in normalized units.
    """

    label: str
    params: FusionParams
    values: np.ndarray
    parts: np.ndarray | None
    maps: np.ndarray
    index: tuple[int, ...] | None = None  # its grid point, when it is one
    calibration: np.ndarray | None = None  # (E, 2): slope and offset of each element's map, if any


def _value(value: Any) -> Any:
    return str(value) if isinstance(value, str) else float(value)


def _text(value: Any) -> str:
    return str(value) if isinstance(value, str) else f"{float(value):g}"


def search(
    holdout: HoldOut,
    base: FusionParams,
    candidates: dict[str, np.ndarray],
    progress: bool,
    common: dict[str, Any],
    screening: Screening | None = None,
    against: np.ndarray | None = None,
) -> Surface:
    """Score every combination of ``candidates`` on ``holdout``, screening them first unless ``screening`` is None.

    ``against`` ``(..., E)`` are screened scores of an earlier search that
    this one extends (a widening): a candidate continues only if it ranks
    among the ``keep`` best of both together.
    """
    if screening is None:
        return _solve_grid(holdout, base, candidates, progress, common)
    short = base.replace(n_iter=min(screening.iterations, base.n_iter))
    count = holdout.inputs.shape[0]
    screened_on = holdout if screening.parts is None else holdout.first(min(screening.parts, count))
    calibrated = getattr(holdout, "calibrate", False)
    if calibrated:
        # Screening ranks fits as they are: a calibration of 10-iteration fits rescues candidates
        # whose converged fits score badly, and they would crowd out the good ones.
        screened_on = replace(screened_on, calibrate=False)
    cut = central_window(holdout.image.shape, screening.window)
    screening_common = common
    if cut is not None:
        screened_on = screened_on.window(*cut)
        screening_common = {**common, "saturated": _window_saturated(common["saturated"], holdout, *cut)}
    early = _solve_grid(screened_on, short, candidates, progress, screening_common, screening.keep)
    chosen = survivors(early.screened, screening.keep, against)
    values = np.full_like(early.values, np.nan)
    parts = None if early.parts is None else np.full((count, *early.parts.shape[1:]), np.nan)
    diverged = early.diverged.copy()
    calibration = np.full((*early.values.shape, 2), np.nan) if calibrated else None
    points = [tuple(int(i) for i in index) for index in np.argwhere(chosen)]
    maps = {} if cut is not None else {index: early.maps[index] for index in points}
    labels = [axis for axis, v in enumerate(candidates.values()) if v.dtype == object]
    names = list(candidates)
    groups: dict[tuple[int, ...], list[tuple[int, ...]]] = {}
    for index in points:
        groups.setdefault(tuple(index[a] for a in labels), []).append(index)
    for key, members in groups.items():
        fixed = {names[a]: str(candidates[names[a]][i]) for a, i in zip(labels, key)}
        varied = {
            name: [_value(candidates[name][index[a]]) for index in members]
            for a, name in enumerate(names)
            if a not in labels
        }
        start = None
        if cut is None:
            start = np.stack([maps[index] for index in members], axis=1)
            # A part that was not screened starts from its own counts (NaN): another part's fit saw
            # this part's held-out counts, and would carry them into its fit.
            unscreened = np.full((count - start.shape[0], *start.shape[1:]), np.nan, dtype=start.dtype)
            start = np.concatenate([start, unscreened])
        scored = holdout.score(base.replace(**fixed, **varied), 1, progress, common, start=start)
        fitted = np.asarray(to_numpy(scored.fits.maps), dtype=np.float32)
        for j, index in enumerate(members):
            values[index] = scored.values[j]
            diverged[index] = scored.diverged[j]
            maps[index] = fitted[:, j]
            if parts is not None:
                parts[(slice(None), *index)] = scored.parts[:, j]
            if calibration is not None:
                calibration[index] = scored.calibration[j]
    finished = chosen & ~diverged
    return replace(
        early, values=values, parts=parts, diverged=diverged, finished=finished, maps=maps, calibration=calibration
    )


def central_window(shape: tuple[int, ...], side: int | None) -> tuple[slice, slice] | None:
    """Return the rows and columns of the central ``side`` x ``side`` pixels of an image of ``shape`` (H, W).

    None when ``side`` is None or the image fits in it; an image narrower than ``side`` keeps that whole axis.
    """
    if side is None or (shape[-2] <= side and shape[-1] <= side):
        return None
    rows, cols = min(shape[-2], side), min(shape[-1], side)
    top, left = (shape[-2] - rows) // 2, (shape[-1] - cols) // 2
    return slice(top, top + rows), slice(left, left + cols)


def _window_saturated(saturated: Any, holdout: HoldOut, rows: slice, cols: slice) -> Any:
    """Return the window's share of the HAADF pixels left out: those of the whole image, found once, then cut.

    The rule (``"auto"``, a level) applied to the window alone could find other pixels (``"auto"`` needs two).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=SATURATION_WARNING, category=UserWarning)
        mask = host_saturation_mask(holdout.image, saturated)
    return None if mask is None else convert(np.ascontiguousarray(mask[rows, cols]), holdout.xp, holdout.device)


def survivors(screened: np.ndarray, keep: int, against: np.ndarray | None = None) -> np.ndarray:
    """Mark ``(*grid)`` the candidates whose screened score ``(*grid, E)`` is among some element's ``keep`` best.

    Ranks count ``against`` ``(..., E)`` (earlier candidates) too; NaN (diverged) never survives.
    """
    chosen = np.zeros(screened.shape[:-1], dtype=bool)
    for e in range(screened.shape[-1]):
        pool = screened[..., e].ravel()
        if against is not None:
            pool = np.concatenate([pool, against[..., e].ravel()])
        pool = np.sort(pool[np.isfinite(pool)])
        if pool.size:
            chosen |= screened[..., e] <= pool[min(keep, pool.size) - 1]
    return chosen


def _solve_grid(
    holdout: HoldOut,
    base: FusionParams,
    candidates: dict[str, np.ndarray],
    progress: bool,
    common: dict[str, Any],
    keep: int | None = None,
) -> Surface:
    """Score every combination of ``candidates`` with ``base``'s solver settings: numbers batched, each label alone.

    The fits of every candidate are kept, or with ``keep`` only those of the candidates among some
    element's ``keep`` best here (only they can be among the best of a larger grid).
    """
    labels = [name for name, values in candidates.items() if values.dtype == object]
    if labels:
        # a label (a prior's name) cannot broadcast over a batch: one batched search per label
        name = labels[0]
        rest = {k: v for k, v in candidates.items() if k != name}
        subs = [
            _solve_grid(holdout, base.replace(**{name: str(v)}), rest, progress, common, keep) for v in candidates[name]
        ]
        parts = None if subs[0].parts is None else np.stack([s.parts for s in subs], axis=1)
        return Surface(
            {name: candidates[name], **rest},
            np.stack([s.values for s in subs]),
            parts,
            np.stack([s.diverged for s in subs]),
            np.stack([s.weights for s in subs]),
            subs[0].elements,
            np.stack([s.screened for s in subs]),
            np.stack([s.finished for s in subs]),
            {(i, *index): fits for i, s in enumerate(subs) for index, fits in s.maps.items()},
            None if subs[0].calibration is None else np.stack([s.calibration for s in subs]),
        )
    axes = len(candidates)
    fields = {
        name: np.reshape(values, (values.size,) + (1,) * (axes - 1 - i)).tolist()
        for i, (name, values) in enumerate(candidates.items())
    }
    scored = holdout.score(base.replace(**fields), axes, progress, common)
    shape = scored.values.shape
    weights = np.asarray(scored.fits.weights, dtype=np.float64)
    weights = np.broadcast_to(weights, (holdout.inputs.shape[0], *shape) if weights.ndim > 1 else shape)
    weights = weights[0] if weights.ndim > len(shape) else weights
    fits = to_numpy(scored.fits.maps)
    fits = np.broadcast_to(fits, (holdout.inputs.shape[0], *shape[:-1], *fits.shape[-3:]))
    kept = np.ones(shape[:-1], dtype=bool) if keep is None else survivors(scored.values, keep)
    maps = {
        tuple(int(i) for i in index): np.array(fits[(slice(None), *index)], dtype=np.float32)
        for index in np.argwhere(kept)
    }
    return Surface(
        dict(candidates),
        scored.values,
        scored.parts,
        scored.diverged,
        np.array(weights),
        scored.fits.elements,
        scored.values,
        ~scored.diverged,
        maps,
        scored.calibration,
    )


def _concat(surface: Surface, extra: Surface, axis: int, front: bool) -> Surface:
    name = list(surface.candidates)[axis]

    def join(a: np.ndarray, b: np.ndarray, at: int) -> np.ndarray:
        return np.concatenate([b, a] if front else [a, b], axis=at)

    candidates = {**surface.candidates, name: join(surface.candidates[name], extra.candidates[name], 0)}
    parts = None if surface.parts is None else join(surface.parts, extra.parts, axis + 1)
    return Surface(
        candidates,
        join(surface.values, extra.values, axis),
        parts,
        join(surface.diverged, extra.diverged, axis),
        join(surface.weights, extra.weights, axis),
        surface.elements,
        join(surface.screened, extra.screened, axis),
        join(surface.finished, extra.finished, axis),
        {
            **_shifted(surface.maps, axis, extra.values.shape[axis] if front else 0),
            **_shifted(extra.maps, axis, 0 if front else surface.values.shape[axis]),
        },
        None if surface.calibration is None else join(surface.calibration, extra.calibration, axis),
    )


def _shifted(maps: dict[tuple[int, ...], Any], axis: int, by: int) -> dict[tuple[int, ...], Any]:
    """Return ``maps`` with the grid index along ``axis`` moved by ``by`` (the grid grew in front)."""
    return {(*index[:axis], index[axis] + by, *index[axis + 1 :]): fits for index, fits in maps.items()}


def picks(surface: Surface, total: np.ndarray | None = None) -> dict[str, tuple[int, ...]]:
    """Each element's best grid point (or, given ``total``, the shared best for every element)."""
    if total is not None:
        if np.all(np.isnan(total)):
            return {}
        best = tuple(int(i) for i in np.unravel_index(int(np.nanargmin(total)), total.shape))
        return dict.fromkeys(surface.elements, best)
    out = {}
    for e, element in enumerate(surface.elements):
        own = surface.values[..., e]
        if not np.all(np.isnan(own)):
            out[element] = tuple(int(i) for i in np.unravel_index(int(np.nanargmin(own)), own.shape))
    return out


def _edges(surface: Surface, chosen: dict[str, tuple[int, ...]], closed: set) -> dict[tuple[str, str], list[str]]:
    """Grid fields and sides (``"low"``/``"high"``) where a choice lies on the edge, with the elements there."""
    out: dict[tuple[str, str], list[str]] = {}
    for axis, (name, values) in enumerate(surface.candidates.items()):
        if name not in WIDENED or values.size < 2 or values.dtype == object or not np.all(values > 0):
            continue
        for element, index in chosen.items():
            for side, edge in (("low", 0), ("high", values.size - 1)):
                if index[axis] == edge and (name, side) not in closed:
                    out.setdefault((name, side), []).append(element)
    return out


def widen(
    holdout: HoldOut,
    base: FusionParams,
    surface: Surface,
    rounds: int,
    per_element: bool,
    progress: bool,
    common: dict[str, Any],
    screening: Screening | None = None,
) -> tuple[Surface, list[str]]:
    """Extend the grid one step past every edge a choice lands on, at most ``rounds`` times, warning each time.

    The step is geometric (the ratio of the two outermost values).  The new
    candidates are screened against the grid's (``screening``).  A side
    whose new value diverges in every candidate, or whose every candidate
    screens out, is not widened again.  A
    choice still on an edge afterwards gets a last warning.  Returns the
    widened surface and a note per extension.
    """
    closed: set[tuple[str, str]] = set()
    notes: list[str] = []

    def chosen() -> dict[str, tuple[int, ...]]:
        return picks(surface) if per_element else picks(surface, holdout.total(surface.values))

    for _ in range(rounds):
        edges = _edges(surface, chosen(), closed)
        if not edges:
            break
        for (name, side), who in edges.items():
            axis = list(surface.candidates).index(name)
            values = surface.candidates[name]
            edge, inner = (values[0], values[1]) if side == "low" else (values[-1], values[-2])
            new = float(edge * edge / inner)
            warnings.warn(
                f"tune: the best {name} for {', '.join(who)} ({edge:g}) is on the edge of the grid; "
                f"searching {new:g} as well",
                UserWarning,
                stacklevel=4,
            )
            grid = {**surface.candidates, name: np.array([new])}
            extra = search(holdout, base, grid, progress, common, screening, surface.screened)
            surface = _concat(surface, extra, axis, front=side == "low")
            notes.append(f"{name} {edge:g} -> {new:g}")
            if np.all(np.isnan(extra.values)):
                closed.add((name, side))
    left = _edges(surface, chosen(), set())
    for (name, side), who in left.items():
        values = surface.candidates[name]
        edge = values[0] if side == "low" else values[-1]
        done = (
            f"still on the edge of the grid ({edge:g}) after {len(notes)} widenings"
            if notes
            else (f"on the edge of the grid ({edge:g}) and `widen` is 0")
        )
        warnings.warn(
            f"tune: the best {name} for {', '.join(who)} is {done}; the best value may lie beyond it: pass a "
            "`grid` that reaches further",
            UserWarning,
            stacklevel=4,
        )
    return surface, notes


def per_element_params(base: FusionParams, surface: Surface, shared: tuple[int, ...]) -> FusionParams | None:
    r"""Give each element the weights of its own best grid point; None if every element's is the shared one.

    Free per element are the `PER_ELEMENT_FIELDS` and ``prior`` in the grid, and the HAADF
    term: an element whose best point has :math:`\lambda_H = 0` is left out of
    the HAADF model (its weight :math:`w_e = 0`), so the HAADF term neither
    pulls on it nor needs it; the others share the :math:`\lambda_H` most of
    them picked.  Other grid fields stay at the shared choice.
    """
    names = list(surface.candidates)
    free = [name for name in names if name in (*PER_ELEMENT_FIELDS, *PER_ELEMENT_LABELS, "lambda_haadf")]
    if not free:
        return None
    fixed = tuple(slice(None) if name in free else i for name, i in zip(names, shared))
    own: dict[str, tuple[int, ...]] = {}
    for e, element in enumerate(surface.elements):
        scores = surface.values[(*fixed, e)]
        if np.all(np.isnan(scores)):
            return None
        it = iter(np.unravel_index(int(np.nanargmin(scores)), scores.shape))
        own[element] = tuple(int(next(it)) if name in free else i for name, i in zip(names, shared))
    if all(index == shared for index in own.values()):
        return None
    changes: dict[str, Any] = {}
    for name in free:
        axis = names.index(name)
        chosen = {element: _value(surface.candidates[name][index[axis]]) for element, index in own.items()}
        if name != "lambda_haadf":
            changes[name] = chosen
            continue
        on = [value for value in chosen.values() if value > 0]
        changes[name] = Counter(on).most_common(1)[0][0] if on else 0.0
        if on and len(on) < len(chosen):
            weights = surface.weights[shared]
            changes["haadf_weights"] = [float(w) if chosen[el] > 0 else 0.0 for w, el in zip(weights, surface.elements)]
    return surface.at(base, shared).replace(**changes)


def decide(
    holdout: HoldOut,
    options: list[Option],
    simple: tuple[np.ndarray, np.ndarray | None] | None,
    eligible: np.ndarray | None = None,
) -> tuple[int, np.ndarray | None]:
    r"""Pick the option whose elements, each taking it or its best simple candidate, score best.

    ``simple`` holds the simple candidates' scores ``(S, E)`` and their parts
    ``(K, S, E)`` (None without parts).  An element keeps the fusion only
    where it beats its best simple candidate by more than `SIMPLER_WITHIN`
    standard errors of their paired difference over the parts (the
    one-standard-error rule): where the data cannot tell them apart the
    simple map is the safer answer, and at a few counts per map the fusion's
    lead is often noise.  Without parts (``"nrmse"``, ``"deviance"``) any lead counts.
    Elements where ``eligible`` (``(E,)``, default all) is False take their
    best simple candidate whatever the fusion scores.

    Returns the option's index and, per element, the index of the simple
    candidate it takes instead of the fusion (-1: the fusion), or None without simple candidates.
    """
    if simple is None:
        totals = [float(holdout.total(option.values)) for option in options]
        return int(np.nanargmin(totals)), None
    values, parts = simple
    best = np.nanargmin(values, axis=0)
    columns = np.arange(values.shape[1])
    best_simple = values[best, columns]
    takes, totals = [], []
    for option in options:
        margin = np.zeros(len(columns))
        if parts is not None and option.parts is not None:
            paired = parts[:, best, columns] - option.parts
            margin = np.array([SIMPLER_WITHIN * _se(paired[:, e], holdout.denominator[e]) for e in columns])
            margin = np.nan_to_num(margin)
        fusion = option.values
        simpler = np.isnan(fusion) | (best_simple - fusion <= margin)
        if eligible is not None:
            simpler |= ~eligible
        takes.append(np.where(simpler, best, -1))
        totals.append(float(holdout.total(np.where(simpler, best_simple, fusion))))
    pick = int(np.nanargmin(totals))
    return pick, takes[pick]


def simple_label(sigma: float) -> str:
    """Name a simple candidate: the raw map (width 0) or a Gaussian blur."""
    return "raw" if sigma == 0 else f"gaussian sigma={sigma:g}"


def record(
    holdout: HoldOut,
    surface: Surface,
    option: Option,
    sigmas: np.ndarray,
    simple: tuple[np.ndarray, np.ndarray | None] | None,
    takes: np.ndarray | None,
) -> xr.Dataset:
    r"""Describe each element's choice and how sure it is.

    Per element: ``method`` (``"fusion"``, ``"gaussian"`` or ``"raw"``),
    ``sigma`` (the blur's width; NaN for fusion), ``score`` and ``score_se``
    (its standard error over the folds or masks), ``runner_up`` (the best
    other candidate of the grid and the simple ones), ``margin`` (its score
    minus the choice's) and ``margin_se`` (the standard error of that
    difference, paired over the same folds or masks, so the noise common to
    both cancels).  ``margin / margin_se`` below about 2 says the two are
    not told apart by the data; a negative margin is a simple map kept
    against a fusion that led it by less than one ``margin_se``, or by any
    amount where the element's counts resolve no signal variance (`decide`).
    Standard errors are NaN for criteria without per-part scores
    (``"nrmse"``, ``"deviance"``).
    """
    n = len(surface.elements)
    out: dict[str, list[Any]] = {
        k: [] for k in ("method", "sigma", "score", "score_se", "runner_up", "margin", "margin_se")
    }
    grid_points = list(np.ndindex(surface.values.shape[:-1]))
    for e in range(n):
        pool: list[tuple[str, float, np.ndarray | None]] = []
        taken = -1 if takes is None else int(takes[e])
        if taken < 0:
            chosen = ("fusion", float(option.values[e]), None if option.parts is None else option.parts[:, e])
            method, sigma = "fusion", np.nan
        else:
            parts = None if simple[1] is None else simple[1][:, taken, e]
            chosen = (simple_label(sigmas[taken]), float(simple[0][taken, e]), parts)
            method, sigma = ("raw" if sigmas[taken] == 0 else "gaussian"), float(sigmas[taken])
        for index in grid_points:
            if not (taken < 0 and index == option.index):
                pool.append((surface.label(index), float(surface.values[(*index, e)]), surface.part(index, e)))
        if taken >= 0 and option.index is None:
            mine = None if option.parts is None else option.parts[:, e]
            pool.append(("fusion (chosen parameters)", float(option.values[e]), mine))
        if simple is not None:
            for s, width in enumerate(sigmas):
                if s != taken:
                    parts = None if simple[1] is None else simple[1][:, s, e]
                    pool.append((simple_label(width), float(simple[0][s, e]), parts))
        scores = np.array([p[1] for p in pool])
        out["method"].append(method)
        out["sigma"].append(sigma)
        out["score"].append(chosen[1])
        out["score_se"].append(_se(chosen[2], holdout.denominator[e]))
        if pool and not np.all(np.isnan(scores)):
            runner = pool[int(np.nanargmin(scores))]
            out["runner_up"].append(runner[0])
            out["margin"].append(runner[1] - chosen[1])
            paired = None if runner[2] is None or chosen[2] is None else runner[2] - chosen[2]
            out["margin_se"].append(_se(paired, holdout.denominator[e]))
        else:
            out["runner_up"].append("")
            out["margin"].append(np.nan)
            out["margin_se"].append(np.nan)
    return xr.Dataset(
        {name: ("element", values) for name, values in out.items()},
        coords={"element": list(surface.elements)},
        attrs={"criterion": holdout.criterion},
    )


def _se(parts: np.ndarray | None, denominator: float) -> float:
    """Return the standard error of ``mean(parts) / denominator`` over the parts ``(K,)``; NaN without them."""
    if parts is None or parts.size < 2 or np.any(np.isnan(parts)):
        return np.nan
    return float(np.std(parts, ddof=1) / np.sqrt(parts.size) / denominator)
