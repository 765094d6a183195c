"""Make the figures and the table of the "Choosing parameters automatically" page.

Run from the repository root (needs fusex and matplotlib)::

    python docs/scripts/make_tuning_figures.py

On the built-in example (the tutorial's SrTiO3 phantom, 128 x 128 pixels, 3 counts per column)
it fuses with the published method's defaults, with fusex's defaults and with `fusex.tune`'s
choice (and shows tune's average of the fold fits), and writes ``docs/figures/tuning-compare.png``,
``tuning-surface.png`` and ``tuning-nrmse.md``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

import fusex
from fusex.datasets import nrmse, phantom
from fusex.params import PerElement

OUT = Path(__file__).resolve().parents[1] / "figures"


def _weights(params: fusex.FusionParams) -> str:
    def show(value: object) -> str:
        return ", ".join(f"{k} {v:g}" for k, v in value.items()) if isinstance(value, PerElement) else f"{value:g}"

    return f"lambda_tv: {show(params.lambda_tv)}; lambda_chem: {show(params.lambda_chem)}"


def main() -> None:
    """Fuse three ways, plot the maps and the score surface, and write the NRMSE table."""
    sample = phantom((128, 128), dose=3.0, seed=0)
    published = fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=fusex.FusionParams.published())
    default = fusex.fuse(sample.haadf, sample.maps, elements=sample.elements)
    tuned = fusex.tune(sample.haadf, sample.maps, elements=sample.elements)
    rows = {
        "raw counts": sample.maps,
        "published defaults": published.to_input_units(),
        "fusex defaults": default.to_input_units(),
        f"tuned ({_weights(tuned.params)})": tuned.result.to_input_units(),
        "tuned, fold average": tuned.average,
    }
    errors = {name: nrmse(maps, sample.truth) for name, maps in rows.items()}

    fig, axes = plt.subplots(len(sample.elements), len(rows) + 1, figsize=(12.5, 6.4), constrained_layout=True)
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

    lines = ["| maps | " + " | ".join(sample.elements) + " | mean |", "|---" * (len(sample.elements) + 2) + "|"]
    for name, err in errors.items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in err) + f" | {np.mean(err):.3f} |")
    table = "\n".join(lines) + "\n"
    (OUT / "tuning-nrmse.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
