"""How close `fusex.tune` comes to the best parameters chosen with the ground truth.

For phantoms of two lattices at three doses and several seeds, it fuses the full data at every
point of `fusex.tune.DEFAULT_GRID`, finds the *oracle*, the grid point with the smallest mean
NRMSE against the truth, and compares, element by element, the NRMSE of the tuned fusion with
the oracle's and with the raw maps'.

    python scripts/tune_accuracy.py                 # 2 lattices x 3 doses x 3 seeds, 96 x 96
    python scripts/tune_accuracy.py --size 128 --seeds 1 2
"""

from __future__ import annotations

import argparse

import numpy as np

import fusex
from fusex.datasets import nrmse, phantom
from fusex.tune import DEFAULT_GRID, tune


def main() -> None:
    """Print one table row per case and a summary."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--doses", type=float, nargs="+", default=[2.0, 5.0, 20.0])
    parser.add_argument("--lattices", nargs="+", default=["perovskite", "rocksalt"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--folds", type=int, default=4)
    args = parser.parse_args()
    tvs, chems = (np.asarray(DEFAULT_GRID[k]) for k in ("lambda_tv", "lambda_chem"))
    grid = fusex.FusionParams(lambda_tv=tvs[:, None].tolist(), lambda_chem=chems.tolist())
    print("| lattice | dose | seed | tuned (tv, chem) | oracle (tv, chem) | tuned / oracle NRMSE | tuned / raw NRMSE |")
    print("|---|---|---|---|---|---|---|")
    within = below = cases = 0
    worst = []
    for lattice in args.lattices:
        for dose in args.doses:
            for seed in args.seeds:
                s = phantom((args.size, args.size), lattice=lattice, dose=dose, seed=seed)
                full = fusex.fuse(s.haadf, s.maps, elements=s.elements, params=grid, on_divergence="mark")
                fused = full.to_input_units()
                err = np.array([[nrmse(fused[i, j], s.truth) for j in range(chems.size)] for i in range(tvs.size)])
                i, j = np.unravel_index(np.nanargmin(err.mean(axis=-1)), err.shape[:2])
                tuned = tune(s.haadf, s.maps, elements=s.elements, folds=args.folds)
                mine = nrmse(tuned.result.to_input_units(), s.truth)
                to_oracle, to_raw = mine / err[i, j], mine / nrmse(s.maps, s.truth)
                cases += 1
                within += bool(np.all(to_oracle <= 1.15))
                below += bool(np.all(to_raw < 1.0))
                worst.append(to_oracle.max())
                fmt = lambda v: " ".join(f"{x:.2f}" for x in v)  # noqa: E731
                print(
                    f"| {lattice} | {dose:g} | {seed} | {tuned.params.lambda_tv:g}, {tuned.params.lambda_chem:g} "
                    f"| {tvs[i]:g}, {chems[j]:g} | {fmt(to_oracle)} | {fmt(to_raw)} |"
                )
    print(
        f"\n{within}/{cases} cases with every element within 15 % of the oracle; "
        f"{below}/{cases} with every element below raw; worst ratio to the oracle {max(worst):.2f}"
    )


if __name__ == "__main__":
    main()
