"""mkdocs hook: serve MathJax from the site itself, so that math renders without a network.

MathJax's files come from the ``django-static-mathjax`` package (MathJax 3,
Apache-2.0; a plain copy of MathJax's ``es5`` build that needs no Django),
installed with ``pip install "fusex[docs]"``.  The hook adds the combined
TeX component (every TeX extension built in, so nothing is fetched on
demand), the CHTML fonts and MathJax's licence to the site under
``javascripts/mathjax/``, where ``extra_javascript`` loads them.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

DESTINATION = "javascripts/mathjax"
"""Where the MathJax files go in the site (``extra_javascript`` in mkdocs.yml names the component there)."""

PARTS = ("es5/tex-chtml-full.js", "es5/output/chtml/fonts/woff-v2", "LICENSE")
"""What MathJax needs at run time for TeX input and CHTML output, relative to its distribution folder."""


def mathjax_root() -> Path:
    """Return MathJax's distribution folder inside the installed ``django-static-mathjax`` package."""
    spec = importlib.util.find_spec("mathjax")
    root = None if spec is None or spec.origin is None else Path(spec.origin).parent / "static" / "mathjax"
    if root is None or not (root / PARTS[0]).is_file():
        raise PluginError(
            'the docs serve MathJax themselves and need the django-static-mathjax package: pip install "fusex[docs]"'
        )
    return root


def on_files(files: Files, config: Any) -> Files:
    """Add MathJax's run-time files to the site."""
    root = mathjax_root()
    for part in PARTS:
        path = root / part
        for source in [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()):
            uri = f"{DESTINATION}/{source.relative_to(root / 'es5' if part.startswith('es5/') else root).as_posix()}"
            files.append(File.generated(config, uri, abs_src_path=str(source)))
    return files
