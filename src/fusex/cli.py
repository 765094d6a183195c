"""Command line: ``fusex demo`` and ``fusex fuse``.

Exit codes: 0 success; 2 bad arguments or parameters; 3 an input file that
cannot be read or lacks the elements asked for, or an output that cannot be
written; 4 the solver diverged.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from . import fuse
    from .datasets import nrmse, phantom

    if args.size < 16:
        raise ValueError(f"--size must be at least 16 pixels (two unit cells), got {args.size}")
    if not args.dose > 0:
        raise ValueError(f"--dose must be a positive number of counts, got {args.dose}")
    sample = phantom((args.size, args.size), dose=args.dose, seed=args.seed)
    result = fuse(sample.haadf, sample.maps, elements=sample.elements, backend=args.backend, progress=True)
    raw = nrmse(sample.maps, sample.truth)
    fused = nrmse(result.maps, sample.truth)
    print(f"fusex demo: perovskite phantom, {args.size}x{args.size} px, {args.dose:g} counts per column")
    print(result.summary())
    print("NRMSE against the truth (lower is better):")
    for element, before, after in zip(result.elements, raw, fused):
        print(f"  {element:>3}: raw {before:.3f} -> fused {after:.3f}  ({before / after:.1f}x better)")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from .plot import compare_maps, convergence
    except ImportError:
        print('no figure written: matplotlib is missing (pip install "fusex[plot]")', file=sys.stderr)
        return 0
    fig = compare_maps(result, sample.maps, truth=sample.truth)
    fig.tight_layout()
    fig.savefig(args.output, dpi=110)
    conv = convergence(result)
    conv.tight_layout()
    output = Path(args.output)
    conv_path = output.with_name(output.stem + "-convergence.png")
    conv.savefig(conv_path, dpi=110)
    plt.close("all")
    print(f"wrote {args.output} and {conv_path}")
    return 0


def _parse_param(text: str) -> tuple[str, object]:
    import dataclasses

    from .params import FusionParams

    if "=" not in text:
        raise ValueError(f"--param needs NAME=VALUE, got {text!r}")
    name, raw = (part.strip() for part in text.split("=", 1))
    fields = {f.name for f in dataclasses.fields(FusionParams)}
    if name not in fields:
        raise ValueError(f"--param {name}: unknown parameter; choose from {', '.join(sorted(fields))}")
    if raw.lower() in ("true", "false"):
        return name, raw.lower() == "true"
    if raw.lower() == "none":
        return name, None
    for convert in (int, float):
        try:
            return name, convert(raw)
        except ValueError:
            pass
    if ":" in raw:  # per element: lambda_tv=Sr:0.01,O:0.02
        try:
            return name, {k.strip(): float(v) for k, v in (pair.split(":") for pair in raw.split(","))}
        except ValueError:
            raise ValueError(f"--param {name}: per-element values read ELEMENT:VALUE,..., got {raw!r}") from None
    if "," in raw:
        return name, tuple(float(v) for v in raw.split(","))
    return name, raw


class _FileError(Exception):
    """An input file that cannot be read, or an output that cannot be written (exit code 3)."""


def _fuse_file(args: argparse.Namespace) -> int:
    from . import io
    from .api import fuse
    from .params import FusionParams

    overrides = dict(_parse_param(p) for p in args.param)
    if args.preset == "auto":
        if overrides:
            raise ValueError("--param cannot be combined with --preset auto, which chooses the parameters itself")
        params = "auto"
    else:
        base = FusionParams.published if args.preset == "published" else FusionParams
        params = base(**overrides)
    try:
        data = io.read(args.input, elements=args.elements)
    except (OSError, KeyError, ValueError) as exc:
        raise _FileError(f"cannot read {args.input}: {exc}") from exc
    result = fuse(data, params=params, backend=args.backend, device=args.device, progress=not args.quiet)
    try:
        output = io.save(result, args.output)
    except OSError as exc:
        raise _FileError(f"cannot write {args.output}: {exc}") from exc
    y, x = result.haadf.dims[-2:]
    names = ", ".join(map(str, result.element.values))
    size = f"{result.sizes['element']} maps ({names}) of {result.sizes[y]}x{result.sizes[x]} px"
    if "iterations_run" in result.attrs:
        print(
            f"fused {size} in {result.attrs['iterations_run']} iterations ({result.attrs['stop_reason']}) -> {output}"
        )
    else:
        runs, reasons = result["iterations_run"].values, result["stop_reason"].values.ravel()
        stops = ", ".join(f"{n} {r}" for r, n in zip(*np.unique(reasons, return_counts=True)))
        batch = dict(zip(result.haadf.dims[:-2], result.haadf.shape[:-2]))
        print(f"fused a batch {batch} of {size} in {runs.min()}-{runs.max()} iterations ({stops}) -> {output}")
        if args.figure:
            print("no figure written: the result is a batch (plot one item with fusex.plot)", file=sys.stderr)
            return 0
    if args.figure:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            from .plot import compare_maps
        except ImportError:
            print('no figure written: matplotlib is missing (pip install "fusex[plot]")', file=sys.stderr)
            return 0
        fig = compare_maps(result)
        fig.savefig(args.figure, dpi=110)
        plt.close("all")
        print(f"wrote {args.figure}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fusex", description="Fused multi-modal electron microscopy.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="fuse the built-in example and write a figure",
        description="Fuse a simulated low-dose SrTiO3 acquisition (HAADF + Sr, Ti, O maps) with the default "
        "parameters, print how much closer to the truth the fused maps are, and write a figure.",
    )
    demo.add_argument("-o", "--output", default="fusex-demo.png", help="figure file (default: %(default)s)")
    demo.add_argument("--size", type=int, default=128, help="image size in pixels (default: %(default)s)")
    demo.add_argument("--dose", type=float, default=3.0, help="counts at a column centre (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    demo.add_argument(
        "--backend", default=None, help="numpy, numba, torch, cupy (default: numba if installed, else numpy)"
    )
    demo.set_defaults(run=_demo)

    run = sub.add_parser(
        "fuse",
        help="fuse a file and save the result",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fuse the HAADF image and elemental maps in INPUT and save the fused maps, the HAADF model,\n"
        "the raw data, the convergence history and every parameter to OUTPUT.",
        epilog="inputs: .npz (one array per element plus HAADF, as in the published tutorials), or a .nc/.zarr\n"
        "Dataset with 'haadf' and 'maps' (element, y, x) variables.\n"
        "outputs: .nc (netCDF) or .zarr; written atomically.\n\n"
        "examples:\n"
        "  fusex fuse scan.npz -o fused.nc\n"
        "  fusex fuse scan.npz --elements Co S O --param lambda_tv=0.01 --param gamma=1.6 -o fused.zarr\n"
        "  fusex fuse scan.npz --param lambda_tv=Co:0.005,S:0.01,O:0.02 -o fused.nc   # one weight per element\n"
        "  fusex fuse scan.npz --preset published -o reference-settings.nc --figure fused.png\n"
        "  fusex fuse scan.npz --preset auto -o fused.nc   # parameters chosen from the counts (fusex.tune)\n\n"
        "exit codes: 0 done, 2 bad arguments or parameters, 3 unreadable input (or elements not in it)\n"
        "or unwritable output, 4 the solver diverged",
    )
    run.add_argument("input", help="input file (.npz, .nc, .zarr)")
    run.add_argument("-o", "--output", required=True, help="result file (.nc or .zarr)")
    run.add_argument("--elements", nargs="+", help="maps to fuse, by their names in INPUT (default: all)")
    run.add_argument("--backend", default=None, help="numpy, numba, torch, cupy (default: from the data)")
    run.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: the data's)")
    run.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a FusionParams field, e.g. lambda_tv=0.01; repeat for several",
    )
    run.add_argument(
        "--preset",
        choices=("fusex", "published", "auto"),
        default="fusex",
        help="start from fusex's defaults or the published method's, or choose the parameters from the data "
        "by count splitting (auto; the maps must be raw counts) (default: %(default)s)",
    )
    run.add_argument("--figure", help="also write a raw-vs-fused figure (PNG)")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    run.set_defaults(run=_fuse_file)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fusex`` command line."""
    from .result import FusionDivergedError

    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except _FileError as exc:
        print(f"fusex: error: {exc}", file=sys.stderr)
        return 3
    except FusionDivergedError as exc:
        print(f"fusex: error: {exc}", file=sys.stderr)
        return 4
    except (ValueError, TypeError, ImportError, FileNotFoundError) as exc:
        print(f"fusex: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 3 if isinstance(exc, FileNotFoundError) else 2


if __name__ == "__main__":
    sys.exit(main())
