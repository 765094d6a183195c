"""``fusex inspect`` and the ``fuse`` options that pick a microscope file's signals (--haadf, --lines)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import fusex
from fusex.cli import main
from fusex.io.formats import INPUT_FORMATS
from fusex.io.signals import RSCIIO_READERS

LINES = {"Sr_La": 1.806, "Ti_Ka": 4.511, "O_Ka": 0.525}


@pytest.fixture(scope="module")
def sample():
    return fusex.datasets.phantom((20, 24), seed=4)


@pytest.fixture
def tutorial_h5(tmp_path: Path, sample) -> Path:
    """The published tutorial's HDF5 layout: 2-D datasets HAADF, and one per element."""
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "tutorial.h5"
    with h5py.File(path, "w") as f:
        f["HAADF"] = sample.haadf
        for name, data in zip(sample.elements, sample.maps):
            f[name] = data
    return path


@pytest.fixture
def spectrum_files(tmp_path: Path, sample) -> tuple[Path, Path, np.ndarray]:
    """An EDS spectrum image (.hspy, lines in its metadata) whose peaks hold known counts, and its HAADF image."""
    exspy = pytest.importorskip("exspy")
    hs = pytest.importorskip("hyperspy.api")
    counts = np.random.default_rng(5).poisson(20 * np.clip(sample.maps, 0, None))
    cube = np.zeros((*sample.haadf.shape, 900), dtype=np.int64)
    for m, energy in zip(counts, LINES.values()):
        cube[:, :, round((energy - 0.2) / 0.01)] += m
    si = exspy.signals.EDSTEMSpectrum(cube)
    si.axes_manager[-1].scale, si.axes_manager[-1].offset, si.axes_manager[-1].units = 0.01, 0.2, "keV"
    si.metadata.set_item("Sample.xray_lines", list(LINES))
    si.metadata.General.title = "EDS"
    si.save(tmp_path / "si.hspy")
    haadf = hs.signals.Signal2D(sample.haadf)
    haadf.metadata.General.title = "HAADF"
    haadf.save(tmp_path / "haadf.hspy")
    return tmp_path / "si.hspy", tmp_path / "haadf.hspy", counts


def test_help_lists_every_input_format(capsys: pytest.CaptureFixture[str]) -> None:
    assert set(RSCIIO_READERS) <= set(INPUT_FORMATS)
    for command in ("fuse", "inspect"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        for suffix in INPUT_FORMATS:
            assert f"  {suffix} " in text, f"{command} --help does not list {suffix}"
    with pytest.raises(SystemExit):
        main(["fuse", "--help"])
    assert "--haadf TITLE" in capsys.readouterr().out


def test_inspect_lists_signals_and_the_choice(tutorial_h5: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(tutorial_h5)]) == 0
    out = capsys.readouterr().out
    for title in ("HAADF", "Sr", "Ti", "O"):
        assert f"'{title}'" in out
    assert "20x24" in out and "fusex fuse would use:" in out
    assert "HAADF: 'HAADF'" in out and "maps: 'O', 'Sr', 'Ti', as given" in out


def test_inspect_shows_lines_and_what_fuse_integrates(spectrum_files, capsys: pytest.CaptureFixture[str]) -> None:
    si, haadf, _ = spectrum_files
    assert main(["inspect", str(si), "--haadf", str(haadf)]) == 0
    out = capsys.readouterr().out
    assert "spectrum image, EDS_TEM, 20x24x900" in out and "X-ray lines Sr_La, Ti_Ka, O_Ka" in out
    assert "keV" in out
    assert "maps: integrated from 'EDS' at lines Sr_La, Ti_Ka, O_Ka" in out
    assert main(["inspect", str(si)]) == 0
    assert "fusex fuse would stop: " in capsys.readouterr().out


def test_fuse_takes_haadf_and_lines_from_the_command_line(
    tmp_path: Path, spectrum_files, capsys: pytest.CaptureFixture[str]
) -> None:
    si, haadf, counts = spectrum_files
    out = tmp_path / "fused.nc"
    argv = ["fuse", str(si), "--haadf", str(haadf), "--lines", "O_Ka", "Ti_Ka", "-o", str(out), "-q"]
    assert main([*argv, "--param", "n_iter=3"]) == 0
    assert "integrated from 'EDS' at lines O_Ka, Ti_Ka" in capsys.readouterr().err
    result = fusex.io.load(out)
    assert list(result.element.values) == ["O", "Ti"]
    np.testing.assert_array_equal(result["raw"].values, counts[[2, 1]])


def test_fuse_says_a_spectrum_image_needs_lines(tmp_path: Path, sample, capsys: pytest.CaptureFixture[str]) -> None:
    exspy = pytest.importorskip("exspy")
    hs = pytest.importorskip("hyperspy.api")
    noise = np.random.default_rng(6).poisson(1.0, (*sample.haadf.shape, 300)).astype(np.uint8)
    si = exspy.signals.EDSSEMSpectrum(noise)
    si.axes_manager[-1].scale, si.axes_manager[-1].units = 0.01, "keV"
    si.save(tmp_path / "si.hspy")
    bse = hs.signals.Signal2D(sample.haadf)
    bse.metadata.General.title = "BSE"
    bse.save(tmp_path / "bse.hspy")
    argv = ["fuse", str(tmp_path / "si.hspy"), "--haadf", str(tmp_path / "bse.hspy"), "-o", str(tmp_path / "o.nc")]
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert "names no X-ray lines" in err and "--elements" in err and "--lines" in err
    assert main([*argv, "--elements", "Ti", "-q", "--param", "n_iter=2"]) == 0


def test_inspect_of_a_missing_or_unknown_file_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(tmp_path / "absent.bcf")]) == 3
    (tmp_path / "scan.xyz").write_text("x")
    assert main(["inspect", str(tmp_path / "scan.xyz")]) == 3
    assert "unknown file type '.xyz'" in capsys.readouterr().err
