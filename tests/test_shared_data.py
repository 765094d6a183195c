"""Every real acquisition in ``../shared/data`` read and fused by the command line.

The folder sits beside the repository checkout and holds files that are not
fusex's to ship (see its README); these tests skip when it is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fusex.cli import main
from fusex.io import INPUT_FORMATS, load

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"no shared acquisitions at {DATA}")

# file -> (extra fuse arguments, the element maps expected, whether they are integer counts)
CASES = {
    "bcf_v2_50x50px.bcf": ([], ["Ag", "Al", "C", "Cu", "O"], True),
    "P45_the_default_job.bcf": (["--elements", "Al", "Si", "O", "Fe"], ["Al", "Si", "O", "Fe"], True),
    "velox_si_16x16.emd": ([], ["C", "Ca", "O", "Cu"], True),
    "PTO_Trilayer_dataset.npz": ([], ["Sc", "Dy", "O"], False),
    "Co3O4_Mn3O4.h5": ([], ["Co", "Mn", "O"], False),
}
NEEDS = {".bcf": "rsciio", ".emd": "sparse"}


def test_every_shared_file_has_a_case():
    files = {p.name for p in DATA.iterdir() if p.suffix.lower() in INPUT_FORMATS}
    assert files == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_cli_reads_and_fuses(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = DATA / name
    if path.suffix in NEEDS:
        pytest.importorskip(NEEDS[path.suffix])
        pytest.importorskip("rsciio")
    extra, elements, counts = CASES[name]
    out = tmp_path / "fused.nc"
    argv = ["fuse", str(path), *extra, "-o", str(out), "-q", "--param", "n_iter=5"]
    assert main(argv) == 0, capsys.readouterr().err
    result = load(out)
    assert [str(e) for e in result.element.values] == elements
    raw = result["raw"].values
    assert raw.shape[1:] == result["haadf"].shape and np.isfinite(result["maps"].values).all()
    assert (raw.sum(axis=(1, 2)) > 0).all()
    if counts:
        assert np.issubdtype(raw.dtype, np.integer)


def test_spectrum_image_without_element_metadata_asks_for_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("rsciio")
    argv = ["fuse", str(DATA / "P45_the_default_job.bcf"), "-o", str(tmp_path / "o.nc")]
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert "'EDX' is a spectrum image" in err and "--elements" in err and "--lines" in err


def test_inspect_tells_what_fuse_takes(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("rsciio")
    pytest.importorskip("sparse")
    assert main(["inspect", str(DATA / "velox_si_16x16.emd")]) == 0
    out = capsys.readouterr().out
    assert out.count("spectrum, EDS_TEM, 4096") == 4  # the sum spectra, numbered and left out
    assert "HAADF: 'HAADF'" in out and "integrated from 'EDS #5' at elements C, Ca, O, Cu" in out
    assert main(["inspect", str(DATA / "bcf_v2_50x50px.bcf")]) == 0
    out = capsys.readouterr().out
    assert "HAADF: 'Ch 1 #1'" in out and "(+7.8 %)" in out and "lines Ag_La, Al_Ka, C_Ka, Cu_Ka, O_Ka" in out
