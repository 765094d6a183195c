"""RosettaSciIO and HyperSpy adapters, on files and signals made by those libraries themselves."""

import importlib
import warnings

import numpy as np
import pytest

import fusex
from fusex import FusionParams, io
from fusex.io.signals import RSCIIO_READERS

hs = pytest.importorskip("hyperspy.api")
pytest.importorskip("rsciio")

PARAMS = FusionParams(n_iter=3)


@pytest.fixture(scope="module")
def sample():
    return fusex.datasets.phantom((20, 24), seed=2)


def _signal(data, title, scale=0.05, offset=(1.0, 2.0)):
    s = hs.signals.Signal2D(np.asarray(data))
    for axis, name, off in zip(s.axes_manager.signal_axes, ("x", "y"), offset[::-1]):
        axis.name, axis.scale, axis.offset, axis.units = name, scale, off, "nm"
    s.metadata.General.title = title
    return s


@pytest.mark.parametrize("suffix", [".hspy", ".emd"])
def test_files_written_by_hyperspy_read_through_rsciio(tmp_path, sample, suffix):
    paths = []
    for title, data in [("HAADF", sample.haadf), *zip(sample.elements, sample.maps)]:
        path = tmp_path / f"{title}{suffix}"
        _signal(data, title).save(path)
        paths.append(path)
    reader = importlib.import_module(RSCIIO_READERS[suffix]).file_reader
    signals = [d for p in paths for d in reader(str(p))]
    ds = io.from_rsciio(signals)
    assert list(ds.element.values) == list(sample.elements)
    np.testing.assert_array_equal(ds.maps.values, sample.maps)
    assert ds.haadf.dims == ("y", "x") and ds.x.attrs["units"] == "nm"
    np.testing.assert_allclose(ds.y.values[:3], [1.0, 1.05, 1.1])
    np.testing.assert_allclose(ds.x.values[:2], [2.0, 2.05])
    assert fusex.fuse(ds, params=PARAMS).maps.shape == (3, 20, 24)


def _image(data, title, *, names=("y", "x"), scale=1.0, offset=(0.0, 0.0), units="nm"):
    axes = [
        {"name": n, "size": size, "scale": scale, "offset": off, "units": units, "index_in_array": i}
        for i, (n, size, off) in enumerate(zip(names, np.shape(data), offset))
    ]
    return {"data": np.asarray(data), "axes": axes, "metadata": {"General": {"title": title}}}


def _cube(shape, title="EDS", lines=None, scale=1.0, units="nm", counts=None):
    rng = np.random.default_rng(1)
    energy = 0.2 + 0.01 * np.arange(shape[2])
    data = rng.poisson(0.2, shape) if counts is None else counts
    axes = [
        {"name": "y", "size": shape[0], "scale": scale, "offset": 0.0, "units": units, "navigate": True},
        {"name": "x", "size": shape[1], "scale": scale, "offset": 0.0, "units": units, "navigate": True},
        {"name": "Energy", "size": shape[2], "scale": 0.01, "offset": 0.2, "units": "keV", "navigate": False},
    ]
    metadata = {"General": {"title": title}, "Signal": {"signal_type": "EDS_TEM"}}
    if lines is not None:
        metadata["Sample"] = {"xray_lines": list(lines)}
    return {"data": data.astype(np.uint16), "axes": axes, "metadata": metadata}, energy


def _lines_cube(sample, shape=None):
    """A spectrum image whose Sr_La, Ti_Ka and O_Ka peaks carry the phantom's maps as counts."""
    height, width = sample.haadf.shape
    energy = 0.2 + 0.01 * np.arange(900)
    rng = np.random.default_rng(3)
    expected = rng.poisson(20 * np.clip(sample.maps, 0, None))
    counts = np.zeros((height, width, energy.size), dtype=np.int64)
    for m, centre in zip(expected, (1.806, 4.511, 0.525)):
        channel = round((centre - 0.2) / 0.01)
        counts[:, :, channel] += m  # all counts in the line's central channel: inside any window
    cube, _ = _cube((height, width, energy.size), lines=["Sr_La", "Ti_Ka", "O_Ka"], counts=counts)
    return cube, expected


def test_spectrum_image_is_integrated_at_its_metadata_lines(sample):
    cube, expected = _lines_cube(sample)
    sums = [  # Velox-like 1-D sum spectra, all titled EDS like the spectrum image
        {"data": np.zeros(900), "axes": [cube["axes"][2]], "metadata": {"General": {"title": "EDS"}}} for _ in range(2)
    ]
    ds = io.from_rsciio([*sums, _image(sample.haadf, "HAADF"), cube])
    assert list(ds.element.values) == ["Sr", "Ti", "O"]
    assert ds.maps.attrs["lines"] == ["Sr_La", "Ti_Ka", "O_Ka"]
    np.testing.assert_array_equal(ds.maps.values, expected)
    assert np.issubdtype(ds.maps.dtype, np.integer)
    assert "integrated from 'EDS #3'" in ds.attrs["source"]


def test_lines_and_elements_override_the_metadata(sample):
    cube, expected = _lines_cube(sample)
    ds = io.from_rsciio([_image(sample.haadf, "HAADF"), cube], lines=["O_Ka"])
    assert list(ds.element.values) == ["O"]
    np.testing.assert_array_equal(ds.maps.values[0], expected[2])
    with pytest.warns(UserWarning, match="picked"):
        ds = io.from_rsciio([_image(sample.haadf, "HAADF"), cube], elements=["Ti"])
    assert ds.maps.attrs["lines"] == ["Ti_Ka"]


def test_spectrum_image_without_lines_says_what_to_pass(sample):
    cube, _ = _cube((*sample.haadf.shape, 300))
    with pytest.raises(ValueError, match=r"names no X-ray lines.*--elements.*--lines"):
        io.from_rsciio([_image(sample.haadf, "BSE"), _image(sample.haadf, "SE"), cube])


def test_haadf_preference_and_explicit_choice(sample):
    h = sample.haadf
    signals = [_image(h, t) for t in ("SE", "BF", "DF4", "BSE")]
    signals += [_image(sample.maps[0], "Sr"), _image(sample.maps[1], "Ti")]
    ds = io.from_rsciio(signals)
    assert ds.haadf.attrs["title"] == "DF4"  # DF ranks before BF and BSE; 'SE' is no selenium map
    assert list(ds.element.values) == ["Sr", "Ti"]
    assert io.from_rsciio(signals, haadf="SE").haadf.attrs["title"] == "SE"
    assert io.from_rsciio([_image(h, "ADF"), _image(h, "HAADF"), signals[-1]]).haadf.attrs["title"] == "HAADF"
    with pytest.raises(ValueError, match="cannot tell which image is the HAADF"):
        io.from_rsciio([_image(h, "Ch 1"), _image(h, "Ch 2"), signals[-1]])
    with pytest.raises(ValueError, match="no image titled 'Z'"):
        io.from_rsciio(signals, haadf="Z")


def test_repeated_titles_are_numbered_and_the_image_on_the_grid_is_taken(sample):
    overview = np.zeros((40, 48))
    cube, _ = _lines_cube(sample)
    signals = [_image(overview, "Ch 1"), _image(sample.haadf, "Ch 1"), cube]
    ds = io.from_rsciio(signals)
    np.testing.assert_array_equal(ds.haadf.values, sample.haadf)
    assert "'Ch 1 #2'" in ds.attrs["source"]
    assert io.from_rsciio(signals, haadf="Ch 1").haadf.shape == sample.haadf.shape
    with pytest.raises(ValueError, match=r"40x48 px of 1 nm instead of 20x24 px of 1 nm"):
        io.from_rsciio(signals, haadf="Ch 1 #1")
    far = _image(sample.haadf, "HAADF", scale=10.0)  # the maps' shape, but pixels ten times larger
    with pytest.raises(ValueError, match=r"'HAADF' has a pixel size of 10 nm along y instead of 1 nm \(\+900.0 %\)"):
        io.from_rsciio([far, cube])
    with pytest.warns(UserWarning, match=r"\+900.0 %"):
        assert io.from_rsciio([far, cube], haadf="HAADF").haadf.shape == sample.haadf.shape


def test_one_scan_with_other_offsets_and_units_is_one_grid(sample):
    maps = [_image(m, e, scale=0.05, offset=(-3.0, -4.0)) for m, e in zip(sample.maps, sample.elements)]
    haadf = _image(sample.haadf, "HAADF", scale=0.00005, units="µm")  # the same 0.05 nm pixels, other origin
    ds = io.from_rsciio([*maps, haadf])
    np.testing.assert_allclose(ds.y.values[:2], [-3.0, -2.95])
    assert ds.y.attrs["units"] == "nm"
    np.testing.assert_array_equal(ds.haadf.values, sample.haadf)
    np.testing.assert_array_equal(ds.maps.values, sample.maps)


def test_grids_that_differ_say_by_how_much(sample):
    maps = [_image(m, e, scale=0.05) for m, e in zip(sample.maps, sample.elements)]
    with pytest.warns(UserWarning, match=r"pixel size of 0.055 nm along x instead of 0.05 nm \(\+10.0 %\)"):
        io.from_rsciio(
            [
                *maps,
                _image(sample.haadf, "HAADF", scale=0.05)
                | {
                    "axes": [
                        {"name": "y", "size": 20, "scale": 0.05, "units": "nm"},
                        {"name": "x", "size": 24, "scale": 0.055, "units": "nm"},
                    ]
                },
            ]
        )
    bad = _image(sample.maps[0][:10], "Sr", scale=0.05)
    with pytest.raises(ValueError, match=r"map 'Sr' is not on the grid of map 'Ti': it has 10x24 px"):
        io.from_rsciio([maps[1], bad, _image(sample.haadf, "HAADF", scale=0.05)])
    with pytest.raises(ValueError, match=r"no image in the file is on the maps' grid.*'HAADF' has 20x24 px of 0.05 nm"):
        io.from_rsciio([_image(sample.maps[0][:, :12], "Sr"), _image(sample.haadf, "HAADF", scale=0.05)])


def test_vendor_map_titles_are_read_as_elements(sample):
    titles = ["Sr La", "Ti-EELS", "O K"]
    ds = io.from_rsciio([_image(sample.haadf, "HAADF"), *(_image(m, t) for m, t in zip(sample.maps, titles))])
    assert list(ds.element.values) == titles
    res = fusex.fuse(ds, params=PARAMS)
    assert list(res.z.values) == [38, 22, 8]
    assert list(
        io.from_rsciio(
            [_image(sample.haadf, "HAADF"), *(_image(m, t) for m, t in zip(sample.maps, titles))], elements=["O", "Sr"]
        ).element.values
    ) == ["O K", "Sr La"]


def test_single_signal_files_take_the_haadf_from_another_file(tmp_path, sample):
    exspy = pytest.importorskip("exspy")
    cube, expected = _lines_cube(sample)
    si = exspy.signals.EDSTEMSpectrum(cube["data"])
    si.axes_manager[-1].scale, si.axes_manager[-1].offset, si.axes_manager[-1].units = 0.01, 0.2, "keV"
    si.metadata.set_item("Sample.xray_lines", ["Sr_La", "Ti_Ka", "O_Ka"])
    si.save(tmp_path / "si.hspy")
    _signal(sample.haadf, "HAADF", scale=1.0, offset=(0.0, 0.0)).save(tmp_path / "haadf.hspy")
    with pytest.raises(ValueError, match=r"the file holds no image at all; .*haadf="):
        io.read(tmp_path / "si.hspy")
    ds = io.read(tmp_path / "si.hspy", haadf=tmp_path / "haadf.hspy")
    np.testing.assert_array_equal(ds.maps.values, expected)
    np.testing.assert_array_equal(ds.haadf.values, sample.haadf)
    with pytest.raises(ValueError, match="holds no element maps nor a spectrum image"):
        io.read(tmp_path / "haadf.hspy")


def test_hdf5_of_plain_datasets(tmp_path, sample):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "tutorial.h5"
    with h5py.File(path, "w") as f:
        for name, data in [("Ti", sample.maps[1]), ("HAADF", sample.haadf), ("O", sample.maps[2])]:
            f[name] = data
    ds = io.read(path)
    assert list(ds.element.values) == ["O", "Ti"]  # h5py lists datasets by name
    np.testing.assert_array_equal(ds.maps.values, sample.maps[[2, 1]])
    assert list(io.read(path, elements=["O"]).element.values) == ["O"]


def test_exspy_line_maps_from_hyperspy(sample):
    exspy = pytest.importorskip("exspy")
    energy = np.arange(1024) * 0.01
    lines = {"Sr_La": 1.806, "Ti_Ka": 4.511, "O_Ka": 0.525}
    rng = np.random.default_rng(0)
    spectra = np.zeros((20, 24, energy.size))
    for m, centre in zip(sample.maps, lines.values()):
        spectra += m[..., None] * np.exp(-((energy - centre) ** 2) / (2 * 0.05**2))
    s = exspy.signals.EDSTEMSpectrum(rng.poisson(spectra + 0.01).astype(float))
    s.axes_manager[-1].scale, s.axes_manager[-1].units = 0.01, "keV"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s.set_microscope_parameters(beam_energy=200)
        s.add_lines(list(lines))
        maps = s.get_lines_intensity(xray_lines=list(lines))
    haadf = hs.signals.Signal2D(sample.haadf)
    ds = io.from_hyperspy(maps, haadf)
    assert sorted(ds.element.values) == sorted(lines)
    assert ds.maps.attrs["signal_type"] == "EDS_TEM"
    res = fusex.fuse(ds, params=PARAMS)
    assert list(res.z.values) == [fusex.atomic_number(n) for n in ds.element.values]
    back = io.to_hyperspy(res)
    assert len(back) == 3 and back[0].data.shape == (20, 24)
    first = str(ds.element.values[0])
    assert back[0].metadata.Sample.elements == [first.split("_")[0]]
    assert back[0].metadata.Sample.xray_lines == [first]
    assert back[0].metadata.Signal.signal_type == "EDS_TEM"
    assert back[0].metadata.Acquisition_instrument.TEM.beam_energy == 200  # the input's metadata, kept
    np.testing.assert_array_equal(back[1].data, res.maps.values[1])


def test_from_hyperspy_integrates_a_spectrum_image_and_keeps_lazy_signals_lazy(sample):
    exspy = pytest.importorskip("exspy")
    cube, expected = _lines_cube(sample)
    si = exspy.signals.EDSTEMSpectrum(cube["data"])
    si.axes_manager[-1].scale, si.axes_manager[-1].offset, si.axes_manager[-1].units = 0.01, 0.2, "keV"
    si.metadata.set_item("Sample.xray_lines", ["Sr_La", "Ti_Ka", "O_Ka"])
    ds = io.from_hyperspy(si, hs.signals.Signal2D(sample.haadf))
    np.testing.assert_array_equal(ds.maps.values, expected)
    maps = [hs.signals.Signal2D(m).as_lazy() for m in sample.maps]
    lazy = io.from_hyperspy(maps, hs.signals.Signal2D(sample.haadf).as_lazy(), elements=list(sample.elements))
    assert lazy.maps.chunks is not None and lazy.haadf.chunks is not None
    np.testing.assert_array_equal(lazy.maps.values, sample.maps)


def test_to_hyperspy_keeps_axes(sample):
    ds = fusex.xarray.label(sample.haadf, sample.maps, sample.elements, pixel_size=0.05, unit="nm")
    res = fusex.fuse(ds, params=PARAMS)
    model = io.to_hyperspy(res, "haadf_model")
    x_axis = model.axes_manager.signal_axes[0]
    assert (x_axis.name, x_axis.units) == ("x", "nm") and x_axis.scale == pytest.approx(0.05)
    assert model.metadata.fusex.engine == res.attrs["engine"]
    assert model.metadata.Signal.signal_type == ""


def test_to_hyperspy_names_lines_of_integrated_maps(sample):
    cube, _ = _lines_cube(sample)
    res = fusex.fuse(io.from_rsciio([_image(sample.haadf, "HAADF"), cube]), params=PARAMS)
    back = io.to_hyperspy(res)
    assert [s.metadata.Sample.xray_lines for s in back] == [["Sr_La"], ["Ti_Ka"], ["O_Ka"]]
    assert back[2].metadata.Sample.elements == ["O"] and back[2].metadata.Signal.signal_type == "EDS_TEM"
    y_axis = back[0].axes_manager.signal_axes[1]
    assert (y_axis.name, y_axis.units) == ("y", "nm") and y_axis.scale == pytest.approx(1.0)


def _eels_cube(shape):
    energy = 400.0 + np.arange(300)  # eV, the O K edge at 532 eV inside
    spectra = 1e6 * energy ** (-2.0) * np.ones((*shape, 1))
    spectra[..., energy >= 532] += 5.0
    axes = [
        {"name": "y", "size": shape[0], "scale": 1.0, "units": "nm", "navigate": True},
        {"name": "x", "size": shape[1], "scale": 1.0, "units": "nm", "navigate": True},
        {"name": "Energy loss", "size": energy.size, "scale": 1.0, "offset": 400.0, "units": "eV", "navigate": False},
    ]
    return {
        "data": spectra,
        "axes": axes,
        "metadata": {"General": {"title": "EELS"}, "Signal": {"signal_type": "EELS"}},
    }


def test_eels_maps_in_the_file_are_read_as_given_and_a_lone_spectrum_image_is_integrated(sample):
    cube = _eels_cube(sample.haadf.shape)
    maps = [_image(m, f"{e}-EELS") for m, e in zip(sample.maps, sample.elements)]
    ds = io.from_rsciio([_image(sample.haadf, "HAADF"), cube, *maps])
    assert list(ds.element.values) == ["Sr-EELS", "Ti-EELS", "O-EELS"]
    np.testing.assert_array_equal(ds.maps.values, sample.maps)
    ds = io.from_rsciio([_image(sample.haadf, "HAADF"), cube], elements=["O"])
    assert ds.maps.shape == (1, *sample.haadf.shape) and ds.maps.attrs["signal_type"] == "EELS"
    np.testing.assert_allclose(ds.maps.values, ds.maps.values[0, 0, 0], rtol=1e-6)  # the same edge everywhere
    assert ds.maps.values[0, 0, 0] > 0
