"""How close `fusex.tune` comes to the best of its own candidates chosen with the ground truth.

For phantoms of two lattices at three doses and several seeds, it fuses the full data at every
point of `fusex.tune.DEFAULT_GRID` (every prior, ``lambda_tv``, ``lambda_chem`` and the HAADF
term on or off) and blurs the counts with Gaussians of several widths, and takes per element the
*oracle*: the smallest raw-scale NRMSE against the truth (the expected counts) over all of them.
`tune` picks among the same kinds of candidates without the truth (and may combine elements'
picks, so it can beat the oracle).  The table gives, per element, the NRMSE of ``tune``'s fusion
of the full data (``TuneResult.result``) and of its fold average (``TuneResult.average``) over
the oracle's and over the raw maps'.

    python scripts/tune_accuracy.py                 # 2 lattices x 3 doses x 6 seeds, 96 x 96
    python scripts/tune_accuracy.py --size 128 --seeds 1 2
    python scripts/tune_accuracy.py --criterion deviance   # another held-out score
    python scripts/tune_accuracy.py --size 192 --screen-window none   # screen the whole image
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

import fusex
from fusex.baselines import gaussian
from fusex.datasets import phantom, raw_nrmse
from fusex.tune import DEFAULT_GRID, DEFAULT_SCREEN_WINDOW, tune

SIGMAS = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0)
"""Widths (pixels) of the Gaussian blurs the oracle may pick."""


def oracle(sample: fusex.datasets.Phantom, truth: np.ndarray) -> np.ndarray:
    """Per element, the best raw-scale NRMSE over the default grid's fusions and the Gaussian blurs."""
    own = 1.0 / len(sample.elements)
    batch = {
        "lambda_tv": np.asarray(DEFAULT_GRID["lambda_tv"], dtype=float)[:, None, None].tolist(),
        "lambda_chem": np.asarray(DEFAULT_GRID["lambda_chem"], dtype=float)[:, None].tolist(),
        "lambda_haadf": [own if v is None else v for v in DEFAULT_GRID["lambda_haadf"]],
    }
    errors = []
    for prior in DEFAULT_GRID["prior"]:
        params = fusex.FusionParams(prior=prior, **batch)
        every = fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=params, on_divergence="mark")
        fused = np.asarray(every.to_input_units(), dtype=np.float64)
        errors.append(raw_nrmse(fused.reshape(-1, *fused.shape[-3:]), truth))
    for sigma in SIGMAS:
        errors.append(raw_nrmse(np.stack([gaussian(m, sigma) for m in sample.maps]), truth)[None])
    return np.nanmin(np.concatenate(errors), axis=0)


def main() -> None:
    """Print one table row per case and a summary."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--doses", type=float, nargs="+", default=[2.0, 5.0, 20.0])
    parser.add_argument("--lattices", nargs="+", default=["perovskite", "rocksalt"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--criterion", choices=["mse", "nrmse", "deviance"], default=None)
    parser.add_argument(
        "--screen-window",
        type=lambda text: None if text == "none" else int(text),
        default=DEFAULT_SCREEN_WINDOW,
        help="tune's screen_window: side of the central window screened ('none': the whole image)",
    )
    args = parser.parse_args()
    print(
        "| lattice | dose | seed | methods | fusion / oracle | fusion / raw | average / oracle | average / raw "
        "| tune (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    within = {key: 0 for key in ("fusion", "average")}
    below = dict(within)
    worst: dict[str, list[float]] = {key: [] for key in within}
    cases, seconds = 0, 0.0
    fmt = lambda v: " ".join(f"{x:.2f}" for x in v)  # noqa: E731
    for lattice in args.lattices:
        for dose in args.doses:
            for seed in args.seeds:
                sample = phantom((args.size, args.size), lattice=lattice, dose=dose, seed=seed)
                truth = dose * sample.truth + 0.05  # the expected counts: dose * truth + the phantom's background
                best = oracle(sample, truth)
                raw = raw_nrmse(sample.maps.astype(np.float64), truth)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # edge warnings: the widening is part of what is measured
                    start = time.perf_counter()
                    tuned = tune(
                        sample.haadf,
                        sample.maps,
                        elements=sample.elements,
                        folds=args.folds,
                        criterion=args.criterion,
                        screen_window=args.screen_window,
                    )
                    took = time.perf_counter() - start
                seconds += took
                estimates = {
                    "fusion": raw_nrmse(np.asarray(tuned.result.to_input_units(), dtype=np.float64), truth),
                    "average": raw_nrmse(np.asarray(tuned.average, dtype=np.float64), truth),
                }
                cases += 1
                cells = []
                for key, mine in estimates.items():
                    within[key] += bool(np.all(mine <= 1.15 * best))
                    below[key] += bool(np.all(mine < raw))
                    worst[key].append(float((mine / best).max()))
                    cells += [fmt(mine / best), fmt(mine / raw)]
                methods = "/".join(str(m) for m in tuned.choice.method.values)
                row = f"| {lattice} | {dose:g} | {seed} | {methods} | " + " | ".join(cells) + f" | {took:.1f} |"
                print(row, flush=True)
    print(f"\ntune took {seconds:.1f} s over the {cases} cases")
    for key in within:
        print(
            f"{key}: {within[key]}/{cases} cases with every element within 15 % of the oracle; "
            f"{below[key]}/{cases} with every element below raw; worst ratio to the oracle {max(worst[key]):.2f}"
        )


if __name__ == "__main__":
    main()
