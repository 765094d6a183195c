"""Make the figures and the table of the "Choosing parameters automatically" page.

Run from the repository root (needs fusex and matplotlib)::

    python docs/scripts/make_tuning_figures.py

On the built-in example (the tutorial's SrTiO3 phantom, 128 x 128 pixels, 3 counts per column)
it fuses with the published method's defaults, with fusex's defaults and with `fusex.tune`'s
choice (and shows tune's average of the fold fits and the Gaussian blur whose width
`fusex.baselines.gaussian_counts` chooses from the data), and writes ``docs/figures/tuning-compare.png``,
``tuning-surface.png`` and ``tuning-nrmse.md``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

import fusex
from fusex.baselines import gaussian_counts
from fusex.datasets import nrmse, phantom
from fusex.params import PerElement

OUT = Path(__file__).resolve().parents[1] / "figures"


def _weights(params: fusex.FusionParams) -> str:
    def show(value: object) -> str:
        return ", ".join(f"{k} {v:g}" for k, v in value.items()) if isinstance(value, PerElement) else f"{value:g}"

    prior = params.prior if isinstance(params.prior, str) else ", ".join(f"{k} {v}" for k, v in params.prior.items())
    return f"prior: {prior}; lambda_tv: {show(params.lambda_tv)}; lambda_chem: {show(params.lambda_chem)}"


def _raw_nrmse(estimate: np.ndarray, truth: np.ndarray) -> np.ndarray:
    centred = truth - truth.mean(axis=(-2, -1), keepdims=True)
    return np.sqrt(np.sum((estimate - truth) ** 2, axis=(-2, -1)) / np.sum(centred**2, axis=(-2, -1)))


def main() -> None:
    """Fuse three ways, plot the maps and the score surface, and write the NRMSE table."""
    sample = phantom((128, 128), dose=3.0, seed=0)
    published = fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=fusex.FusionParams.published())
    default = fusex.fuse(sample.haadf, sample.maps, elements=sample.elements)
    tuned = fusex.tune(sample.haadf, sample.maps, elements=sample.elements)
    rows = {
        "raw counts": sample.maps,
        "Gaussian, sigma from the data": gaussian_counts(sample.maps).maps,
        "published defaults": published.to_input_units(),
        "fusex defaults": default.to_input_units(),
        f"tuned ({_weights(tuned.params)})": tuned.result.to_input_units(),
        "tuned, fold average": tuned.average,
    }
    errors = {name: nrmse(maps, sample.truth) for name, maps in rows.items()}
    counts = 3.0 * sample.truth + 0.05  # the expected counts: dose * truth + the phantom's background
    raw_scale = {name: _raw_nrmse(np.asarray(maps, dtype=np.float64), counts) for name, maps in rows.items()}

    fig, axes = plt.subplots(len(sample.elements), len(rows) + 1, figsize=(14.5, 6.4), constrained_layout=True)
    columns = {"truth": sample.truth, **rows}
    for col, (name, maps) in enumerate(columns.items()):
        for e, element in enumerate(sample.elements):
            ax = axes[e, col]
            ax.imshow(maps[e], cmap="magma")
            ax.set_xticks([])
            ax.set_yticks([])
            if col:
                ax.text(0.03, 0.04, f"{errors[name][e]:.2f}", color="white", transform=ax.transAxes, fontsize=9)
            if e == 0:
                ax.set_title(name.split(" (")[0], fontsize=9)
            if col == 0:
                ax.set_ylabel(element)
    fig.savefig(OUT / "tuning-compare.png", dpi=80)
    plt.close(fig)

    fig = tuned.plot()
    fig.savefig(OUT / "tuning-surface.png", dpi=80)
    plt.close(fig)

    names = " | ".join(sample.elements)
    lines = [f"| maps | scale-invariant: {names} | raw scale: {names} |", "|---" * (2 * len(sample.elements) + 1) + "|"]
    for name, err in errors.items():
        cells = " | ".join(f"{v:.3f}" for v in (*err, *raw_scale[name]))
        lines.append(f"| {name} | {cells} |")
    table = "\n".join(lines) + "\n"
    (OUT / "tuning-nrmse.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
