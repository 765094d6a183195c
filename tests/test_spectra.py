"""fusex.spectra: EDS/EELS spectrum images to element maps, on synthetic spectra with known counts."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from fusex.spectra import (
    SpectrumWarning,
    detector_fwhm,
    edge_onset,
    integrate_eels,
    integrate_lines,
    integrate_signal,
    lines_from_metadata,
    spectrum_dataarray,
    xray_line,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

ENERGY = np.arange(1024) * 0.01  # keV, channel centres, 10 eV channels
SHAPE = (5, 6)
LINES = ("Fe_Ka", "Cu_Ka", "O_Ka")


def fwhm_ev(energy_kev: float, fwhm_mn_ka: float = 130.0) -> float:
    # The Fano-noise scaling written out independently of the module.
    return math.sqrt(fwhm_mn_ka**2 + 8 * math.log(2) * 0.115 * 3.64 * (energy_kev * 1000 - 5898.8))


def synthetic(seed: int = 0, lines=LINES, slope: int = 1):
    """Counts (y, x, channel) with Gaussian lines on a linear background, and each line's exact counts."""
    rng = np.random.default_rng(seed)
    background = 5 + slope * np.arange(ENERGY.size)  # exactly linear in energy
    counts = np.broadcast_to(background, (*SHAPE, ENERGY.size)).astype(np.int64)
    truth = {}
    for name in lines:
        centre = xray_line(name).energy
        width = fwhm_ev(centre) / 1000
        # Every count of the line sits within +-0.8 FWHM, inside the +-1 FWHM window.
        near = np.abs(ENERGY - centre) <= 0.8 * width
        profile = np.round(40 * np.exp(-0.5 * ((ENERGY[near] - centre) / (width / 2.3548)) ** 2)).astype(np.int64)
        amplitude = rng.integers(1, 20, size=SHAPE)
        counts[..., near] += amplitude[..., None] * profile
        truth[name] = amplitude * profile.sum()
    return counts.astype(np.uint16), background, truth


def as_dataarray(counts, units="keV", scale=1.0):
    return xr.DataArray(
        counts,
        dims=("y", "x", "energy"),
        coords={"energy": ("energy", ENERGY * scale, {"units": units}), "y": np.arange(SHAPE[0]) * 2.0},
    )


def window_background(maps, background, line):
    i = maps.attrs["lines"].index(line)
    inside = (ENERGY >= maps.attrs["window_start"][i]) & (ENERGY < maps.attrs["window_stop"][i])
    return background[inside].sum()


def test_detector_fwhm_scales_as_fano_noise():
    assert detector_fwhm(5.8988, 130.0) == pytest.approx(130.0)
    for energy in (0.277, 1.486, 8.04, 20.0):
        assert detector_fwhm(energy, 130.0) == pytest.approx(fwhm_ev(energy), rel=1e-4)
    assert detector_fwhm(0.5, 125.0) < detector_fwhm(0.5, 135.0)
    with pytest.raises(ValueError, match="Fano limit"):
        detector_fwhm(1.0, 100.0)
    with pytest.raises(ValueError, match="fwhm_mn_ka"):
        detector_fwhm(1.0, -130.0)


def test_xray_line_lookup():
    fe = xray_line("Fe_Ka")
    assert 6.39 < fe.energy < 6.41 and fe.element == "Fe" and fe.edge == pytest.approx(7.112, abs=1e-3)
    assert xray_line("pt la").name == "Pt_La"
    assert 9.36 < xray_line("Pt_La").energy < 9.45
    with pytest.raises(ValueError, match="no line 'Kb'"):
        xray_line("O_Kb")
    with pytest.raises(ValueError, match="'<element>_<line>'"):
        xray_line("FeKa")
    with pytest.raises(ValueError, match="unknown element"):
        xray_line("Xx_Ka")


def test_explicit_lines_give_exact_integer_counts():
    counts, background, truth = synthetic()
    before = counts.copy()
    maps = integrate_lines(as_dataarray(counts), lines=list(LINES))
    assert maps.dims == ("element", "y", "x")
    assert list(maps["element"].values) == ["Fe", "Cu", "O"]
    assert maps.dtype == np.int64
    np.testing.assert_array_equal(maps["y"].values, np.arange(SHAPE[0]) * 2.0)
    for name, symbol in zip(LINES, ("Fe", "Cu", "O")):
        expected = truth[name] + window_background(maps, background, name)
        np.testing.assert_array_equal(maps.sel(element=symbol).values, expected)
    np.testing.assert_array_equal(counts, before)
    assert maps.attrs["background"] == "none" and maps.attrs["units"] == "counts"
    assert maps.attrs["lines"] == list(LINES)


def test_windows_are_two_fwhm_wide_around_the_line():
    counts, _, _ = synthetic()
    maps = integrate_lines(as_dataarray(counts), lines=list(LINES), fwhm_mn_ka=125.0)
    for i, name in enumerate(LINES):
        centre = xray_line(name).energy
        half = fwhm_ev(centre, 125.0) / 1000
        assert maps.attrs["window_start"][i] == pytest.approx(centre - half, rel=1e-6)
        assert maps.attrs["window_stop"][i] == pytest.approx(centre + half, rel=1e-6)
        assert maps.attrs["fwhm"][i] == pytest.approx(fwhm_ev(centre, 125.0), rel=1e-6)
    wider = integrate_lines(as_dataarray(counts), lines=["Fe_Ka"], window=3.0)
    assert wider.attrs["window_stop"][0] - wider.attrs["window_start"][0] == pytest.approx(
        3 * fwhm_ev(xray_line("Fe_Ka").energy) / 1000
    )


def test_background_subtraction_recovers_line_counts_on_a_linear_background():
    counts, _, truth = synthetic(slope=2)
    maps = integrate_lines(as_dataarray(counts), lines=list(LINES), background=True)
    assert np.issubdtype(maps.dtype, np.floating)
    assert maps.attrs["background"] == "linear"
    for name, symbol in zip(LINES, ("Fe", "Cu", "O")):
        np.testing.assert_allclose(maps.sel(element=symbol).values, truth[name], rtol=0, atol=1e-6)


def test_background_result_may_be_negative():
    counts = np.zeros((2, 2, ENERGY.size), dtype=np.uint8)
    counts[..., (ENERGY > 6.0) & (ENERGY < 6.2)] = 3  # left side window of Fe Ka only
    with pytest.warns(SpectrumWarning, match="no counts above the background"):
        maps = integrate_lines(counts, energy=ENERGY, energy_units="keV", lines=["Fe_Ka"], background=True)
    assert (maps.values < 0).all()


def test_plain_array_matches_dataarray_and_ev_axis():
    counts, _, _ = synthetic()
    labelled = integrate_lines(as_dataarray(counts), lines=list(LINES))
    plain = integrate_lines(counts, energy=ENERGY, energy_units="keV", lines=list(LINES))
    in_ev = integrate_lines(as_dataarray(counts, units="eV", scale=1000.0), lines=list(LINES))
    assert plain.dims == ("element", "y", "x")
    np.testing.assert_array_equal(plain.values, labelled.values)
    np.testing.assert_array_equal(in_ev.values, labelled.values)
    single = integrate_lines(counts[0, 0], energy=ENERGY, energy_units="keV", lines=["Fe_Ka"])
    assert single.dims == ("element",) and single.item() == labelled.values[0, 0, 0]


def test_uint8_counts_do_not_overflow():
    counts = np.full((2, 3, ENERGY.size), 200, dtype=np.uint8)
    maps = integrate_lines(counts, energy=ENERGY, energy_units="keV", lines=["Fe_Ka"])
    n_channels = int(np.sum((ENERGY >= maps.attrs["window_start"][0]) & (ENERGY < maps.attrs["window_stop"][0])))
    assert maps.dtype == np.int64
    assert (maps.values == 200 * n_channels).all() and 200 * n_channels > 255


def test_elements_pick_the_strongest_family_in_range_and_say_so():
    counts, _, _ = synthetic()
    with pytest.warns(SpectrumWarning, match=r"Fe: Fe_Ka .*Pt: Pt_La .*O: O_Ka"):
        maps = integrate_lines(as_dataarray(counts), elements=["Fe", "Pt", "O"])
    assert maps.attrs["lines"] == ["Fe_Ka", "Pt_La", "O_Ka"]
    short = as_dataarray(counts)[..., :500]  # up to 5 keV: Fe K is outside
    with pytest.warns(SpectrumWarning, match="Fe: Fe_La"):
        assert integrate_lines(short, elements=["Fe"]).attrs["lines"] == ["Fe_La"]
    with pytest.warns(SpectrumWarning, match="Fe: Fe_La"):  # an 8 keV beam barely ionizes Fe K (7.1 keV)
        assert integrate_lines(as_dataarray(counts), elements=["Fe"], beam_energy=8.0).attrs["lines"] == ["Fe_La"]
    with pytest.raises(ValueError, match="no X-ray line of H"):
        integrate_lines(as_dataarray(counts), elements=["H"])


def test_line_outside_the_axis_raises():
    counts, _, _ = synthetic()
    with pytest.raises(ValueError, match=r"Pt_Ka .*outside the energy axis"):
        integrate_lines(as_dataarray(counts), lines=["Fe_Ka", "Pt_Ka"])
    # the line fits but its background windows do not
    with pytest.raises(ValueError, match=r"Pt_La .*background windows"):
        integrate_lines(as_dataarray(counts)[..., :960], lines=["Pt_La"], background=True)


def test_overlapping_windows_name_both_lines():
    counts, _, _ = synthetic()
    with pytest.warns(SpectrumWarning, match=r"S_Ka .*Pb_Ma .*overlap"):
        integrate_lines(as_dataarray(counts), lines=["S_Ka", "Pb_Ma"])
    with pytest.warns(SpectrumWarning, match=r"background window of (C_Ka|O_Ka) overlaps the line (O_Ka|C_Ka)"):
        integrate_lines(as_dataarray(counts), lines=["C_Ka", "O_Ka"], background=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        integrate_lines(as_dataarray(counts), lines=list(LINES), background=True)


def test_energy_units_that_disagree_with_the_values_raise():
    counts, _, _ = synthetic()
    with pytest.raises(ValueError, match="looks like eV"):
        integrate_lines(as_dataarray(counts, units="keV", scale=1000.0), lines=["Fe_Ka"])
    with pytest.raises(ValueError, match="looks like keV"):
        integrate_lines(counts, energy=ENERGY, energy_units="eV", lines=["Fe_Ka"])
    with pytest.raises(ValueError, match="not an energy unit"):
        integrate_lines(counts, energy=ENERGY, energy_units="nm", lines=["Fe_Ka"])


def test_energy_units_are_inferred_with_a_warning():
    counts, _, _ = synthetic()
    reference = integrate_lines(as_dataarray(counts), lines=["Fe_Ka"])
    with pytest.warns(SpectrumWarning, match="taken as eV"):
        guessed = integrate_lines(counts, energy=ENERGY * 1000, lines=["Fe_Ka"])
    np.testing.assert_array_equal(guessed.values, reference.values)


def test_a_line_without_counts_warns():
    counts = np.zeros((2, 2, ENERGY.size), dtype=np.uint16)
    counts[..., np.argmin(np.abs(ENERGY - 6.40))] = 4
    with pytest.warns(SpectrumWarning, match="Cu_Ka has no counts"):
        maps = integrate_lines(counts, energy=ENERGY, energy_units="keV", lines=["Fe_Ka", "Cu_Ka"])
    assert (maps.sel(element="Fe").values == 4).all() and (maps.sel(element="Cu").values == 0).all()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({}, ValueError, "say which X-ray lines"),
        ({"lines": "Fe_Ka"}, TypeError, "are lists"),
        ({"lines": ["Fe_Ka", "Fe_La"]}, ValueError, "several lines of one element"),
        ({"lines": ["Fe_Ka"], "window": 0.01}, ValueError, "holds no channel"),
        ({"lines": ["Fe_Ka"], "window": -1}, ValueError, "window="),
        ({"lines": ["Fe_Ka"], "background": "yes"}, TypeError, "background="),
        ({"lines": ["Fe_Ka"], "background": True, "background_windows": (0.5, 1)}, ValueError, "inside the integ"),
        ({"lines": ["Fe_Ka"], "fwhm_mn_ka": 50}, ValueError, "Fano limit"),
    ],
)
def test_bad_arguments_raise(kwargs, error, match):
    counts, _, _ = synthetic()
    with pytest.raises(error, match=match):
        integrate_lines(as_dataarray(counts), **kwargs)


def test_bad_spectra_raise():
    counts, _, _ = synthetic()
    with pytest.raises(ValueError, match="needs its energy axis"):
        integrate_lines(counts, lines=["Fe_Ka"])
    with pytest.raises(ValueError, match="has no coordinate"):
        integrate_lines(xr.DataArray(counts), lines=["Fe_Ka"])
    with pytest.raises(ValueError, match="pass only one"):
        integrate_lines(as_dataarray(counts), energy=ENERGY, lines=["Fe_Ka"])
    with pytest.raises(ValueError, match="channels"):
        integrate_lines(counts, energy=ENERGY[:-1], energy_units="keV", lines=["Fe_Ka"])
    with pytest.raises(ValueError, match="increase"):
        integrate_lines(counts, energy=ENERGY[::-1], energy_units="keV", lines=["Fe_Ka"])


def test_input_dataarray_is_unchanged():
    counts, _, _ = synthetic()
    spectrum = as_dataarray(counts)
    copy = spectrum.copy(deep=True)
    integrate_lines(spectrum, lines=list(LINES), background=True)
    integrate_lines(spectrum, lines=list(LINES))
    xr.testing.assert_identical(spectrum, copy)


def test_lazy_input_stays_lazy():
    dask_array = pytest.importorskip("dask.array")
    counts, _, _ = synthetic()
    lazy = as_dataarray(dask_array.from_array(counts, chunks=(2, 3, -1)))
    maps = integrate_lines(lazy, lines=list(LINES))
    assert isinstance(maps.data, dask_array.Array)
    np.testing.assert_array_equal(maps.values, integrate_lines(as_dataarray(counts), lines=list(LINES)).values)


def test_lines_from_metadata():
    tem = {
        "Sample": {"xray_lines": ["Fe_Ka", "Pt_La"], "elements": ["Fe", "Pt"]},
        "Acquisition_instrument": {"TEM": {"Detector": {"EDS": {"energy_resolution_MnKa": 128.5}}}},
    }
    assert lines_from_metadata(tem) == (["Fe_Ka", "Pt_La"], 128.5)
    sem = {"Acquisition_instrument": {"SEM": {"Detector": {"EDS": {"energy_resolution_MnKa": 133}}}}}
    assert lines_from_metadata(sem) == (None, 133.0)
    assert lines_from_metadata({"Sample": {"xray_lines": []}}) == (None, None)
    with pytest.raises(TypeError, match="metadata"):
        lines_from_metadata(["Fe_Ka"])


def rsciio_dict(counts, metadata):
    axes = [
        {"name": "y", "size": SHAPE[0], "offset": 0.0, "scale": 2.0, "units": "nm", "navigate": True},
        {"name": "x", "size": SHAPE[1], "offset": 1.0, "scale": 2.0, "units": "nm", "navigate": True},
        {"name": "Energy", "size": ENERGY.size, "offset": 0.0, "scale": 0.01, "units": "keV", "navigate": False},
    ]
    return {"data": counts, "axes": axes, "metadata": metadata}


def test_integrate_signal_reads_lines_and_resolution_from_the_metadata():
    counts, background, truth = synthetic()
    metadata = {
        "General": {"title": "EDS"},
        "Signal": {"signal_type": "EDS_TEM"},
        "Sample": {"xray_lines": list(LINES)},
        "Acquisition_instrument": {"TEM": {"Detector": {"EDS": {"energy_resolution_MnKa": 125.0}}}},
    }
    maps = integrate_signal(rsciio_dict(counts, metadata))
    assert maps.attrs["fwhm_mn_ka"] == 125.0 and maps.attrs["title"] == "EDS"
    assert maps.dims == ("element", "y", "x") and maps["x"].attrs["units"] == "nm"
    np.testing.assert_allclose(maps["x"].values, 1.0 + 2.0 * np.arange(SHAPE[1]))
    np.testing.assert_array_equal(
        maps.sel(element="Fe").values, truth["Fe_Ka"] + window_background(maps, background, "Fe_Ka")
    )
    # arguments override the metadata
    assert integrate_signal(rsciio_dict(counts, metadata), lines=["Cu_Ka"]).attrs["lines"] == ["Cu_Ka"]
    del metadata["Acquisition_instrument"]
    with pytest.warns(SpectrumWarning, match="no detector resolution"):
        assert integrate_signal(rsciio_dict(counts, metadata)).attrs["fwhm_mn_ka"] == 130.0


def test_integrate_signal_falls_back_to_elements_then_raises():
    counts, _, _ = synthetic()
    only_elements = {"Sample": {"elements": ["Fe", "Cu"]}, "Acquisition_instrument": {"SEM": {"beam_energy": 20.0}}}
    with pytest.warns(SpectrumWarning, match="Fe: Fe_Ka"):
        maps = integrate_signal(rsciio_dict(counts, only_elements), fwhm_mn_ka=130.0)
    assert maps.attrs["lines"] == ["Fe_Ka", "Cu_Ka"]
    with pytest.raises(ValueError, match="list no X-ray lines or elements"):
        integrate_signal(rsciio_dict(counts, {"General": {"title": "SI"}}), fwhm_mn_ka=130)
    with pytest.raises(ValueError, match="integrate_eels"):
        integrate_signal(rsciio_dict(counts, {"Signal": {"signal_type": "EELS"}}))
    with pytest.raises(TypeError, match="HyperSpy/exspy signal or a RosettaSciIO dict"):
        integrate_signal(counts)


def eds_signal(counts):
    hs = pytest.importorskip("hyperspy.api")
    pytest.importorskip("exspy")
    signal = hs.signals.Signal1D(counts)
    signal.set_signal_type("EDS_TEM")
    energy = signal.axes_manager.signal_axes[0]
    energy.name, energy.units, energy.offset, energy.scale = "Energy", "keV", 0.0, 0.01
    for axis, name in zip(signal.axes_manager.navigation_axes, ("x", "y")):
        axis.name, axis.units, axis.scale = name, "nm", 2.0
    signal.metadata.set_item("Sample.xray_lines", list(LINES))
    signal.metadata.set_item("Acquisition_instrument.TEM.Detector.EDS.energy_resolution_MnKa", 130.0)
    return signal


def test_integrate_signal_on_a_hyperspy_signal():
    counts, background, truth = synthetic()
    signal = eds_signal(counts)
    before = signal.data.copy()
    maps = integrate_signal(signal)
    np.testing.assert_array_equal(signal.data, before)
    assert maps.dims == ("element", "y", "x") and maps.shape == (3, *SHAPE)
    for name, symbol in zip(LINES, ("Fe", "Cu", "O")):
        expected = truth[name] + window_background(maps, background, name)
        np.testing.assert_array_equal(maps.sel(element=symbol).values, expected)
    spectrum, metadata = spectrum_dataarray(signal)
    assert spectrum.dims == ("y", "x", "Energy") and metadata["Sample"]["xray_lines"] == list(LINES)


@pytest.mark.parametrize("suffix", [".hspy", ".zspy"])
def test_spectrum_image_written_and_read_back_gives_the_known_counts(tmp_path, suffix):
    if suffix == ".zspy":
        pytest.importorskip("zarr")
    counts, background, truth = synthetic(seed=3)
    signal = eds_signal(counts)
    path = tmp_path / f"si{suffix}"
    try:
        signal.save(path)
    except AttributeError as exc:  # RosettaSciIO <= 0.15 writes .zspy with zarr 2's API only
        pytest.skip(f"this RosettaSciIO cannot write {suffix} with the installed zarr: {exc}")
    hs = pytest.importorskip("hyperspy.api")
    for lazy in (False, True):
        loaded = hs.load(path, lazy=lazy)
        maps = integrate_signal(loaded, background=True)
        for name, symbol in zip(LINES, ("Fe", "Cu", "O")):
            np.testing.assert_allclose(maps.sel(element=symbol).values, truth[name], atol=1e-6)
    reader = pytest.importorskip("rsciio.hspy" if suffix == ".hspy" else "rsciio.zspy")
    (signal_dict,) = reader.file_reader(str(path))
    maps = integrate_signal(signal_dict)
    assert maps.dtype == np.int64
    expected = truth["Cu_Ka"] + window_background(maps, background, "Cu_Ka")
    np.testing.assert_array_equal(maps.sel(element="Cu").values, expected)


def eels_signal(edge_counts):
    hs = pytest.importorskip("hyperspy.api")
    energy = np.arange(400.0, 800.0, 1.0)
    scale = np.linspace(1e7, 2e7, edge_counts.size).reshape(edge_counts.shape)
    data = scale[..., None] * energy**-3.0 + (energy >= edge_onset("O_K")) * edge_counts[..., None]
    signal = hs.signals.Signal1D(data)
    axis = signal.axes_manager.signal_axes[0]
    axis.offset, axis.scale, axis.units = 400.0, 1.0, "eV"
    return signal


def test_integrate_eels_removes_a_power_law_background():
    edge = np.arange(12.0).reshape(3, 4) * 10
    signal = eels_signal(edge)
    before = signal.data.copy()
    maps = integrate_eels(signal, elements=["O"], window=50.0)
    np.testing.assert_array_equal(signal.data, before)
    assert maps.dims[0] == "element" and list(maps["element"].values) == ["O"]
    assert maps.attrs["edges"] == ["O_K"] and maps.attrs["background"] == "power law"
    # HyperSpy's fast power-law estimate is within 0.05 % of the true background here
    np.testing.assert_allclose(maps.values[0], edge * 50, rtol=5e-4, atol=0.5)
    with pytest.raises(ValueError, match="outside the energy axis"):
        integrate_eels(signal, edges=["Fe_L3"], window=100.0)
    assert edge_onset("Fe_L2,3") == edge_onset("Fe_L3")


def test_integrate_eels_without_hyperspy_names_the_extra(monkeypatch):
    import fusex.spectra.eels as eels

    def missing(name):
        raise ImportError(name)

    monkeypatch.setattr(eels.importlib, "import_module", missing)
    with pytest.raises(ImportError, match=r"fusex\[hyperspy\]"):
        integrate_eels(object(), elements=["O"])


@pytest.mark.skipif(not (DATA / "bcf_v2_50x50px.bcf").exists(), reason="shared acquisitions not present")
def test_bruker_bcf_spectrum_image_metadata_lines():
    bruker = pytest.importorskip("rsciio.bruker")
    signals = bruker.file_reader(str(DATA / "bcf_v2_50x50px.bcf"))
    (spectrum_image,) = [s for s in signals if np.ndim(s["data"]) == 3]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", "the metadata give no detector resolution", SpectrumWarning)
        maps = integrate_signal(spectrum_image)
    assert maps.attrs["lines"] == ["Ag_La", "Al_Ka", "C_Ka", "Cu_Ka", "O_Ka"]
    assert list(maps["element"].values) == ["Ag", "Al", "C", "Cu", "O"]
    assert maps.shape == (5, 50, 50) and maps.dtype == np.int64
    totals = maps.sum(["height", "width"]).values
    assert (totals > 0).all() and (maps.values >= 0).all()
    # non-overlapping windows cannot hold more than the spectrum image's counts
    assert totals.sum() < int(np.asarray(spectrum_image["data"], dtype=np.int64).sum())
