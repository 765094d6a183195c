"""The backend registry, engine selection and the report of what this machine can run."""

import ast
import builtins
import importlib
import re
import sys
from pathlib import Path

import array_api_compat
import array_api_compat.numpy as npx
import numpy as np
import pytest

import fusex
from fusex import FusionParams, cli, memory
from fusex.backends import available, registry, select_engine
from fusex.backends.generic import GENERIC
from fusex.datasets import phantom

ROOT = Path(__file__).resolve().parents[1]


def test_available_reports_every_backend():
    report = available()
    assert set(report) == {"numpy", "numba", "array_api_strict", "torch", "torch-cuda", "cupy"}
    assert report["numpy"] is True
    assert all(isinstance(v, bool) for v in report.values())


def test_auto_picks_numba_for_numpy_and_generic_otherwise():
    numba_installed = available()["numba"]
    assert select_engine(npx, "cpu").name == ("numba" if numba_installed else "generic")
    assert select_engine(npx, "cpu", "generic") is GENERIC
    strict = pytest.importorskip("array_api_strict")
    assert select_engine(strict, strict.Device("CPU_DEVICE")) is GENERIC


def test_each_solve_gets_its_own_engine():
    pytest.importorskip("numba")
    assert select_engine(npx, "cpu") is not select_engine(npx, "cpu")


def test_numba_and_numpy_backends_give_the_same_fusion():
    pytest.importorskip("numba")
    sample = phantom((40, 40), seed=3)
    params = FusionParams(n_iter=15, tol=0.0)
    fast = fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=params, engine="numba")
    plain = fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=params, backend="numpy")
    assert (fast.engine, plain.engine) == ("numba", "generic")
    # float32 sums in different orders; the Poisson term's curvature near zero, up to lambda_chem / eps**2,
    # amplifies them over the iterations
    np.testing.assert_allclose(fast.maps, plain.maps, atol=5e-5)
    np.testing.assert_allclose(fast.history.total, plain.history.total, rtol=1e-5)


def test_tv_denoise_uses_the_same_engines():
    pytest.importorskip("numba")
    f = np.random.default_rng(0).random((2, 20, 20)).astype(np.float32)
    with pytest.warns(DeprecationWarning, match="backend='numba' is deprecated"):
        compiled = fusex.tv_denoise(f, 0.1, 10, backend="numba")
    np.testing.assert_allclose(compiled, fusex.tv_denoise(f, 0.1, 10, backend="numpy"), atol=1e-6)


def test_missing_numba_names_the_extra(monkeypatch):
    real_import = builtins.__import__

    def no_numba(name, *args, **kwargs):
        if name == "numba" or name.endswith("numba_engine"):
            raise ImportError("no numba")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_numba)
    for module in [m for m in sys.modules if m == "numba" or m.endswith("numba_engine")]:
        monkeypatch.delitem(sys.modules, module)

    with pytest.raises(fusex.BackendUnavailableError, match=r'pip install "fusex\[numba\]"'):
        select_engine(npx, "cpu", "numba")


def _extras() -> dict[str, list[str]]:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


@pytest.mark.parametrize("lib", registry.LIBRARIES, ids=lambda lib: lib.name)
def test_every_library_record_is_complete(lib):
    assert lib.devices and set(lib.devices) <= {"cpu", "cuda"}
    assert set(lib.requirements) <= set(lib.devices)
    for kind, name in lib.requirements.items():
        assert (ROOT / "backends" / name).is_file(), f"{lib.name} on {kind}: backends/{name} is missing"
    if lib.extra is not None:
        assert lib.extra in _extras()
    assert registry.library(lib.name) is lib
    assert (lib.gpu_count is None) == ("cuda" not in lib.devices) == (lib.gpu_free_bytes is None)
    assert lib.auto_engine is None or registry.engine_record(lib.auto_engine).name == lib.auto_engine
    if lib.installed():
        namespace = array_api_compat.array_namespace(importlib.import_module(lib.module).asarray(0.0))
        assert lib.is_namespace(namespace) and registry.library_of(namespace) is lib


@pytest.mark.parametrize("record", registry.ENGINES, ids=lambda record: record.name)
def test_every_engine_record_is_complete(record):
    names = [lib.name for lib in registry.LIBRARIES]
    assert record.libraries is None or set(record.libraries) <= set(names)
    assert record.devices is None or set(record.devices) <= {"cpu", "cuda"}
    assert (record.needs is None) == (record.extra is None)
    if record.extra is not None:
        assert record.extra in _extras()
    if record.requirements is not None:
        assert (ROOT / "backends" / record.requirements).is_file()
    assert all(registry.engine_record(name) is record for name in (record.name, *record.reports))
    per_map, per_item = record.arrays_per_item
    assert per_map > 0 and per_item > 0
    assert memory.ARRAYS_PER_ITEM[record.name] == record.arrays_per_item
    assert memory.bytes_per_item(record.reports[0], 3, 10, 20, 4) == int((3 * per_map + per_item) * 10 * 20 * 4)


def test_every_requirements_file_belongs_to_a_record():
    listed = {name for lib in registry.LIBRARIES for name in lib.requirements.values()}
    listed |= {record.requirements for record in registry.ENGINES if record.requirements}
    assert {path.name for path in (ROOT / "backends").glob("*.txt")} == listed


def test_the_generic_engine_closes_the_auto_order():
    generic = registry.ENGINES[-1]
    assert (generic.name, generic.libraries, generic.devices, generic.needs) == ("generic", None, None, None)
    assert generic.factory(npx, "cpu") is GENERIC


def test_targets_label_each_library_on_each_device():
    labels = [target.label for target in registry.targets()]
    assert labels == ["numpy", "array_api_strict", "torch-cpu", "torch-cuda", "cupy"]
    assert all(registry.library(t.library).devices.count(t.device) == 1 for t in registry.targets())


class _Cuda:
    type = "cuda"


def test_auto_follows_the_registry_order(monkeypatch):
    torch = pytest.importorskip("torch")
    import array_api_compat.torch as tx

    assert registry.device_kind(tx, torch.device("cpu")) == "cpu"
    assert registry.device_kind(tx, _Cuda()) == "cuda"
    assert registry.select(tx, torch.device("cpu")).name == "generic"
    cupy_found = registry.ENGINES[1].installed()
    assert registry.select(tx, _Cuda()).name == ("cuda" if cupy_found else "generic")
    monkeypatch.setattr(registry.EngineRecord, "installed", lambda self: True)
    assert registry.select(tx, _Cuda()).name == "cuda"
    assert registry.select(npx, "cpu").name == "numba"


def test_an_engine_that_is_not_installed_names_the_extra(monkeypatch):
    monkeypatch.setattr(registry.EngineRecord, "installed", lambda self: self.needs is None)
    assert registry.select(npx, "cpu").name == "generic"  # auto skips it
    with pytest.raises(fusex.BackendUnavailableError, match=r"`engine='numba'` needs numba.*fusex\[numba\]"):
        select_engine(npx, "cpu", "numba")


@pytest.mark.parametrize(
    "engine, xp_name, device, message",
    [
        ("nosuch", "numpy", "cpu", r"unknown `engine` 'nosuch'; choose one of \['auto', "),
        ("cupy", "numpy", "cpu", r"unknown `engine` 'cupy'"),  # a name engine objects report is no engine= value
        ("numba", "torch", "cpu", r"`engine='numba'` runs on numpy arrays on the cpu, not on torch.*backend='numpy'"),
        ("cuda", "numpy", "cpu", r"`engine='cuda'` runs on cupy or torch arrays on the cuda.*device='cuda'"),
    ],
)
def test_an_engine_that_cannot_run_is_refused_with_the_fix(engine, xp_name, device, message):
    xp = npx if xp_name == "numpy" else pytest.importorskip("array_api_compat.torch")
    with pytest.raises(ValueError, match=message):
        select_engine(xp, device, engine)


def test_resolve_request_separates_library_and_engine():
    assert registry.resolve_request(None) == (None, "auto")
    assert registry.resolve_request("torch", "generic") == ("torch", "generic")
    assert registry.resolve_request("cupy") == ("cupy", "auto")
    # naming NumPy has always meant NumPy's own, generic code
    assert registry.resolve_request("numpy") == ("numpy", "generic")
    assert registry.resolve_request("numpy", "numba") == ("numpy", "numba")
    with pytest.warns(DeprecationWarning, match=r"backend='numba' is deprecated: pass engine='numba'"):
        assert registry.resolve_request("numba") == ("numpy", "numba")
    with pytest.raises(ValueError, match=r"contradicts engine='generic': pass backend='numpy', engine='generic'"):
        registry.resolve_request("numba", "generic")
    with pytest.raises(ValueError, match=r"unknown `backend` 'jax'; choose one of \['numpy', "):
        registry.resolve_request("jax")
    with pytest.raises(ValueError, match=r"unknown `engine` 'fast'"):
        registry.resolve_request(None, "fast")
    with pytest.raises(ValueError, match=r"unknown `backend` 3; choose one of"):
        registry.resolve_request(3)


def test_backend_numba_still_fuses_and_warns_at_the_callers_line():
    pytest.importorskip("numba")
    sample = phantom((16, 16), seed=1)
    with pytest.warns(DeprecationWarning, match="use engine|pass engine='numba'") as caught:
        res = fusex.fuse(
            sample.haadf, sample.maps, elements=sample.elements, params=FusionParams(n_iter=2), backend="numba"
        )
    assert res.engine == "numba"
    assert [Path(w.filename).name for w in caught if w.category is DeprecationWarning] == [Path(__file__).name]


def test_the_former_select_engine_call_still_works_and_warns():
    with pytest.warns(DeprecationWarning, match=r"select_engine\(backend, xp, device\) is deprecated"):
        assert select_engine("numpy", npx) is GENERIC
    with pytest.warns(DeprecationWarning):
        assert select_engine(None, npx, "cpu").name == registry.select(npx, "cpu").name


def test_fuse_takes_an_engine():
    pytest.importorskip("numba")
    sample = phantom((16, 16), seed=2)
    params = FusionParams(n_iter=2)
    assert (
        fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=params, engine="generic").engine
        == "generic"
    )
    with pytest.raises(ValueError, match="`engine='cuda'` runs on cupy or torch"):
        fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=params, engine="cuda")


def test_the_command_line_offers_the_registry_choices(capsys):
    with pytest.raises(SystemExit):
        cli.main(["fuse", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    libraries = ", ".join(lib.name for lib in registry.LIBRARIES)
    assert f"array library to compute with: {libraries}" in text
    assert f"compute engine: {', '.join(registry.engine_choices())}" in text


# Names that identify a backend; "generic" and the device kinds are also plain words of prose.
_NAMES = (
    {lib.name for lib in registry.LIBRARIES} | {t.label for t in registry.targets()} | set(registry.DEPRECATED_BACKENDS)
)
_NAMES |= {name for record in registry.ENGINES for name in (record.name, *record.reports)}
_WORDS = _NAMES - {"generic"} - {kind for lib in registry.LIBRARIES for kind in lib.devices}


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        for index, statement in enumerate(body):
            is_text = isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)
            after_assignment = index > 0 and isinstance(body[index - 1], (ast.Assign, ast.AnnAssign))
            if is_text and (index == 0 or after_assignment):
                found.add(id(statement.value))
    return found


def backend_lists(source: str) -> list[str]:
    """Places in Python source that list backend names or compare them by prefix (docstrings aside)."""
    tree = ast.parse(source)
    docs = _docstrings(tree)
    places = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.List, ast.Tuple, ast.Set, ast.Dict)):
            items = node.keys if isinstance(node, ast.Dict) else node.elts
            names = {i.value for i in items if isinstance(i, ast.Constant) and i.value in _NAMES}
            if len(names) >= 2:
                places.append(f"line {node.lineno}: a literal of {sorted(names)}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            names = {w for w in _WORDS if re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", node.value)}
            if len(names) >= 2:
                places.append(f"line {node.lineno}: a text naming {sorted(names)}")
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("startswith", "endswith"):
            args = [e for a in node.args for e in (a.elts if isinstance(a, ast.Tuple) else [a])]
            if any(isinstance(a, ast.Constant) and a.value in _WORDS for a in args):
                places.append(f"line {node.lineno}: a {node.func.attr} on a backend name")
    return places


def test_the_scan_finds_lists_of_backends():
    assert backend_lists('BACKENDS = ("numpy", "torch")') == ["line 1: a literal of ['numpy', 'torch']"]
    assert backend_lists('HELP = "numpy, numba or cupy"')[0].startswith("line 1: a text naming")
    assert backend_lists('if engine.startswith("cupy"): pass') == ["line 1: a startswith on a backend name"]
    assert backend_lists('def f():\n    """Runs on numpy, torch or cupy."""\n    return "numpy"') == []


def test_only_the_registry_lists_backends():
    sources = [p for p in (ROOT / "src" / "fusex").rglob("*.py") if p.name != "registry.py"]
    sources.append(ROOT / "tests" / "conftest.py")
    found = {str(p.relative_to(ROOT)): backend_lists(p.read_text()) for p in sources}
    assert {path: places for path, places in found.items() if places} == {}
