"""Command line: ``fusex demo``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

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
    demo.add_argument("--backend", default=None, help="numpy, torch, cupy (default: numpy)")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fusex`` command line."""
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, ImportError) as exc:
        print(f"fusex: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
