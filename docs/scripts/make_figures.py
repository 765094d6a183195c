"""Make the figures and tables of the documentation from fusex's built-in example.

Run from the repository root (needs fusex and matplotlib, e.g. ``pip install -e ".[plot]"``)::

    python docs/scripts/make_figures.py

It writes small PNGs (80 dpi) and Markdown table fragments into ``docs/figures/``, and prints
the tables.  The pages include the fragments, so rerun it whenever the solver or its defaults
change, and commit the results.  It takes a few seconds: every fusion is 128 x 128 pixels.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np

import fusex
import fusex.plot
from fusex.datasets import nrmse, phantom

OUT = Path(__file__).resolve().parents[1] / "figures"
DPI = 80
SHAPE = (128, 128)
DOSE = 3.0
SEED = 0
CROP = (slice(0, 64), slice(0, 64))  # 4 x 4 unit cells: enough to see the columns in small panels
CMAP = "magma"
TOO_LITTLE_TV, TOO_MUCH_TV = 0.0, 0.2
TV_SWEEP = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
CHEM_SWEEP = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1)
BIG_STEP = 50.0
DOSES = (1.0, 3.0, 10.0, 30.0)
VARIANTS = (
    ("`FusionParams()` (defaults)", fusex.FusionParams()),
    ("`lambda_haadf=0` (no HAADF: Poisson-TV denoising)", fusex.FusionParams(lambda_haadf=0.0)),
    ("`lambda_haadf=1`", fusex.FusionParams(lambda_haadf=1.0)),
    ('`haadf_weights="none"`', fusex.FusionParams(haadf_weights="none")),
    ("`gamma=1.4` (the phantom has 1.7)", fusex.FusionParams(gamma=1.4)),
    ("`gamma=2.0`", fusex.FusionParams(gamma=2.0)),
    ('`tv_method="gp"`', fusex.FusionParams(tv_method="gp")),
    ("`n_tv=3`", fusex.FusionParams(n_tv=3)),
    ("`eps=0.1` (the published value)", fusex.FusionParams(eps=0.1)),
    ("`FusionParams.published()`", fusex.FusionParams.published()),
)


def save(fig: plt.Figure, name: str) -> None:
    """Save a compact PNG and close the figure."""
    path = OUT / name
    fig.savefig(path, dpi=DPI, pil_kwargs={"optimize": True})
    plt.close(fig)
    print(f"wrote {path.relative_to(OUT.parents[1])} ({path.stat().st_size / 1024:.0f} KiB)")


def write_table(name: str, header: list[str], rows: list[list[str]]) -> None:
    """Write a Markdown table fragment (included by the pages) and print it."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    text = "\n".join(lines) + "\n"
    (OUT / name).write_text(text)
    print(text)


def fuse(sample: fusex.datasets.Phantom, **changes: object) -> fusex.FusionResult:
    """Fuse the phantom with the default parameters, some of them changed."""
    params = fusex.FusionParams().replace(**changes)
    return fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=params)


def no_ticks(ax: plt.Axes) -> None:
    """Hide the axis ticks of an image panel."""
    ax.set_xticks([])
    ax.set_yticks([])


def tutorial(sample: fusex.datasets.Phantom) -> fusex.FusionResult:
    """Make the tutorial's figures (inputs, raw vs fused vs truth, convergence) and NRMSE tables."""
    # The inputs: HAADF and the three count maps.
    fig, axes = plt.subplots(1, 4, figsize=(8, 2.3))
    axes[0].imshow(sample.haadf, cmap="gray")
    axes[0].set_title("HAADF", fontsize=9)
    for ax, element, counts in zip(axes[1:], sample.elements, sample.maps):
        image = ax.imshow(counts, cmap=CMAP)
        ax.set_title(f"{element} counts (max {counts.max():.0f})", fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=7)
    for ax in axes:
        no_ticks(ax)
    fig.tight_layout()
    save(fig, "tutorial-inputs.png")

    result = fusex.fuse(sample.haadf, sample.maps, elements=sample.elements)

    fig = fusex.plot.compare_maps(result, sample.maps, truth=sample.truth)
    fig.set_size_inches(6, 6)
    fig.tight_layout()
    save(fig, "tutorial-compare.png")

    fig = fusex.plot.convergence(result)
    fig.set_size_inches(6, 3.4)
    fig.tight_layout()
    save(fig, "tutorial-convergence.png")

    raw, fused = nrmse(sample.maps, sample.truth), nrmse(result.maps, sample.truth)
    rows = [[e, f"{r:.3f}", f"{f:.3f}", f"{r / f:.2f}x"] for e, r, f in zip(result.elements, raw, fused)]
    write_table("tutorial-nrmse.md", ["element", "raw NRMSE", "fused NRMSE", "improvement"], rows)

    # The same phantom (same columns, same seed) at other doses, default parameters.
    rows = []
    for dose in DOSES:
        other = phantom(SHAPE, dose=dose, seed=SEED)
        fused = nrmse(fusex.fuse(other.haadf, other.maps, elements=other.elements).maps, other.truth)
        raw = nrmse(other.maps, other.truth)
        rows.append([f"{dose:g}", *(f"{r:.3f} → {f:.3f}" for r, f in zip(raw, fused))])
    write_table("tutorial-dose.md", ["dose (counts)", *(f"{e} raw → fused" for e in sample.elements)], rows)
    return result


def tv_figures(sample: fusex.datasets.Phantom, default: fusex.FusionResult) -> None:
    """Too little and too much TV, and NRMSE against lambda_tv and lambda_chem."""
    defaults = fusex.FusionParams()
    runs = {
        rf"$\lambda_{{TV}}$ = {TOO_LITTLE_TV:g}" + "\n(too little)": fuse(sample, lambda_tv=TOO_LITTLE_TV),
        rf"$\lambda_{{TV}}$ = {defaults.lambda_tv:g}" + "\n(default)": default,
        rf"$\lambda_{{TV}}$ = {TOO_MUCH_TV:g}" + "\n(too much)": fuse(sample, lambda_tv=TOO_MUCH_TV),
    }
    n = len(sample.elements)
    fig, axes = plt.subplots(n, len(runs) + 2, figsize=(7.5, 1.5 * n + 0.6), squeeze=False)
    for e, element in enumerate(sample.elements):
        panels = [("raw counts", sample.maps[e])]
        panels += [(title, np.asarray(res.maps[e])) for title, res in runs.items()]
        panels += [("truth", sample.truth[e])]
        for col, (title, image) in enumerate(panels):
            ax = axes[e, col]
            ax.imshow(image[CROP], cmap=CMAP, interpolation="nearest")
            no_ticks(ax)
            if e == 0:
                ax.set_title(title, fontsize=8)
            if col == 0:
                ax.set_ylabel(element, fontsize=9)
            if 0 < col < len(panels) - 1:
                err = nrmse(image, sample.truth[e])
                ax.text(0.03, 0.03, f"{err:.2f}", color="w", fontsize=7, transform=ax.transAxes)
    fig.tight_layout(pad=0.4)
    save(fig, "params-tv.png")

    tv_errors = np.array([nrmse(fuse(sample, lambda_tv=v).maps, sample.truth) for v in TV_SWEEP])
    chem_errors = np.array([nrmse(fuse(sample, lambda_chem=v).maps, sample.truth) for v in CHEM_SWEEP])
    raw = nrmse(sample.maps, sample.truth)
    fig, axes = plt.subplots(1, 2, figsize=(8, 2.9), sharey=True)
    for ax, values, errors, name, default_value in (
        (axes[0], TV_SWEEP, tv_errors, r"$\lambda_{TV}$ (lambda_tv)", defaults.lambda_tv),
        (axes[1], CHEM_SWEEP, chem_errors, r"$\lambda_C$ (lambda_chem)", defaults.lambda_chem),
    ):
        for e, element in enumerate(sample.elements):
            (line,) = ax.semilogx(values, errors[:, e], "o-", ms=3, label=element)
            ax.axhline(raw[e], color=line.get_color(), ls=":", lw=1)
        ax.axvline(default_value, color="0.6", lw=1)
        ax.set_xlabel(name)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("NRMSE vs truth")
    axes[0].legend(fontsize=8, title="fused (dotted: raw)", title_fontsize=7)
    fig.tight_layout()
    save(fig, "params-sweep.png")

    header = ["lambda_tv", *sample.elements]
    rows = [[f"{v:g}", *(f"{x:.3f}" for x in errs)] for v, errs in zip(TV_SWEEP, tv_errors)]
    write_table("params-tv-sweep.md", header, rows)


def variants_table(sample: fusex.datasets.Phantom) -> None:
    """NRMSE of a few single-parameter changes from the defaults, and of the published settings."""
    raw = nrmse(sample.maps, sample.truth)
    rows = [["raw counts (no fusion)", *(f"{x:.3f}" for x in raw)]]
    for label, params in VARIANTS:
        res = fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=params)
        rows.append([label, *(f"{x:.3f}" for x in nrmse(res.maps, sample.truth))])
    write_table("params-variants.md", ["parameters", *sample.elements], rows)


def step_figure(sample: fusex.datasets.Phantom, default: fusex.FusionResult) -> None:
    """Show a step too large: divergence without backtracking, rescue with it."""
    try:
        fuse(sample, step=BIG_STEP, backtracking=False)
    except fusex.FusionDivergedError as err:
        diverged = err.history
        print(f"step={BIG_STEP:g}, backtracking=False raised FusionDivergedError:\n  {err}\n")
    else:
        raise SystemExit(f"expected step={BIG_STEP} without backtracking to diverge; pick a larger BIG_STEP")
    rescued = fuse(sample, step=BIG_STEP).history
    fig, axes = plt.subplots(1, 2, figsize=(8, 2.9))
    ax = axes[0]
    ax.semilogy(default.history.index, default.history["total"], label="step=1 (default)")
    ax.semilogy(rescued.index, rescued["total"], label=f"step={BIG_STEP:g}, backtracking")
    ax.semilogy(diverged.index, diverged["total"], "o-", ms=3, label=f"step={BIG_STEP:g}, no backtracking")
    ax.plot(diverged.index[-1], diverged["total"].iloc[-1], "kx", ms=8, label="FusionDivergedError")
    ax.set_xlim(-1, 40)
    ax.set_xlabel("iteration (first 40)")
    ax.set_ylabel("objective (total)")
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(alpha=0.3)
    ax = axes[1]
    ax.step(default.history.index, default.history["step"], where="post", label="step=1 (default)")
    ax.step(rescued.index, rescued["step"], where="post", label=f"step={BIG_STEP:g}, backtracking")
    ax.set_yscale("log", base=2)
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("iteration")
    ax.set_ylabel("step size used (after backtracks)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save(fig, "params-step.png")


def main() -> int:
    """Make every figure and table."""
    start = time.perf_counter()
    OUT.mkdir(parents=True, exist_ok=True)
    sample = phantom(SHAPE, dose=DOSE, seed=SEED)
    default = tutorial(sample)
    tv_figures(sample, default)
    variants_table(sample)
    step_figure(sample, default)
    total = sum(p.stat().st_size for p in OUT.glob("*.png"))
    print(f"done in {time.perf_counter() - start:.1f} s; PNGs total {total / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
