"""How close `fusex.tune` comes to the best parameters chosen with the ground truth.

For phantoms of two lattices at three doses and several seeds, it fuses the full data at every
``lambda_tv`` x ``lambda_chem`` point of `fusex.tune.DEFAULT_GRID` (default prior and HAADF term)
and finds the *oracle*, the grid point with the smallest mean NRMSE against the truth.  `tune`
searches more than that (priors, the HAADF term per element, simple blurs), so it can beat the
oracle; `scripts/accuracy.py` compares it with the raw maps and a data-chosen blur instead.
It compares, element by element, the NRMSE of tune's two estimates with the oracle's and with the
raw maps': the fusion of the full data with the chosen parameters
(``TuneResult.result``) and the average of the fold fits (``TuneResult.average``).  The summary
also counts the cases within 15 % of each element's own best on the grid, a stricter bound.

    python scripts/tune_accuracy.py                 # 2 lattices x 3 doses x 6 seeds, 96 x 96
    python scripts/tune_accuracy.py --size 128 --seeds 1 2
    python scripts/tune_accuracy.py --criterion deviance   # the held-out Poisson deviance instead
"""

from __future__ import annotations

import argparse

import numpy as np

import fusex
from fusex.datasets import nrmse, phantom
from fusex.params import PerElement
from fusex.tune import DEFAULT_GRID, tune


def _chosen(params: fusex.FusionParams) -> str:
    def show(value: object) -> str:
        if isinstance(value, PerElement):
            return "/".join(f"{v:g}" for v in value.values())
        return f"{value:g}"

    return f"{show(params.lambda_tv)}; {show(params.lambda_chem)}"


def main() -> None:
    """Print one table row per case and a summary."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--doses", type=float, nargs="+", default=[2.0, 5.0, 20.0])
    parser.add_argument("--lattices", nargs="+", default=["perovskite", "rocksalt"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--criterion", choices=["nrmse", "deviance"], default="nrmse")
    args = parser.parse_args()
    tvs, chems = (np.asarray(DEFAULT_GRID[k]) for k in ("lambda_tv", "lambda_chem"))
    grid = fusex.FusionParams(lambda_tv=tvs[:, None].tolist(), lambda_chem=chems.tolist())
    print(
        "| lattice | dose | seed | chosen (tv; chem) | fusion / oracle | fusion / raw "
        "| average / oracle | average / raw |"
    )
    print("|---|---|---|---|---|---|---|---|")
    counts = {key: 0 for key in ("fusion", "average")}
    below = dict(counts)
    strict = dict(counts)
    worst = {key: [] for key in counts}
    cases = 0
    fmt = lambda v: " ".join(f"{x:.2f}" for x in v)  # noqa: E731
    for lattice in args.lattices:
        for dose in args.doses:
            for seed in args.seeds:
                s = phantom((args.size, args.size), lattice=lattice, dose=dose, seed=seed)
                full = fusex.fuse(s.haadf, s.maps, elements=s.elements, params=grid, on_divergence="mark")
                fused = full.to_input_units()
                err = np.array([[nrmse(fused[i, j], s.truth) for j in range(chems.size)] for i in range(tvs.size)])
                i, j = np.unravel_index(np.nanargmin(err.mean(axis=-1)), err.shape[:2])
                best = np.nanmin(err.reshape(-1, err.shape[-1]), axis=0)
                raw = nrmse(s.maps, s.truth)
                tuned = tune(s.haadf, s.maps, elements=s.elements, folds=args.folds, criterion=args.criterion)
                estimates = {
                    "fusion": nrmse(tuned.result.to_input_units(), s.truth),
                    "average": nrmse(tuned.average, s.truth),
                }
                cases += 1
                cells = []
                for key, mine in estimates.items():
                    counts[key] += bool(np.all(mine <= 1.15 * err[i, j]))
                    strict[key] += bool(np.all(mine <= 1.15 * best))
                    below[key] += bool(np.all(mine < raw))
                    worst[key].append((mine / err[i, j]).max())
                    cells += [fmt(mine / err[i, j]), fmt(mine / raw)]
                print(f"| {lattice} | {dose:g} | {seed} | {_chosen(tuned.params)} | " + " | ".join(cells) + " |")
    print()
    for key in counts:
        print(
            f"{key}: {counts[key]}/{cases} cases with every element within 15 % of the oracle "
            f"({strict[key]}/{cases} of each element's own best on the grid); {below[key]}/{cases} with every "
            f"element below raw; worst ratio to the oracle {max(worst[key]):.2f}"
        )


if __name__ == "__main__":
    main()
