"""How much better than a Gaussian blur the dominant element's map can get on the benchmark's phantoms.

The accuracy benchmark asks `params="auto"` to beat the data-chosen Gaussian by 1.3x for the
element that dominates a phantom's HAADF image. How much room there is depends on how much the
HAADF image says about that element, and the phantoms' HAADF image carries Gaussian noise
(`fusex.datasets.phantom`'s ``haadf_noise``, 5 % of its peak). This script puts numbers on it,
per phantom (the accuracy benchmark's lattices, doses, size and background), for the dominant
element, at raw scale against the expected counts:

- **Gaussian**: the counts blurred with the width closest to the truth;
- **HAADF inversion**: the HAADF image blurred, with the simulation's own gain, exponent and
  normalization, inverted as if all its signal came from the dominant element, kept on that
  element's true column support (background elsewhere), width chosen by the truth;
- **blend**: the best mix ``a * Gaussian + (1 - a) * HAADF inversion``, both widths and ``a``
  chosen by the truth;
- **fusion, truth-chosen**: the best of fusex's fusions over `FUSION_GRID` (TV and Huber at two
  widths, over ``lambda_tv`` x ``lambda_haadf``), chosen by the truth: finer than `tune`'s grid in
  ``lambda_tv``, narrower in the rest, so not exhaustive.

The first three use what no method is given (the truth's support, the simulation's gain and
exponent, the truth to choose); they are a reference point for what a pixel-wise use of the
HAADF image plus a blur can reach, not a bound on every method (one that models the columns'
shape, for one, uses what they do not). Each figure is a mean over seeds with its standard error.

    python scripts/information_limit.py                    # 2 lattices x 2 doses x 4 seeds, 192 x 192
    python scripts/information_limit.py --out docs/figures/information-limit.md
"""

from __future__ import annotations

import argparse
import itertools
import time
import warnings
from pathlib import Path

import numpy as np

import fusex
from fusex.baselines import gaussian
from fusex.datasets import LATTICES, phantom, raw_nrmse

SIGMAS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
"""Widths (pixels) the truth may choose among, for the counts and for the HAADF image."""

MIXES = np.linspace(0.0, 1.0, 21)
"""Weights of the blurred counts in the blend."""

SUPPORT = 0.02
"""Occupancy above which a pixel belongs to the dominant element's columns."""

FUSION_GRID = {
    "lambda_haadf": (0.1, 0.3, 1.0),
    "lambda_tv": (0.005, 0.01, 0.02, 0.04, 0.08),
    "huber_delta": (0.01, 0.05),
}
"""The fusions the truth chooses among: TV at every ``lambda_haadf`` x ``lambda_tv``, Huber also at each width."""

BACKGROUND = 0.05
"""Background counts per pixel, as in the accuracy benchmark."""

GAMMA = 1.7
"""The Z-contrast exponent `fusex.datasets.phantom` simulates by default."""


def haadf_inversion(sample: fusex.datasets.Phantom, dominant: int, sigma: float) -> np.ndarray:
    """Invert the blurred HAADF image into the dominant element's counts, with the simulation's gain and exponent."""
    z = np.asarray(sample.z, dtype=np.float64)
    clean = np.sum((z[:, None, None] * sample.truth.astype(np.float64)) ** GAMMA, axis=0)
    blurred = gaussian(sample.haadf.astype(np.float64), sigma) * clean.max()
    occupancy = np.maximum(blurred, 0.0) ** (1.0 / GAMMA) / z[dominant]
    support = sample.truth[dominant] > SUPPORT
    return np.where(support, sample.dose * occupancy + BACKGROUND, BACKGROUND)


def best_fusion(sample: fusex.datasets.Phantom, truth: np.ndarray, dominant: int) -> tuple[float, str]:
    """Return the dominant element's smallest raw-scale NRMSE over `FUSION_GRID`, and the parameters that gave it."""
    best, label = np.inf, ""
    for prior, deltas in (("tv", (0.05,)), ("huber", FUSION_GRID["huber_delta"])):
        points = list(itertools.product(FUSION_GRID["lambda_haadf"], FUSION_GRID["lambda_tv"], deltas))
        lh, lt, hd = (np.asarray(v, dtype=np.float64) for v in zip(*points))
        params = fusex.FusionParams(prior=prior, lambda_haadf=lh, lambda_tv=lt, huber_delta=hd)
        result = fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=params, on_divergence="mark")
        fused = np.asarray(result.to_input_units(), dtype=np.float64)
        errors = np.array([raw_nrmse(f, truth)[dominant] for f in fused])
        k = int(np.nanargmin(errors))
        if errors[k] < best:
            delta = f", delta {hd[k]:g}" if prior == "huber" else ""
            best, label = float(errors[k]), f"{prior}, lambda_H {lh[k]:g}, lambda_TV {lt[k]:g}{delta}"
    return best, label


def one_phantom(lattice: str, dose: float, size: int, seed: int, auto: bool) -> dict[str, float | str]:
    """Score the dominant element of one phantom by every method (``auto`` NaN unless asked for)."""
    sample = phantom((size, size), lattice=lattice, dose=dose, background=BACKGROUND, seed=seed)
    truth = dose * sample.truth.astype(np.float64) + BACKGROUND
    dominant = int(np.argmax(sample.z))
    target = truth[dominant]
    spread = np.linalg.norm(target - target.mean())

    def error(estimate: np.ndarray) -> float:
        return float(np.linalg.norm(estimate - target) / spread)

    counts = {s: gaussian(sample.maps[dominant].astype(np.float64), s) for s in SIGMAS}
    inverted = {s: haadf_inversion(sample, dominant, s) for s in SIGMAS}
    blend = min(
        error(a * c + (1.0 - a) * h) for c, h, a in itertools.product(counts.values(), inverted.values(), MIXES)
    )
    fusion, label = best_fusion(sample, truth, dominant)
    chosen = np.nan
    if auto:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tune's edge and resolution warnings: the figure is what counts
            result = fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params="auto")
        chosen = error(np.asarray(result.to_input_units(), dtype=np.float64)[dominant])
    return {
        "gaussian": min(error(c) for c in counts.values()),
        "haadf": min(error(h) for h in inverted.values()),
        "blend": blend,
        "fusion": fusion,
        "auto": chosen,
        "label": label,
        "element": sample.elements[dominant],
    }


def mean_se(values: list[float]) -> str:
    """``mean ± standard error`` over seeds."""
    v = np.asarray(values)
    if np.isnan(v).all():
        return "not run"
    if v.size == 1:
        return f"{v[0]:.3f}"
    return f"{v.mean():.3f} ± {v.std(ddof=1) / np.sqrt(v.size):.3f}"


def main() -> None:
    """Print (and optionally write) one table row per lattice and dose."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--doses", type=float, nargs="+", default=[3.0, 10.0])
    parser.add_argument("--lattices", nargs="+", default=list(LATTICES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--no-auto", dest="auto", action="store_false", help="skip params='auto'")
    parser.add_argument("--out", type=Path, help="write the table as a Markdown page")
    args = parser.parse_args()

    start = time.perf_counter()
    lines = [
        "| phantom | dominant | Gaussian | HAADF inversion | blend | fusion, truth-chosen | Gaussian / blend "
        "| Gaussian / fusion | auto | Gaussian / auto | fusion's parameters (first seed) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for lattice, dose in itertools.product(args.lattices, args.doses):
        rows = [one_phantom(lattice, dose, args.size, seed, args.auto) for seed in args.seeds]
        column = {k: [float(r[k]) for r in rows] for k in ("gaussian", "haadf", "blend", "fusion", "auto")}
        ratio_blend = [g / b for g, b in zip(column["gaussian"], column["blend"])]
        ratio_fusion = [g / f for g, f in zip(column["gaussian"], column["fusion"])]
        ratio_auto = [g / a for g, a in zip(column["gaussian"], column["auto"])]
        lines.append(
            f"| {lattice}, {dose:g} counts/column | {rows[0]['element']} | {mean_se(column['gaussian'])} "
            f"| {mean_se(column['haadf'])} | {mean_se(column['blend'])} | {mean_se(column['fusion'])} "
            f"| {mean_se(ratio_blend)} | {mean_se(ratio_fusion)} | {mean_se(column['auto'])} "
            f"| {mean_se(ratio_auto)} | {rows[0]['label']} |"
        )
        print(lines[-1], flush=True)
    seconds = time.perf_counter() - start
    if args.out:
        seeds = ", ".join(str(s) for s in args.seeds)
        header = [
            "Written by `scripts/information_limit.py` (see its docstring for what each column is); raw-scale",
            f"NRMSE of the dominant element against the expected counts, {args.size} x {args.size} phantoms,",
            f"seeds {seeds}, mean ± standard error over seeds; {seconds / 60:.1f} min.",
            "",
        ]
        args.out.write_text("\n".join(header + lines) + "\n")


if __name__ == "__main__":
    main()
