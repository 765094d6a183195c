"""Command line: ``fusex demo``, ``fusex fuse`` and ``fusex inspect``.

Every failure prints one line, ``fusex: error: ...``, on stderr and exits
with its code: 0 success; 1 an internal error (a bug: please report it;
``FUSEX_DEBUG=1`` or ``fusex --debug`` adds the traceback); 2 bad arguments
or parameters; 3 an input file that cannot be read or lacks the elements
asked for, or an output that cannot be written or may not be replaced; 4 the
solver diverged; 5 not enough memory; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import api, io
from ._cli_inspect import add_inspect, add_selection_options, formats_help
from ._cli_params import describe_params, parse_param
from .backends.registry import LIBRARIES, engine_choices
from .datasets import dysco3, nrmse, phantom
from .errors import OutputExistsError, UnreadableFileError
from .io.formats import INPUT_FORMATS
from .params import FusionParams
from .plot import compare_maps, convergence
from .result import FusionDivergedError

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    if args.data == "dysco3":
        return _demo_dysco3(args)
    if args.size < 16:
        raise ValueError(f"--size must be at least 16 pixels (two unit cells), got {args.size}")
    if not args.dose > 0:
        raise ValueError(f"--dose must be a positive number of counts, got {args.dose}")
    sample = phantom((args.size, args.size), dose=args.dose, seed=args.seed)
    result = api.fuse(
        sample.haadf, sample.maps, elements=sample.elements, backend=args.backend, engine=args.engine, progress=True
    )
    raw = nrmse(sample.maps, sample.truth)
    fused = nrmse(result.maps, sample.truth)
    print(f"fusex demo: perovskite phantom, {args.size}x{args.size} px, {args.dose:g} counts per column")
    print(result.summary())
    print("NRMSE against the truth (lower is better):")
    for element, before, after in zip(result.elements, raw, fused):
        print(f"  {element:>3}: raw {before:.3f} -> fused {after:.3f}  ({before / after:.1f}x better)")
    return _demo_figures(args.output, result, sample.maps, sample.truth)


def _demo_dysco3(args: argparse.Namespace) -> int:
    data = dysco3()
    result = api.fuse(
        data.haadf,
        data.maps,
        elements=data.elements,
        params=data.params,
        backend=args.backend,
        engine=args.engine,
        progress=True,
    )
    height, width = data.haadf.shape
    print(f"fusex demo: DyScO3 acquisition of the published tutorial, {height}x{width} px, with its parameters")
    print(result.summary())
    print(f"data: {data.citation}")
    return _demo_figures(args.output, result, data.maps, None)


def _demo_figures(output: str, result: Any, raw: np.ndarray, truth: np.ndarray | None) -> int:
    """Write the demo's maps and convergence figures next to each other (nothing without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print('no figure written: matplotlib is missing (pip install "fusex[plot]")', file=sys.stderr)
        return 0
    fig = compare_maps(result, raw, truth=truth)
    fig.tight_layout()
    fig.savefig(output, dpi=110)
    conv = convergence(result)
    conv.tight_layout()
    path = Path(output)
    conv_path = path.with_name(path.stem + "-convergence.png")
    conv.savefig(conv_path, dpi=110)
    plt.close("all")
    print(f"wrote {output} and {conv_path}")
    return 0


def _saturated_level(text: str) -> str | float | None:
    """Parse ``--saturated``: ``auto``, ``none`` or a detector level (a number)."""
    if text.lower() in ("auto", "none"):
        return None if text.lower() == "none" else "auto"
    try:
        return float(text)
    except ValueError:
        message = f"expected auto, none or a number (the detector's maximum), got {text!r}"
        raise argparse.ArgumentTypeError(message) from None


class _FileError(Exception):
    """An input file that cannot be read, or an output that cannot be written (exit code 3)."""


def _fuse_file(args: argparse.Namespace) -> int:
    overrides = dict(parse_param(p) for p in args.param)
    repeated = sorted({e for e in args.elements or () if args.elements.count(e) > 1})
    if repeated:
        raise ValueError(f"--elements names {repeated} more than once; name each map once")
    io.check_output(args.output, overwrite=args.overwrite)  # before the work it would waste
    if args.preset == "auto":
        if overrides:
            raise ValueError("--param cannot be combined with --preset auto, which chooses the parameters itself")
        params = "auto"
    else:
        base = FusionParams.published if args.preset == "published" else FusionParams
        params = base(**overrides)
    try:
        data = io.read(args.input, elements=args.elements, haadf=args.haadf, lines=args.lines)
    except UnreadableFileError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise _FileError(f"cannot read {args.input}: {exc}") from exc
    if "source" in data.attrs:  # which of a microscope file's signals were taken
        print(f"{args.input}: {data.attrs['source']}", file=sys.stderr)
    result = api.fuse(
        data,
        params=params,
        backend=args.backend,
        engine=args.engine,
        device=args.device,
        progress=not args.quiet,
        saturated=args.saturated,
        negative=args.negative,
    )
    try:
        output = io.save(result, args.output, overwrite=args.overwrite)
    except OutputExistsError:
        raise
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
        except ImportError:
            print('no figure written: matplotlib is missing (pip install "fusex[plot]")', file=sys.stderr)
            return 0
        fig = compare_maps(result)
        fig.savefig(args.figure, dpi=110)
        plt.close("all")
        print(f"wrote {args.figure}")
    return 0


def _add_compute_options(parser: argparse.ArgumentParser, default_library: str) -> None:
    """Add ``--backend`` and ``--engine``, with the choices of `fusex.backends.registry`.

    The values are checked by `fusex.fuse`, so that a wrong one fails with the
    command line's one-line error like any other bad argument.
    """
    libraries = ", ".join(lib.name for lib in LIBRARIES)
    parser.add_argument(
        "--backend", default=None, help=f"array library to compute with: {libraries} (default: {default_library})"
    )
    parser.add_argument(
        "--engine",
        default="auto",
        help=f"compute engine: {', '.join(engine_choices())} (default: %(default)s, the fastest installed for "
        "the arrays; see fusex.backends)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fusex", description="Fused multi-modal electron microscopy.")
    parser.add_argument(
        "--debug", action="store_true", help="print the traceback of a failure too (or set FUSEX_DEBUG=1)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="fuse the built-in example and write a figure",
        description="Fuse a simulated low-dose SrTiO3 acquisition (HAADF + Sr, Ti, O maps) with the default "
        "parameters, print how much closer to the truth the fused maps are, and write a figure; or, with "
        "--data dysco3, the published tutorial's DyScO3 acquisition with the tutorial's parameters.",
    )
    demo.add_argument(
        "--data",
        choices=("phantom", "dysco3"),
        default="phantom",
        help="phantom: a simulated SrTiO3 scan with ground truth; dysco3: the real DyScO3 scan shipped with fusex "
        "(--size, --dose and --seed apply to the phantom only; default: %(default)s)",
    )
    demo.add_argument("-o", "--output", default="fusex-demo.png", help="figure file (default: %(default)s)")
    demo.add_argument("--size", type=int, default=128, help="image size in pixels (default: %(default)s)")
    demo.add_argument("--dose", type=float, default=3.0, help="counts at a column centre (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    _add_compute_options(demo, "NumPy")
    demo.set_defaults(run=_demo)

    run = sub.add_parser(
        "fuse",
        help="fuse a file and save the result",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Fuse the HAADF image and elemental maps in INPUT and save the fused maps, the HAADF model,\n"
        "the raw data, the convergence history and every parameter to OUTPUT.",
        epilog=formats_help() + "\n"
        "outputs: .nc (netCDF) or .zarr, written atomically; an existing OUTPUT is replaced only with\n"
        "--overwrite, and only if it is an earlier fusex result.\n\n"
        "examples:\n"
        "  fusex fuse scan.npz -o fused.nc\n"
        "  fusex fuse scan.bcf -o fused.nc   # the spectrum image integrated at its metadata's X-ray lines\n"
        "  fusex fuse scan.bcf --haadf BSE --lines Fe_Ka O_Ka -o fused.nc\n"
        "  fusex inspect scan.emd   # every signal, and what fuse would take\n"
        "  fusex fuse scan.npz --elements Co S O --param lambda_tv=0.01 --param gamma=1.6 -o fused.zarr\n"
        "  fusex fuse scan.npz --param lambda_tv=Co:0.005,S:0.01,O:0.02 -o fused.nc   # one weight per element\n"
        "  fusex fuse scan.npz --preset published -o reference-settings.nc --figure fused.png\n"
        "  fusex fuse scan.npz --preset auto -o fused.nc   # parameters chosen from the counts (fusex.tune)\n\n"
        + describe_params()
        + "\n\nexit codes: 0 done, 1 internal error (please report it), 2 bad arguments or parameters,\n"
        "3 unreadable input (or elements not in it), or an output that cannot be written or replaced,\n"
        "4 the solver diverged, 5 not enough memory, 130 interrupted",
    )
    run.add_argument("input", help=f"input file ({', '.join(INPUT_FORMATS)})")
    run.add_argument("-o", "--output", required=True, help="result file (.nc or .zarr)")
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUTPUT if it is an earlier fusex result (anything else there is never replaced)",
    )
    run.add_argument(
        "--elements",
        nargs="+",
        help="maps to fuse, by their names in INPUT (default: all); for a spectrum image, the elements to "
        "integrate, each at its strongest X-ray line (default: the lines in its metadata)",
    )
    add_selection_options(run)
    _add_compute_options(run, "the data's")
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
    run.add_argument(
        "--saturated",
        type=_saturated_level,
        default="auto",
        metavar="auto|none|LEVEL",
        help="HAADF pixels to leave out of the HAADF term: auto, those of an integer image at its dtype's "
        "largest value (65535 for uint16); LEVEL, those at or above it (the detector's maximum); none, no pixel "
        "(default: %(default)s)",
    )
    run.add_argument(
        "--negative",
        choices=("raise", "clip"),
        default="raise",
        help="negative map values (from background subtraction): refuse them, or clip them at 0 with a warning "
        "(default: %(default)s)",
    )
    run.add_argument("--figure", help="also write a raw-vs-fused figure (PNG)")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    run.set_defaults(run=_fuse_file)
    add_inspect(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fusex`` command line; return its exit code (see the module docstring)."""
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except (Exception, KeyboardInterrupt) as exc:
        code, message = _failure(exc)
        if args.debug or os.environ.get("FUSEX_DEBUG", "") not in ("", "0"):
            traceback.print_exc()
        print(f"fusex: error: {' '.join(message.split())}", file=sys.stderr)
        return code


def _failure(exc: BaseException) -> tuple[int, str]:
    """Return the exit code of an exception, and its one-line message."""
    if isinstance(exc, KeyboardInterrupt):
        return 130, "interrupted"
    if isinstance(exc, (_FileError, OSError)):  # UnreadableFileError and OutputExistsError included
        return 3, str(exc)
    if isinstance(exc, FusionDivergedError):
        return 4, str(exc)
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":  # torch's is a RuntimeError
        return 5, f"not enough memory: {str(exc) or type(exc).__name__}"
    if isinstance(exc, (ValueError, TypeError, ImportError)):
        return 2, str(exc)
    return 1, (
        f"internal error, please report it with the command that caused it: {type(exc).__name__}: {exc} "
        "(FUSEX_DEBUG=1 shows the traceback)"
    )


if __name__ == "__main__":
    sys.exit(main())
