"""``.zspy`` files go through RosettaSciIO's zspy reader, like ``.hspy`` ones through its hspy reader.

RosettaSciIO 0.15 writes ``.zspy`` with zarr 2's API only, and fusex needs zarr 3, so these
tests write ``.hspy`` files and hand them to ``fusex.io.read`` under the ``.zspy`` name, with
the zspy plugin replaced by the hspy one: what they check is the routing, and that a
one-signal file plus a HAADF file make a fusable Dataset.
"""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest

import fusex
import fusex.io
from fusex.io import signals

hs = pytest.importorskip("hyperspy.api")
pytest.importorskip("exspy")
rsciio_hspy = pytest.importorskip("rsciio.hspy")


def _write(folder: Path) -> tuple[Path, Path]:
    """A small EDS spectrum image with Fe_Ka and O_Ka in its metadata, and its HAADF image, as .hspy."""
    rng = np.random.default_rng(0)
    energy = np.arange(1024) * 0.01
    spectrum = np.exp(-0.5 * ((energy - 6.40) / 0.055) ** 2) + np.exp(-0.5 * ((energy - 0.525) / 0.03) ** 2)
    eds = hs.signals.Signal1D(rng.poisson(3 * spectrum + 0.05, size=(12, 10, 1024)).astype(np.uint16))
    eds.set_signal_type("EDS_TEM")
    eds.axes_manager.signal_axes[0].scale = 0.01
    eds.axes_manager.signal_axes[0].units = "keV"
    eds.metadata.set_item("Sample.xray_lines", ["Fe_Ka", "O_Ka"])
    eds.metadata.General.title = "EDS"
    haadf = hs.signals.Signal2D(rng.integers(100, 200, size=(12, 10)).astype(np.uint16))
    haadf.metadata.General.title = "HAADF"
    eds_path, haadf_path = folder / "eds.hspy", folder / "haadf.hspy"
    eds.save(eds_path)
    haadf.save(haadf_path)
    return eds_path, haadf_path


def test_zspy_files_are_read_through_the_zspy_plugin(tmp_path, monkeypatch):
    eds_path, haadf_path = _write(tmp_path)
    asked = []
    original = signals._optional

    def plugin(module: str, package: str):
        asked.append((module, package))
        if module != "rsciio.zspy":
            return original(module, package)
        return types.SimpleNamespace(file_reader=lambda path: rsciio_hspy.file_reader(path[: -len(".zspy")] + ".hspy"))

    monkeypatch.setattr(signals, "_optional", plugin)
    for name in ("eds.zspy", "haadf.zspy"):  # a .zspy is a zarr folder
        (tmp_path / name).mkdir()
    ds = fusex.io.read(tmp_path / "eds.zspy", haadf=str(tmp_path / "haadf.zspy"))
    assert ("rsciio.zspy", "rosettasciio") in asked
    assert [str(e) for e in ds.element.values] == ["Fe", "O"]
    assert ds["maps"].dtype.kind in "iu" and int(ds["maps"].sum()) > 0
    assert ds["haadf"].shape == (12, 10)
    direct = fusex.io.read(eds_path, haadf=str(haadf_path))
    np.testing.assert_array_equal(ds["maps"].values, direct["maps"].values)
    assert ".zspy" in fusex.io.INPUT_FORMATS
