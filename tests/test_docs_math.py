"""The documentation site serves MathJax itself, so that its math renders offline."""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _extra_javascript() -> list[str]:
    text = (ROOT / "mkdocs.yml").read_text()
    block = re.search(r"^extra_javascript:\n((?:  - .*\n)+)", text, re.MULTILINE)
    assert block is not None, "mkdocs.yml has no extra_javascript list"
    return [line.strip()[2:].strip() for line in block.group(1).splitlines()]


def _hook():
    spec = importlib.util.spec_from_file_location("mathjax_offline", ROOT / "docs" / "scripts" / "mathjax_offline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_script_of_the_site_comes_from_another_host():
    scripts = _extra_javascript()
    assert scripts and not [s for s in scripts if "://" in s or s.startswith("//")]
    assert "docs/scripts/mathjax_offline.py" in (ROOT / "mkdocs.yml").read_text()  # the hook that adds MathJax


def test_the_hook_adds_the_mathjax_component_the_site_loads_and_its_fonts():
    pytest.importorskip("mkdocs")
    if importlib.util.find_spec("mathjax") is None:
        pytest.skip('django-static-mathjax is not installed (pip install "fusex[docs]")')
    from mkdocs.config.defaults import MkDocsConfig
    from mkdocs.structure.files import Files

    hook = _hook()
    config = MkDocsConfig()
    config.load_dict({"site_name": "t", "docs_dir": str(ROOT / "docs"), "site_dir": str(ROOT / "site")})
    config.validate()
    config.plugins._current_plugin = "hooks"  # mkdocs names the running plugin while it calls a hook
    added = {f.src_uri for f in hook.on_files(Files([]), config)}
    component = next(s for s in _extra_javascript() if s.startswith(f"{hook.DESTINATION}/"))
    assert component in added
    fonts = {u for u in added if u.startswith(f"{hook.DESTINATION}/output/chtml/fonts/woff-v2/")}
    assert f"{hook.DESTINATION}/output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff" in fonts and len(fonts) > 10
    assert f"{hook.DESTINATION}/LICENSE" in added  # MathJax's Apache-2.0 licence travels with it
