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


def test_read_dispatches_single_signal_files(tmp_path, sample):
    path = tmp_path / "haadf.hspy"
    _signal(sample.haadf, "HAADF").save(path)
    with pytest.raises(ValueError, match="only a HAADF image"):
        io.read(path)


def test_from_rsciio_errors(sample):
    images = [
        {"data": sample.haadf, "axes": [{"size": 20}, {"size": 24}], "metadata": {"General": {"title": t}}}
        for t in ("A", "B")
    ]
    with pytest.raises(ValueError, match="which signal is the HAADF"):
        io.from_rsciio(images)
    with pytest.raises(ValueError, match="no signal titled"):
        io.from_rsciio(images, haadf="A", elements=["C"])
    cube = {
        "data": np.zeros((2, 3, 4)),
        "axes": [{"size": 2}, {"size": 3}, {"size": 4}],
        "metadata": {"General": {"title": "EDS"}},
    }
    with pytest.raises(ValueError, match="Spectrum images must first be turned into element maps"):
        io.from_rsciio([images[0], cube], haadf="A")


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
    res = fusex.fuse(ds, params=PARAMS)
    assert list(res.z.values) == [fusex.atomic_number(n) for n in ds.element.values]
    back = io.to_hyperspy(res)
    assert len(back) == 3 and back[0].data.shape == (20, 24)
    assert back[0].metadata.Sample.elements == [str(ds.element.values[0]).split("_")[0]]
    np.testing.assert_array_equal(back[1].data, res.maps.values[1])


def test_to_hyperspy_keeps_axes(sample):
    ds = fusex.xarray.label(sample.haadf, sample.maps, sample.elements, pixel_size=0.05, unit="nm")
    res = fusex.fuse(ds, params=PARAMS)
    model = io.to_hyperspy(res, "haadf_model")
    x_axis = model.axes_manager.signal_axes[0]
    assert (x_axis.name, x_axis.units) == ("x", "nm") and x_axis.scale == pytest.approx(0.05)
    assert model.metadata.fusex.engine == res.attrs["engine"]


def test_repeated_titles_and_axis_names_are_handled(sample):
    def image(title, names=("y", "x")):
        axes = [{"name": n, "size": s} for n, s in zip(names, sample.haadf.shape)]
        return {"data": sample.haadf, "axes": axes, "metadata": {"General": {"title": title}}}

    with pytest.raises(ValueError, match=r"several signals are titled \['Sr'\]"):
        io.from_rsciio([image("HAADF"), image("Sr"), image("Sr")])
    ds = io.from_rsciio([image("HAADF", ("x", None)), image("Sr", ("x", None))])
    assert ds.haadf.dims == ("x", "x_1")
