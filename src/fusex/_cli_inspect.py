"""``fusex inspect FILE``, and the input-format help the ``fuse`` command shows."""

from __future__ import annotations

import argparse
import sys

from . import io
from .io.formats import INPUT_FORMATS

__all__ = ["add_inspect", "formats_help"]


def formats_help() -> str:
    """List every input suffix `fusex.io.read` opens, with what it holds (from `fusex.io.formats`)."""
    width = max(map(len, INPUT_FORMATS))
    return "inputs:\n" + "\n".join(f"  {suffix:<{width}}  {text}" for suffix, text in INPUT_FORMATS.items())


def _inspect(args: argparse.Namespace) -> int:
    try:
        report = io.inspect(args.input, haadf=args.haadf, elements=args.elements, lines=args.lines)
    except (OSError, KeyError, ValueError) as exc:  # exit code 3, as for a file fuse cannot read
        print(f"fusex: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 3
    print(report)
    return 0


def add_selection_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--haadf`` and ``--lines``, which pick among a microscope file's signals."""
    parser.add_argument(
        "--haadf",
        metavar="TITLE",
        help="the HAADF image's title in INPUT ('Ch 1 #1' for the first of repeated titles), or another file "
        "holding it (default: the image on the maps' grid titled HAADF, ADF, DF, BF or BSE, in this order)",
    )
    parser.add_argument(
        "--lines",
        nargs="+",
        metavar="LINE",
        help="X-ray lines to integrate from INPUT's spectrum image, e.g. Fe_Ka O_Ka (default: its metadata's)",
    )


def add_inspect(sub: argparse._SubParsersAction) -> None:
    """Add the ``inspect`` command to the ``fusex`` parser's subcommands."""
    inspect = sub.add_parser(
        "inspect",
        help="list a file's signals and what fuse would take from it",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Print every signal of INPUT (title, kind, shape, axes with pixel size and units, X-ray lines)\n"
        "and which HAADF image and maps 'fusex fuse' would use with the same --haadf, --elements and --lines.",
        epilog=formats_help(),
    )
    inspect.add_argument("input", help="input file")
    inspect.add_argument("--elements", nargs="+", help="as for fuse: maps to use, or elements to integrate")
    add_selection_options(inspect)
    inspect.set_defaults(run=_inspect)
