"""The page "From the microscope to fused maps" stays in step with the command line it shows."""

import re
import shlex
from pathlib import Path

from fusex.cli import _parser

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGE = DOCS / "microscope.md"


def _fragments() -> list[Path]:
    return [DOCS / name for name in re.findall(r'--8<-- "([^"]+)"', PAGE.read_text())]


def test_the_page_is_in_the_nav_and_its_fragments_exist():
    assert "microscope.md" in (DOCS.parent / "mkdocs.yml").read_text()
    fragments = _fragments()
    assert len(fragments) >= 6
    missing = [str(p) for p in fragments if not p.is_file()]
    assert not missing, f"run docs/scripts/make_microscope_figures.py: {missing}"


def test_every_command_shown_parses_with_todays_options():
    commands = [
        line[2:] for path in _fragments() for line in path.read_text().splitlines() if line.startswith("$ fusex ")
    ]
    commands += re.findall(r"^(fusex (?:fuse|inspect) .*?)(?:\s+#.*)?$", PAGE.read_text(), re.MULTILINE)
    assert len(commands) >= 7
    parser = _parser()
    for command in commands:
        args = parser.parse_args(shlex.split(command)[1:])  # SystemExit (a test failure) on an unknown option
        assert args.input.endswith((".hspy", ".bcf", ".emd"))
