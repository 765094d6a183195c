r"""Griffe extension for the docs build: render the reST math in fusex's docstrings.

fusex writes its docstrings in numpydoc style with reST math (``:math:`...``` roles and
``.. math::`` blocks), while mkdocstrings renders docstrings as Markdown.  This extension
rewrites the math, once the object tree is built, into the ``$...$`` / ``$$...$$`` syntax
that ``pymdownx.arithmatex`` hands to MathJax:

* ``:math:`x`` becomes ``$x$``;
* a ``.. math::`` directive with its indented body becomes a ``$$ ... $$`` block, wrapped in
  ``\begin{aligned}`` when the body uses ``&`` or ``\\`` (multi-line equations).

It changes nothing in the source files.  Loaded from ``mkdocs.yml``
(``plugins: mkdocstrings: handlers: python: options: extensions``).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":math:`([^`]+)`")
# "\\Psi" in a raw docstring (an escaped backslash where none was needed) is a LaTeX line break
# followed by the letters "Psi"; inside math, a double backslash directly before a letter is
# always meant as a single one.
_DOUBLED = re.compile(r"\\\\(?=[A-Za-z])")


def _fix_tex(tex: str) -> str:
    return _DOUBLED.sub(r"\\", tex)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _blocks(text: str) -> str:
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip() != ".. math::":
            out.append(line)
            i += 1
            continue
        base = _indent(line)
        body: list[str] = []
        i += 1
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > base):
            body.append(lines[i])
            i += 1
        while body and not body[-1].strip():
            body.pop()
        tex = "\n".join(b.strip() for b in body if b.strip())
        tex = _fix_tex(tex)
        if "&" in tex or "\\\\" in tex:
            tex = "\\begin{aligned}\n" + tex + "\n\\end{aligned}"
        pad = " " * base
        out.extend([pad + "$$", *(pad + t for t in tex.split("\n")), pad + "$$", ""])
    return "\n".join(out)


def convert(text: str) -> str:
    """Return ``text`` with reST math turned into arithmatex math."""
    text = _blocks(text)
    return _ROLE.sub(lambda m: "$" + _fix_tex(m.group(1)) + "$", text)


class RstMath(griffe.Extension):
    """Rewrite reST math in every docstring of the loaded package."""

    def on_object(self, *, obj: Any, **kwargs: Any) -> None:  # noqa: D102
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value)
