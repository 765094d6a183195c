"""Accuracy of fusex against simple treatments of the same counts, on phantoms and real acquisitions.

Per element, it compares the raw maps; a Gaussian blur whose width is chosen from the data
(`fusex.baselines`: count splitting scored like `fusex.tune`, or a J-invariant pixel hold-out for
maps that are not counts) and, on phantoms, by the truth; Poisson-TV alone (fusion with
``lambda_haadf=0``); fusion with the defaults and with ``params="auto"``; the reference package's
defaults (``multimodal-fusion`` 0.6.0); and HyperSpy PCA of the spectrum image when HyperSpy is installed.

Cases: phantoms of both `fusex.datasets.LATTICES` at 1, 3 and 10 counts per column; the shared
SEM spectrum image ``bcf_v2_50x50px.bcf`` thinned to 1, 2 and 5 % (the remainder is an independent
reference); count splitting of the low-count spectrum image ``P45_the_default_job.bcf``; the
tutorial's DyScO3 maps (not counts) under a J-invariant loss.  The shared files are looked for in
``shared/data`` beside the repository checkout and skipped with a message when absent.

It writes ``docs/accuracy.md`` and its figures ``docs/figures/accuracy-*.png``:

    python scripts/accuracy.py --quick      # tiny sizes, one seed: a minute or two
    python scripts/accuracy.py              # the full benchmark (about half an hour on 2 cores)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import pickle
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

import fusex
from fusex import baselines
from fusex._folds import _heldout_nrmse
from fusex.datasets import LATTICES, nrmse, phantom, raw_nrmse
from fusex.elements import atomic_numbers
from fusex.tune import split_counts

try:
    from fusex.spectra import integrate_lines
except ImportError:  # an older fusex: the script sums the windows itself
    integrate_lines = None
INTEGRATION = "`fusex.spectra.integrate_lines`" if integrate_lines else "the script's own window sums"

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

# Line energies in keV (Bearden's tables; Ka and La are the intensity-weighted centroids).
SEM_LINES = {"Ag_La": 2.984, "Al_Ka": 1.4865, "C_Ka": 0.277, "Cu_Ka": 8.041, "O_Ka": 0.5249}
# P45 has no element list; these are the lines of the peaks in its sum spectrum.
P45_LINES = {
    "O_Ka": 0.5249,
    "Na_Ka": 1.041,
    "Mg_Ka": 1.2536,
    "Al_Ka": 1.4865,
    "Si_Ka": 1.7397,
    "K_Ka": 3.3138,
    "Ca_Ka": 3.6917,
}
FWHM_MNKA = 130.0  # eV, the usual resolution of an SDD at Mn Ka; the files do not record theirs
WINDOW = 0.6  # half-width of each line's integration window, in FWHM
PCA_COMPONENTS = 5
TUTORIAL = fusex.FusionParams.published(
    gamma=1.6, lambda_chem=0.08, lambda_tv=0.15, eps=0.24, n_iter=30, n_tv=3, haadf_weights="z_mean"
)

METHODS = {
    "raw": "raw maps",
    "gauss": "Gaussian, sigma from the data",
    "gauss_truth": "Gaussian, sigma from the truth",
    "pca": "HyperSpy PCA",
    "ptv": "Poisson-TV alone",
    "default": "fusex defaults",
    "auto": 'fusex `params="auto"`',
    "tutorial": "tutorial parameters",
    "reference": "multimodal-fusion defaults",
}
SHOWN = {"truth": "truth (expected counts)", "remainder": "remainder x p/(1-p)", "held": "held-out fold x (K-1)"}
FUSIONS = ("ptv", "default", "auto", "tutorial", "reference")  # marked where they lose


@dataclass
class Trial:
    """One method's metrics on one realization (seed or fold): arrays (E,), NaN where undefined."""

    raw: np.ndarray
    scaled: np.ndarray
    total: np.ndarray
    spread: np.ndarray | None = None  # the standard error of ``raw`` itself, when it has one (J-invariant)


@dataclass
class Case:
    """A case: its elements, each method's trials (or why it failed), and maps to show."""

    group: str
    label: str
    elements: list[str]
    noise: str
    trials: dict[str, list[Trial]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    shown: dict[str, np.ndarray] = field(default_factory=dict)
    sigma: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    structure: np.ndarray | None = None  # held-out cases: the reference's signal variance over its Poisson variance

    def add(self, method: str, trial: Trial) -> None:
        """Record one realization of ``method``."""
        self.trials.setdefault(method, []).append(trial)

    def summary(self, method: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
        """Mean of ``metric`` over the trials and its standard error (the noise to judge by)."""
        values = np.stack([getattr(t, metric) for t in self.trials[method]])
        if len(values) > 1:
            return values.mean(axis=0), values.std(axis=0, ddof=1) / np.sqrt(len(values))
        spread = self.trials[method][0].spread
        if spread is None or metric != "raw":
            spread = np.zeros(values.shape[1])
        return values[0], spread


def quiet(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``function`` with its prints, progress bars and warnings silenced."""
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        return function(*args, **kwargs)


# ---------------------------------------------------------------- methods: maps in, maps in input units out


def fused(haadf: np.ndarray, maps: np.ndarray, elements: list[str], params: Any = None) -> np.ndarray:
    """Fuse with ``params`` and return the maps in the input's units."""
    result = quiet(fusex.fuse, haadf, maps, elements=elements, params=params)
    return np.asarray(result.to_input_units(), dtype=np.float64)


def reference(haadf: np.ndarray, maps: np.ndarray, elements: list[str]) -> np.ndarray:
    """Run the reference package's defaults, mapped back from its min-max units to the input's."""
    from multimodal_fusion import DataFusion

    symbols = [e.split("_")[0] for e in elements]
    ref = DataFusion(symbols)
    quiet(ref.load_chemical_maps, {s: m.astype(np.float32) for s, m in zip(symbols, maps)})
    quiet(ref.load_haadf, haadf.astype(np.float32))
    quiet(ref.run, plot_images=False, plot_convergence=False)
    out = np.stack([ref.get_results()[s] for s in symbols]).astype(np.float64)
    low, high = maps.min(axis=(-2, -1), keepdims=True), maps.max(axis=(-2, -1), keepdims=True)
    return out * (high - low) + low


def count_methods(haadf: np.ndarray, maps: np.ndarray, elements: list[str], case: Case) -> dict[str, Callable]:
    """Return the methods for maps of counts, each a function of nothing that returns maps in counts."""

    def gauss() -> np.ndarray:
        choice = baselines.gaussian_counts(maps)
        case.sigma.setdefault("gauss", choice.sigma)
        return choice.maps

    return {
        "raw": lambda: maps.astype(np.float64),
        "gauss": gauss,
        "ptv": lambda: quiet(baselines.poisson_tv, maps, haadf, elements=elements),
        "default": lambda: fused(haadf, maps, elements),
        "auto": lambda: fused(haadf, maps, elements, "auto"),
        "reference": lambda: reference(haadf, maps, elements),
    }


def run_methods(case: Case, methods: dict[str, Callable], score: Callable[[np.ndarray], Trial], show: bool) -> None:
    """Run and score every method on one realization; keep its maps when ``show``."""
    for name, method in methods.items():
        if name in case.failed:
            continue
        start = time.perf_counter()
        try:
            estimate = method()
        except Exception as error:  # a method that fails or refuses is reported, not fatal
            case.failed[name] = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
            continue
        case.seconds[name] = case.seconds.get(name, 0.0) + time.perf_counter() - start
        case.add(name, score(estimate))
        if show and name not in case.shown:
            case.shown[name] = estimate


# ---------------------------------------------------------------- metrics


def signal(counts: np.ndarray) -> np.ndarray:
    r"""Estimate :math:`\lVert \mu - \bar\mu \rVert^2` per map from Poisson counts: their spread less their variance."""
    pixels = counts.shape[-1] * counts.shape[-2]
    centred = counts - counts.mean(axis=(-2, -1), keepdims=True)
    return np.sum(centred**2, axis=(-2, -1)) - counts.sum(axis=(-2, -1)) * (1 - 1 / pixels)


def signed_root(ratio: np.ndarray) -> np.ndarray:
    """Return the signed square root: noise can make an unbiased squared error negative."""
    return np.sign(ratio) * np.sqrt(np.abs(ratio))


def heldout(estimate: np.ndarray, held: np.ndarray, fit: float, kept: float, full: np.ndarray) -> Trial:
    r"""Score ``estimate`` against independent held-out counts, at raw scale and scale-invariant.

    ``estimate`` was computed from a fraction ``fit`` of an acquisition's counts, ``held`` is an
    independent fraction ``kept`` of them, and ``full`` the signal of all the counts (`signal`).
    With :math:`r = s h`, :math:`s` = ``fit / kept``, :math:`h` Poisson and independent of the estimate,
    :math:`E\lVert x - r\rVert^2 = \lVert x - \mu\rVert^2 + s^2 \sum\mu`: subtracting
    :math:`s^2 \sum h` leaves an unbiased estimate of the squared error against the mean at the
    estimate's dose, divided by that mean's spread, ``full * fit**2`` (from all the counts, steadier
    than from the held-out part alone).  The scale-invariant figure is the held-out estimate
    `fusex.tune` uses (its numerator), over the same spread.  NaN where the counts resolve no spread.
    """
    held = held.astype(np.float64)
    scale = fit / kept
    with np.errstate(divide="ignore", invalid="ignore"):
        target = np.where(full > 0, full, np.nan)
        raw = np.sum((estimate - scale * held) ** 2, axis=(-2, -1)) - scale**2 * held.sum(axis=(-2, -1))
        ratio = _heldout_nrmse(estimate[None], held[None])
        # undo its division (by the held-out signal, floored as it floors it): the fit's residual less the noise
        residual = np.sign(ratio) * ratio**2 * np.maximum(signal(held), 1e-12)
        return Trial(
            signed_root(raw / (target * fit**2)), signed_root(residual / (target * kept**2)), np.zeros(len(held))
        )


def totals(estimate: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """Return each element's total over the total of the counts it was computed from."""
    return estimate.sum(axis=(-2, -1)) / np.maximum(maps.sum(axis=(-2, -1)), 1e-300)


# ---------------------------------------------------------------- cases


def phantom_case(lattice: str, dose: float, size: int, seeds: list[int]) -> Case:
    """Score every method against the truth, in counts, on phantoms of one lattice and dose."""
    background = 0.05
    elements = list(LATTICES[lattice])
    case = Case(f"Phantom, {lattice}", f"{dose:g} counts/column", elements, "standard error over seeds")
    for seed in seeds:
        s = phantom((size, size), lattice=lattice, dose=dose, background=background, seed=seed)
        truth = dose * s.truth.astype(np.float64) + background  # the expected counts: the maps' units
        maps = s.maps.astype(np.float64)
        methods = count_methods(s.haadf, maps, elements, case)

        def truth_gauss(maps: np.ndarray = maps, truth: np.ndarray = truth) -> np.ndarray:
            choice = baselines.gaussian_truth(maps, truth)
            case.sigma.setdefault("gauss_truth", choice.sigma)
            return choice.maps

        methods = {"raw": methods.pop("raw"), "gauss": methods.pop("gauss"), "gauss_truth": truth_gauss, **methods}

        def score(estimate: np.ndarray, truth: np.ndarray = truth, maps: np.ndarray = maps) -> Trial:
            return Trial(raw_nrmse(estimate, truth), nrmse(estimate, truth), totals(estimate, maps))

        run_methods(case, methods, score, show=seed == seeds[0])
        if seed == seeds[0]:
            case.shown = {"truth": truth, **case.shown}
    return case


def read_spectrum_image(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Return the first image, the spectrum image (H, W, C) and its channel energies (keV), or None if absent."""
    path = DATA / name
    if not path.exists():
        print(f"skipped {name}: not found in {DATA}", file=sys.stderr)
        return None
    from rsciio.bruker import file_reader

    signals = quiet(file_reader, str(path))
    image = np.asarray(signals[0]["data"], dtype=np.float64)
    cube = signals[-1]
    axis = cube["axes"][-1]
    energy = axis["offset"] + axis["scale"] * np.arange(cube["data"].shape[-1])
    return image, np.asarray(cube["data"]), energy


def fwhm(energy: float) -> float:
    """FWHM in keV of a line at ``energy`` keV: FWHM^2 = FWHM(Mn Ka)^2 + 2.5 eV (E - E(Mn Ka)) (Fiori & Newbury)."""
    return float(np.sqrt(FWHM_MNKA**2 + 2500.0 * (energy - 5.8987))) / 1000.0


def crop(cube: np.ndarray, energy: np.ndarray, lines: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Keep the channels from just below the lowest to just above the highest window (smaller folds and PCA)."""
    low = min(e - 2 * fwhm(e) for e in lines.values())
    high = max(e + 2 * fwhm(e) for e in lines.values())
    keep = (energy >= low) & (energy <= high)
    return cube[..., keep], energy[keep]


def integrate(cube: np.ndarray, energy: np.ndarray, lines: dict[str, float]) -> np.ndarray:
    """Sum the channels within +-WINDOW FWHM of each line: maps (E, H, W) of counts, no background removed."""
    if integrate_lines is not None:
        maps = quiet(
            integrate_lines,
            cube,
            energy=energy,
            energy_units="keV",
            lines=list(lines),
            window=2 * WINDOW,
            fwhm_mn_ka=FWHM_MNKA,
        )
        return np.asarray(maps.values, dtype=np.float64)
    out = []
    for e in lines.values():
        width = WINDOW * fwhm(e)
        out.append(cube[..., (energy >= e - width) & (energy <= e + width)].sum(axis=-1, dtype=np.float64))
    return np.stack(out)


def pca_maps(cube: np.ndarray, energy: np.ndarray, lines: dict[str, float]) -> np.ndarray:
    """Integrate the lines from a PCA model of the spectrum image (HyperSpy, Poisson-normalized SVD)."""
    import hyperspy.api as hs

    logging.getLogger("hyperspy").setLevel(logging.ERROR)
    signal = hs.signals.Signal1D(cube.astype(np.float32))
    quiet(signal.decomposition, normalize_poissonian_noise=True, print_info=False)
    model = quiet(signal.get_decomposition_model, PCA_COMPONENTS)
    return integrate(np.asarray(model.data, dtype=np.float64), energy, lines)


def hyperspy_available() -> bool:
    """Say whether HyperSpy can be imported (PCA rows), with a message if not."""
    try:
        import hyperspy.api  # noqa: F401
    except ImportError:
        print("HyperSpy is not installed: no PCA rows", file=sys.stderr)
        return False
    return True


def sem_cases(fractions: list[float], seeds: list[int]) -> list[Case]:
    """Thin the SEM spectrum image to each fraction; score against the remainder at raw scale."""
    read = read_spectrum_image("bcf_v2_50x50px.bcf")
    if read is None:
        return []
    image, cube, energy = read
    cube, energy = crop(cube, energy, SEM_LINES)
    elements = list(SEM_LINES)
    use_pca = hyperspy_available()
    cases = []
    full = integrate(cube, energy, SEM_LINES)
    reach = signal(full)
    for p in fractions:
        case = Case("SEM spectrum image, thinned", f"{100 * p:g} %", elements, "standard error over thinning seeds")
        case.structure = structure(full)
        for seed in seeds:
            thin = np.random.default_rng(seed).binomial(cube, p)
            maps = integrate(thin, energy, SEM_LINES)
            rest = full - maps
            methods = count_methods(image, maps, elements, case)
            if use_pca:
                methods["pca"] = lambda thin=thin: pca_maps(thin, energy, SEM_LINES)

            def score(estimate: np.ndarray, rest: np.ndarray = rest, maps: np.ndarray = maps, p: float = p) -> Trial:
                trial = heldout(estimate, rest, p, 1 - p, reach)
                trial.total = totals(estimate, maps)
                return trial

            run_methods(case, order(methods), score, show=seed == seeds[0])
            if seed == seeds[0]:
                case.shown = {"remainder": rest * p / (1 - p), **case.shown}
        cases.append(case)
    return cases


def structure(counts: np.ndarray) -> np.ndarray:
    """Return each map's signal variance over its Poisson variance: how much spatial structure its counts resolve."""
    return signal(counts) / np.maximum(counts.sum(axis=(-2, -1)), 1e-300)


def order(methods: dict[str, Callable]) -> dict[str, Callable]:
    """Return ``methods`` in the order of the tables."""
    return {name: methods[name] for name in METHODS if name in methods}


def count_split_case(folds: int, size: int | None) -> list[Case]:
    """Split P45's spectrum image into folds; fit on the others, score on the held-out fold at raw scale."""
    read = read_spectrum_image("P45_the_default_job.bcf")
    if read is None:
        return []
    image, cube, energy = read
    if size is not None:
        image, cube = image[:size, :size], cube[:size, :size]
    cube, energy = crop(cube, energy, P45_LINES)
    elements = list(P45_LINES)
    case = Case(
        "Low-count spectrum image, count splitting",
        f"P45 {cube.shape[0]}x{cube.shape[1]} px, {folds} folds",
        elements,
        "standard error over folds",
    )
    full = integrate(cube, energy, P45_LINES)
    case.structure = structure(full)
    reach = signal(full)
    use_pca = hyperspy_available()
    split = split_counts(cube, folds, np.random.default_rng(0))
    for k in range(folds):
        fit = (cube - split[k]).astype(np.int64)
        maps = integrate(fit, energy, P45_LINES)
        held = integrate(split[k], energy, P45_LINES)
        methods = count_methods(image, maps, elements, case)
        if use_pca:
            methods["pca"] = lambda fit=fit: pca_maps(fit, energy, P45_LINES)

        def score(estimate: np.ndarray, held: np.ndarray = held, maps: np.ndarray = maps) -> Trial:
            trial = heldout(estimate, held, (folds - 1) / folds, 1 / folds, reach)
            trial.total = totals(estimate, maps)
            return trial

        run_methods(case, order(methods), score, show=k == 0)
        if k == 0:
            case.shown = {"held": held * (folds - 1), **case.shown}
    return [case]


def dysco3_case(size: int | None) -> list[Case]:
    """Score every method on the DyScO3 maps (not counts) by the J-invariant loss."""
    path = DATA / "PTO_Trilayer_dataset.npz"
    if not path.exists():
        print(f"skipped DyScO3: {path} not found", file=sys.stderr)
        return []
    with np.load(path) as data:
        haadf = np.asarray(data["HAADF"], dtype=np.float64)
        elements = ["Sc", "Dy", "O"]
        maps = np.stack([np.asarray(data[e], dtype=np.float64) for e in elements])
    if size is not None:
        haadf, maps = haadf[:size, :size], maps[:, :size, :size]
    case = Case("DyScO3 (maps, not counts)", f"{maps.shape[-1]} px", elements, "standard error over the 16 masks")

    def gauss(m: np.ndarray) -> np.ndarray:
        return baselines.gaussian_jinvariant(m).maps

    methods = {
        "raw": lambda m: m,
        "gauss": gauss,
        "ptv": lambda m: quiet(baselines.poisson_tv, m, haadf, elements=elements),
        "default": lambda m: fused(haadf, m, elements),
        "auto": lambda m: fused(haadf, m, elements, "auto"),
        "tutorial": lambda m: fused(haadf, m, elements, TUTORIAL),
        "reference": lambda m: reference(haadf, m, elements),
    }
    case.sigma["gauss"] = baselines.gaussian_jinvariant(maps).sigma
    nan = np.full(len(elements), np.nan)
    for name, method in methods.items():
        start = time.perf_counter()
        try:
            full = method(maps)
            loss = baselines.jinvariant_loss(maps, method)
        except Exception as error:
            case.failed[name] = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
            continue
        case.seconds[name] = time.perf_counter() - start
        case.add(name, Trial(loss.value, nan, totals(full, maps), loss.spread))
        case.shown[name] = full
    return [case]


# ---------------------------------------------------------------- the page


def cell(value: float, se: float, lost: bool) -> str:
    """Format one table cell: value, standard error, and the mark where a method loses."""
    if not np.isfinite(value):
        return "n/a"
    text = f"{value:.2f}" if abs(value) < 100 else f"{value:.3g}"
    if se > 0:
        text += f" ± {se:.2f}" if se < 100 else f" ± {se:.3g}"
    return f"**{text}** ✗" if lost else text


def loses(case: Case, method: str, metric: str, against: str) -> np.ndarray:
    """Where ``method`` is worse than ``against`` by more than twice their combined noise."""
    if against not in case.trials or method == against:
        return np.zeros(len(case.elements), dtype=bool)
    mine, my_se = case.summary(method, metric)
    theirs, their_se = case.summary(against, metric)
    return mine - theirs > 2 * np.hypot(my_se, their_se)


def table(case: Case, metric: str) -> list[str]:
    """Return the markdown table of ``metric`` for every method of ``case``."""
    heads = "| method | " + " | ".join(case.elements) + " |"
    lines = [heads, "|---" * (len(case.elements) + 1) + "|"]
    for method in METHODS:
        if method in case.failed:
            lines.append(f"| {METHODS[method]} | " + " | ".join(["—"] * len(case.elements)) + " |")
            continue
        if method not in case.trials:
            continue
        value, se = case.summary(method, metric)
        if metric == "total":
            lost = np.abs(value - 1) > 0.03
        elif method in FUSIONS:
            lost = loses(case, method, metric, "raw") | loses(case, method, metric, "gauss")
        else:
            lost = np.zeros(len(value), dtype=bool)
        lines.append(
            f"| {METHODS[method]} | " + " | ".join(cell(v, s, bad) for v, s, bad in zip(value, se, lost)) + " |"
        )
    return lines


def summary(cases: list[Case]) -> list[str]:
    """Return the summary table: per case and fusion-type method, the elements where it loses."""
    methods = [m for m in FUSIONS if any(m in case.trials or m in case.failed for case in cases)]
    lines = [
        "## Summary",
        "",
        "Per case and method, the number of elements (of all) where it is worse at raw scale (DyScO3: in",
        "J-invariant loss) than the data-chosen Gaussian (**G**) and than the raw maps (**R**) by more than",
        "twice the combined standard error, and where its total is off by more than 3 % (**T**).",
        "",
        "| case | " + " | ".join(METHODS[m] for m in methods) + " |",
        "|---" * (len(methods) + 1) + "|",
    ]
    for case in cases:
        cells = []
        for method in methods:
            if method not in case.trials:
                cells.append("refused or failed" if method in case.failed else "")
                continue
            worse = [int(loses(case, method, "raw", against).sum()) for against in ("gauss", "raw")]
            off = int(np.sum(np.abs(case.summary(method, "total")[0] - 1) > 0.03))
            n = len(case.elements)
            cells.append(f"G {worse[0]}/{n} · R {worse[1]}/{n} · T {off}/{n}")
        lines.append(f"| {case.group}: {case.label} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def dominant(case: Case) -> int | None:
    """Return the index of the element that dominates a phantom case's HAADF image (the heaviest), else None."""
    if not case.group.startswith("Phantom"):
        return None
    numbers = atomic_numbers([e.split("_")[0] for e in case.elements])
    return int(np.argmax(numbers))


def targets(cases: list[Case]) -> list[str]:
    """Return the table of the targets `params="auto"` is held to, per case: each value and whether it is met."""
    lines = [
        "## Targets",
        "",
        'What `params="auto"` must achieve, per case, at raw scale (DyScO3: J-invariant loss): no element worse',
        "than the raw maps or than the data-chosen Gaussian by more than twice their combined standard error;",
        "the element that dominates a phantom's HAADF image at least 1.3x better than the data-chosen",
        "Gaussian at 3 and 10 counts per column (the ratio Gaussian / auto is shown); every total within",
        "3 % of the counts (maps that are not counts: no total to keep); on DyScO3, a loss at most the",
        "Gaussian's for every element. How much better than the Gaussian the dominant element can get on",
        "these phantoms, with references that know the truth: "
        "[tuning](tuning.md#how-much-room-the-dominant-element-has).",
        "",
        "| case | worse than raw / Gaussian | dominant element, Gaussian / auto | totals, worst "
        "| DyScO3 loss, auto - Gaussian | met |",
        "|---|---|---|---|---|---|",
    ]
    for case in cases:
        label = f"{case.group}: {case.label}"
        if "auto" not in case.trials:
            lines.append(f"| {label} | {'refused or failed' if 'auto' in case.failed else 'not run'} | | | | no |")
            continue
        met = True
        names = []
        for against in ("raw", "gauss"):
            lost = loses(case, "auto", "raw", against)
            met &= not lost.any()
            names.append(", ".join(e for e, bad in zip(case.elements, lost) if bad) or "none")
        worse = " / ".join(names)
        heavy = ""
        e = dominant(case)
        if e is not None and "gauss" in case.trials:
            ratio = case.summary("gauss", "raw")[0][e] / case.summary("auto", "raw")[0][e]
            heavy = f"{case.elements[e]} {ratio:.2f}"
            if not case.label.startswith("1 "):
                met &= bool(ratio >= 1.3)
            else:
                heavy += " (no target at 1 count)"
        total = case.summary("auto", "total")[0]
        jinv = ""
        if case.group.startswith("DyScO3"):
            difference = case.summary("auto", "raw")[0] - case.summary("gauss", "raw")[0]
            jinv = " ".join(f"{el} {d:+.4f}" for el, d in zip(case.elements, difference))
            met &= bool(np.all(difference <= 0))
            totals_text = "n/a (not counts)"
        else:
            worst = int(np.nanargmax(np.abs(total - 1)))
            totals_text = f"{case.elements[worst]} {total[worst]:.3f}"
            met &= bool(abs(total[worst] - 1) <= 0.03)
        verdict = "yes" if met else "**no**"
        lines.append(f"| {label} | {worse} | {heavy} | {totals_text} | {jinv} | {verdict} |")
    return [*lines, ""]


def figure(case: Case, path: Path) -> None:
    """Save the maps of ``case``'s first realization, one row per element, one column per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(case.shown)
    rows, cols = len(case.elements), len(names)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.6 * rows + 0.6), squeeze=False)
    for e, element in enumerate(case.elements):
        low, high = np.percentile(case.shown[names[0]][e], [1, 99.5])
        for j, name in enumerate(names):
            ax = axes[e, j]
            ax.imshow(case.shown[name][e], cmap="magma", vmin=low, vmax=max(high, low + 1e-12))
            ax.set_xticks([])
            ax.set_yticks([])
            if e == 0:
                title = SHOWN.get(name, METHODS.get(name)).replace("`", "").replace("fusex ", "")
                ax.set_title(textwrap.fill(title, 18), fontsize=7)
            if j == 0:
                ax.set_ylabel(element, fontsize=8)
    fig.suptitle(f"{case.group}: {case.label} (one colour scale per row, from the first column)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def library() -> str:
    """Describe the fusex that was measured: its version, and the checkout's commit when it came from there."""
    where = Path(fusex.__file__).resolve().parent
    if not where.is_relative_to(ROOT):
        return f"fusex {fusex.__version__} from {where}"
    try:
        run = {"capture_output": True, "text": True, "check": True}
        head = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h"], **run).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "src"], **run).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"fusex {fusex.__version__}"
    return f"fusex {fusex.__version__}, commit {head}" + (" with uncommitted changes under src/" if dirty else "")


def page(saved: dict[str, Any], figures: dict[str, str]) -> str:
    """Return the markdown of docs/accuracy.md for a run's results."""
    cases, mode, seconds, measured, now = (saved[k] for k in ("cases", "mode", "seconds", "measured", "date"))
    out = [
        "# Accuracy",
        "",
        "Fused maps are only worth having if they beat a simple treatment of the same counts. This page",
        "compares fusex, per element, with the raw maps, with a Gaussian blur whose width is chosen from",
        "the data, and with the other simple alternatives in `fusex.baselines`, on phantoms and on real",
        "acquisitions. It is written by `scripts/accuracy.py`; do not edit it by hand:",
        "",
        "```bash",
        "python scripts/accuracy.py --quick   # small sizes, one seed",
        "python scripts/accuracy.py           # the full benchmark",
        "```",
        "",
        '!!! note "This run"',
        f"    Mode **{mode}**, {now}, {measured}, {seconds / 60:.1f} min on {os.cpu_count()} cores.",
        "",
        "## Methods",
        "",
        "| method | what it is |",
        "|---|---|",
        "| raw maps | the counts as they are |",
        "| Gaussian, sigma from the data | `fusex.baselines.gaussian_counts`: one width per element, chosen by count "
        "splitting (4 folds) with the held-out NRMSE estimate `fusex.tune` ranks fusions by; for maps that are not "
        "counts, `gaussian_jinvariant` (J-invariant pixel hold-out) |",
        "| Gaussian, sigma from the truth | `fusex.baselines.gaussian_truth`: the width closest to the truth at raw "
        "scale (phantoms only), the best any Gaussian can do |",
        f"| HyperSpy PCA | `decomposition(normalize_poissonian_noise=True)` of the spectrum image, a "
        f"{PCA_COMPONENTS}-component model, then the same line integration |",
        "| Poisson-TV alone | `fusex.baselines.poisson_tv`: `fuse` with `lambda_haadf=0`, other weights default |",
        "| fusex defaults | `fusex.fuse` with `FusionParams()`, maps back in input units (`to_input_units`) |",
        '| fusex `params="auto"` | `fusex.fuse(..., params="auto")` (`fusex.tune` with its defaults; for counts each '
        "map after its held-out calibration, `docs/tuning.md`) |",
        "| tutorial parameters | DyScO3 only: the published tutorial's settings for it |",
        "| multimodal-fusion defaults | the reference package 0.6.0, `DataFusion(...).run()` with its defaults, "
        "mapped back from its min-max units with each input map's minimum and range |",
        "",
        "## Cases",
        "",
        "- **Phantoms**: `fusex.datasets.phantom` of each lattice in `fusex.datasets.LATTICES` (perovskite",
        "  Sr/Ti/O, rock salt Mg/O), at 1, 3 and 10 expected counts per fully occupied column, background",
        "  0.05 counts per pixel; the truth is the expected counts.",
        "- **SEM spectrum image** (`bcf_v2_50x50px.bcf`, 50 x 50 px, about 380 counts per pixel): every",
        "  count kept with probability $p$ = 1, 2 or 5 % (binomial thinning); the remainder is an",
        "  independent reference with $(1-p)/p$ times the dose. HAADF input: its 50 x 50 electron image.",
        "- **Count splitting** (`P45_the_default_job.bcf`, about 22 counts per pixel): the spectrum image is",
        "  split into $K$ folds; each method sees all folds but one and is scored on the held-out fold.",
        "  The file lists no elements; the lines are those of the peaks of its sum spectrum. HAADF input:",
        "  its BSE image.",
        f"- Lines are integrated over $\\pm${WINDOW:g} FWHM (detector FWHM {FWHM_MNKA:g} eV at Mn Ka) by "
        f"{saved.get('integration', INTEGRATION)}, without background subtraction, so the maps stay counts. "
        f"SEM: {', '.join(SEM_LINES)}; P45: {', '.join(P45_LINES)}.",
        "- **DyScO3** (`PTO_Trilayer_dataset.npz`, the published tutorial's data, 256 x 256; the full",
        f"  benchmark scores its top-left {DYSCO3_CROP} x {DYSCO3_CROP}, since `auto`'s loss alone is 16",
        "  J-invariant tunes): maps normalized to about [0, 1], not counts, so `auto` chooses by the",
        "  J-invariant pixel hold-out instead of count splitting.",
        "",
        "The shared files live in `shared/data` beside the checkout; cases whose file is absent are skipped.",
        "",
        "## Metrics",
        "",
        "- **raw scale**: the NRMSE with no rescaling, $\\lVert \\hat x - t\\rVert / \\lVert t - \\bar t\\rVert$,",
        "  against the truth in counts (phantoms: `dose * truth + background`) or against the independent",
        "  held-out counts. A held-out reference $r = s\\,h$ (the thinning remainder scaled by",
        "  $s = p/(1-p)$, or the held-out fold scaled by $K-1$) carries its own Poisson noise,",
        "  $s^2 \\sum h$ in expectation, which is subtracted from the squared error, so the figure",
        "  estimates the error against the mean counts at the estimate's dose; the denominator, that",
        "  mean's spread, is estimated from all the counts (their spread less their sum). Noise can make",
        "  a squared error come out negative; it is shown as a signed root.",
        "- **scale-invariant**: the same after a least-squares affine fit: `fusex.datasets.nrmse`",
        "  (phantoms), or the held-out estimate `fusex.tune` ranks fusions by, over the same denominator",
        "  (real data).",
        "- **total**: each element's summed estimate over the summed counts it was computed from",
        "  (1 = the element's counts are kept).",
        "- **DyScO3** (maps, not counts): the J-invariant loss `fusex.baselines.jinvariant_loss`, each",
        "  pixel predicted by a run of the method that never saw it (stride 4, 16 runs), relative to the",
        "  map's variance. It includes the data's own noise, so only differences matter; for the raw maps",
        "  it is the loss of predicting each pixel by its four neighbours' mean.",
        "",
        "Each value is a mean over seeds or folds with its standard error (± , the noise a comparison must",
        "beat; none is shown with a single realization). **Bold ✗** marks a fusion-type method (Poisson-TV,",
        "fusex defaults, auto, tutorial, the reference) that is worse than the raw maps or than the",
        "data-chosen Gaussian by more than twice their combined standard error, and, in the totals",
        "tables, any total off by more than 3 %. A dash: the method failed or refused (see the notes",
        "under the table).",
        "",
        *summary(cases),
        *targets(cases),
    ]
    for case in cases:
        out += [f"## {case.group}: {case.label}", ""]
        if "gauss" in case.sigma or "gauss_truth" in case.sigma:
            chosen = "; ".join(
                f"{METHODS[k].split(', ')[1]}: " + "/".join(f"{s:g}" for s in v) for k, v in case.sigma.items()
            )
            out += [f"Chosen Gaussian widths (pixels, first realization) — {chosen}. Noise: {case.noise}.", ""]
        if case.structure is not None:
            ratios = ", ".join(f"{e} {r:.2g}" for e, r in zip(case.elements, case.structure))
            out += [
                "Structure the full-dose counts resolve (signal variance over Poisson variance, per element): "
                f"{ratios}. Where it is well below 1 a map is nearly flat and its NRMSE, relative to a tiny "
                "signal spread, is large for every method; compare methods, and the totals, there.",
                "",
            ]
        if case.group.startswith("DyScO3"):
            out += ["J-invariant loss (lower is better):", "", *table(case, "raw"), ""]
        else:
            out += ["NRMSE at raw scale:", "", *table(case, "raw"), ""]
            out += ["NRMSE, scale-invariant:", "", *table(case, "scaled"), ""]
        out += ["Totals relative to the counts:", "", *table(case, "total"), ""]
        spent = ", ".join(f"{METHODS[m].replace('`', '')} {t:.1f}" for m, t in case.seconds.items())
        out += [f"Seconds (all realizations): {spent}.", ""]
        for method, reason in case.failed.items():
            out.append(f"- {METHODS[method]}: {reason}")
        if case.failed:
            out.append("")
        key = f"{case.group}: {case.label}"
        if key in figures:
            out += [f"![{key}](figures/{figures[key]})", ""]
    return "\n".join(out) + "\n"


def run(
    quick: bool, done: Callable[[list[Case]], None] = lambda cases: None, previous: Sequence[Case] = ()
) -> list[Case]:
    """Run every case, printing progress and calling ``done(cases)`` after each group of cases.

    Cases in ``previous`` (a stopped run's) are kept, and their groups are not run again.
    """
    if quick:
        size, seeds, fractions, sem_seeds, folds, crop, dysco3 = 32, [0], [0.02], [0], 2, 40, 40
    else:
        size, seeds, fractions, sem_seeds, folds, crop = 192, [0, 1], [0.01, 0.02, 0.05], [0, 1, 2], 4, None
        # auto's J-invariant loss is 16 J-invariant tunes, each of 4 masked fits per candidate: over an
        # hour at 256 px on two cores, so the full benchmark scores a top-left crop
        dysco3 = DYSCO3_CROP
    start = time.perf_counter()
    cases: list[Case] = list(previous)
    have = {(case.group, case.label) for case in cases}
    groups = {case.group for case in cases}
    for lattice in LATTICES:
        for dose in (1.0, 3.0, 10.0):
            if (f"Phantom, {lattice}", f"{dose:g} counts/column") in have:
                continue
            cases.append(phantom_case(lattice, dose, size, seeds))
            print(f"{cases[-1].group}: {cases[-1].label} done, {time.perf_counter() - start:.0f} s", file=sys.stderr)
            done(cases)
    for name, title, group in (
        ("SEM", "SEM spectrum image, thinned", lambda: sem_cases(fractions, sem_seeds)),
        ("count splitting", "Low-count spectrum image, count splitting", lambda: count_split_case(folds, crop)),
        ("DyScO3", "DyScO3 (maps, not counts)", lambda: dysco3_case(dysco3)),
    ):
        if title in groups:
            continue
        cases += group()
        print(f"{name} done, {time.perf_counter() - start:.0f} s", file=sys.stderr)
        done(cases)
    return cases


DYSCO3_CROP = 64  # pixels of the DyScO3 maps the full benchmark scores

FIGURES = {  # case group (and label, for the one shown of several) -> figure file
    ("Phantom, perovskite", "3 counts/column"): "accuracy-phantom.png",
    ("SEM spectrum image, thinned", "2 %"): "accuracy-sem.png",
    ("Low-count spectrum image, count splitting", None): "accuracy-count-splitting.png",
    ("DyScO3 (maps, not counts)", None): "accuracy-dysco3.png",
}


def main() -> None:
    """Run the cases (or load a saved run), write the page and its figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and one seed, a minute or two")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="the docs folder (default: docs/)")
    parser.add_argument("--measured", help="how the page names the fusex measured (default: its version and commit)")
    parser.add_argument("--save", type=Path, help="also pickle the results to this file, after every case")
    parser.add_argument("--load", type=Path, help="write the page from results saved with --save, without running")
    parser.add_argument("--resume", type=Path, help="keep the cases saved with --save and run only the others")
    args = parser.parse_args()
    if args.load:
        saved = pickle.loads(args.load.read_bytes())
        if args.measured:  # a run saved before its commit existed can be named after it
            saved["measured"] = args.measured
    else:
        start = time.perf_counter()

        def results(cases: list[Case]) -> dict[str, Any]:
            return {
                "cases": cases,
                "mode": "quick" if args.quick else "full",
                "seconds": time.perf_counter() - start,
                "measured": args.measured or library(),
                "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                "integration": INTEGRATION,
            }

        def checkpoint(cases: list[Case]) -> None:
            # a long run that is stopped keeps the cases it finished (--load writes their page)
            if args.save:
                args.save.write_bytes(pickle.dumps(results(cases)))

        earlier = pickle.loads(args.resume.read_bytes()) if args.resume else {"cases": [], "seconds": 0.0}
        if args.resume and earlier["mode"] != ("quick" if args.quick else "full"):
            parser.error(f"--resume: {args.resume} holds a {earlier['mode']} run; pass --quick to match, or start anew")
        start -= earlier["seconds"]  # the page reports the time of both parts
        saved = results(run(args.quick, checkpoint, earlier["cases"]))
        checkpoint(saved["cases"])
    figures = {}
    (args.out / "figures").mkdir(parents=True, exist_ok=True)
    for case in saved["cases"]:
        name = FIGURES.get((case.group, case.label), FIGURES.get((case.group, None)))
        if name is not None:
            figure(case, args.out / "figures" / name)
            figures[f"{case.group}: {case.label}"] = name
    text = page(saved, figures)
    (args.out / "accuracy.md").write_text(text, encoding="utf-8")
    print(f"wrote {args.out / 'accuracy.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
