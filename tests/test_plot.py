"""`fusex.plot`: figures of a FusionResult and of the labeled result Dataset, drawn with the Agg backend."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import fusex  # noqa: E402
from fusex import FusionParams, plot  # noqa: E402
from fusex.plot._scalebar import bar_length  # noqa: E402
from fusex.result import FusionResult  # noqa: E402
from fusex.xarray import label, result_to_dataset  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def make_result(maps, elements=None, *, poisson=None, scale=None):
    """A FusionResult with given maps (normalized units) and a made-up history, without running the solver."""
    maps = np.asarray(maps, dtype=np.float32)
    n_el = maps.shape[0]
    k = np.arange(6.0)
    history = pd.DataFrame(
        {
            "haadf": 10.0 / (1 + k),
            "poisson": 50.0 + k if poisson is None else poisson,
            "tv": 5.0 * 0.5**k,
            "step": [np.nan, 1.0, 1.0, 0.5, 0.5, 0.5],
            "backtracks": [0, 0, 0, 1, 0, 0],
        },
        index=pd.RangeIndex(6, name="iteration"),
    )
    history["total"] = 0.5 * history.haadf + 0.01 * history.poisson + 0.005 * history.tv
    history = history[["haadf", "poisson", "tv", "total", "step", "backtracks"]]
    return FusionResult(
        maps=maps,
        haadf_model=maps.sum(axis=0),
        haadf_background=np.zeros_like(maps[0]),
        history=history,
        params=FusionParams(lambda_haadf=0.5),
        n_iter=5,
        converged=False,
        stop_reason="n_iter",
        elements=tuple(elements or ["Sr", "Ti", "O"][:n_el]),
        z=None,
        weights=(1.0 / n_el,) * n_el,
        scale={"haadf": (0.0, 1.0), "maps": scale or ((0.0, 1.0),) * n_el},
    )


def make_dataset(result, raw, pixel_size=0.5, unit="nm"):
    """The labeled result Dataset of ``result``, as `fuse` would build it for labeled inputs."""
    haadf = result.haadf_model
    inputs = label(haadf, raw, result.elements, pixel_size=pixel_size, unit=unit)
    return result_to_dataset(result, inputs["haadf"], inputs["maps"])


def ramps(height=12, width=16):
    """Element A rises along columns (value = column), B along rows (value = row), C is their sum."""
    rows, cols = np.mgrid[0:height, 0:width].astype(float)
    return np.stack([cols, rows, rows + cols])


@pytest.fixture(scope="module")
def fused():
    """A real fusion of a small phantom: (sample, FusionResult, labeled Dataset in nm)."""
    s = fusex.datasets.phantom((32, 32), seed=0)
    params = FusionParams(n_iter=10)
    result = fusex.fuse(s.haadf, s.maps, elements=s.elements, params=params)
    ds = fusex.fuse(label(s.haadf, s.maps, s.elements, pixel_size=0.04, unit="nm"), params=params)
    return s, result, ds


def scale_bar_texts(ax):
    return [a.txt_label.get_text() for a in ax.artists if a.get_gid() == "fusex-scalebar"]


# compare_maps


def test_compare_maps_of_a_result_shares_one_colour_scale_per_element(fused):
    s, result, _ = fused
    fig = plot.compare_maps(result, s.maps, truth=s.truth)  # the call `fusex demo` makes
    assert isinstance(fig, Figure)
    axes = np.array(fig.axes[:9]).reshape(3, 3)
    for e, element in enumerate(s.elements):
        clims = {axes[r, e].images[0].get_clim() for r in range(3)}
        assert len(clims) == 1, clims  # raw, fused and truth of one element: one scale
        assert axes[0, e].get_title() == element
    assert [axes[r, 0].get_ylabel() for r in range(3)] == ["raw", "fused", "truth"]
    # the fused maps are shown in the units of the raw maps (normalization undone)
    np.testing.assert_allclose(axes[1, 0].images[0].get_array(), np.asarray(result.to_input_units())[0], rtol=1e-6)
    assert scale_bar_texts(axes[2, 0]) == ["5 px"]  # no coordinates: a pixel bar
    assert [len(ax.child_axes) for ax in axes[:, 0]] == [0, 0, 1]  # one colour bar, under the column


def test_compare_maps_of_a_dataset_defaults_raw_and_has_a_scale_bar_in_its_units(fused):
    s, _, ds = fused
    fig = plot.compare_maps(ds)
    axes = np.array(fig.axes[:6]).reshape(2, 3)
    np.testing.assert_array_equal(axes[0, 1].images[0].get_array(), s.maps[1])
    assert axes[0, 1].images[0].get_clim() == axes[1, 1].images[0].get_clim()
    texts = scale_bar_texts(axes[1, 0])
    assert len(texts) == 1 and texts[0].endswith(" nm"), texts
    extent = axes[1, 0].images[0].get_extent()  # drawn in the coordinates: 32 px of 0.04 nm
    np.testing.assert_allclose(extent, [-0.02, 1.26, 1.26, -0.02])
    assert scale_bar_texts(axes[0, 0]) == []  # one bar per column, in the bottom row
    assert not any(scale_bar_texts(ax) for ax in plot.compare_maps(ds, scalebar=False).axes)


@pytest.mark.parametrize(
    ("most", "unit", "text"),
    [
        (0.005, "µm", "5 nm"),
        (0.0052, "um", "5 nm"),
        (6000.0, "nm", "5 µm"),
        (12.0, "nm", "10 nm"),
        (50.0, "Å", "50 Å"),
        (0.3, "nm", "0.2 nm"),
        (2e4, "pm", "20 nm"),
        (0.3, "Å", "0.2 Å"),
        (3.0, "px", "2 px"),
        (0.3, "", "0.2"),
    ],
)
def test_scale_bars_take_the_prefix_that_gives_a_plain_number(most, unit, text):
    length, label_text = bar_length(most, unit)
    assert label_text == text
    assert 0 < length <= most * (1 + 1e-9)


def test_a_dataset_in_micrometres_gets_a_bar_in_nanometres(fused):
    s, _, _ = fused
    ds = fusex.fuse(label(s.haadf, s.maps, s.elements, pixel_size=4e-4, unit="µm"), params=FusionParams(n_iter=3))
    axes = np.array(plot.compare_maps(ds).axes[:6]).reshape(2, 3)
    assert scale_bar_texts(axes[1, 0]) == ["2 nm"]  # 32 px of 0.4 nm: a fifth is 2.56 nm


def test_compare_maps_draws_on_given_axes(fused):
    s, result, ds = fused
    fig, axes = plt.subplots(2, 3)
    before = plt.get_fignums()
    assert plot.compare_maps(result, s.maps, axes=axes, colorbar=False) is fig
    assert plot.compare_maps(ds, axes=axes.tolist()) is fig
    assert plt.get_fignums() == before
    assert all(len(ax.images) == 2 for ax in axes.flat)


def test_compare_maps_errors(fused):
    s, result, ds = fused
    with pytest.raises(ValueError, match="`raw` is required"):
        plot.compare_maps(result)
    with pytest.raises(ValueError, match="`raw` has shape"):
        plot.compare_maps(result, s.maps[:2])
    with pytest.raises(ValueError, match="`truth` has shape"):
        plot.compare_maps(ds, truth=s.truth[:, :5])
    with pytest.raises(ValueError, match=r"`axes` must have shape \(3, 3\)"):
        plot.compare_maps(ds, truth=s.truth, axes=plt.subplots(2, 3)[1])
    with pytest.raises(TypeError, match="FusionResult or the Dataset"):
        plot.compare_maps(s.maps, s.maps)


def test_compare_maps_takes_torch_data():
    torch = pytest.importorskip("torch")
    maps = ramps()
    result = make_result(torch.asarray(maps / 27, dtype=torch.float32), scale=((0.0, 27.0),) * 3)
    fig = plot.compare_maps(result, torch.asarray(maps), truth=torch.asarray(maps))
    np.testing.assert_allclose(fig.axes[4].images[0].get_array(), maps[1], rtol=1e-5, atol=1e-5)


# convergence


@pytest.mark.parametrize("kind", ["result", "dataset"])
def test_convergence_plots_weighted_terms_on_a_log_scale_and_the_step_on_a_twin(fused, kind):
    _, result, ds = fused
    fig = plot.convergence(result if kind == "result" else ds)
    assert isinstance(fig, Figure)
    ax, step_ax = fig.axes
    assert ax.get_yscale() == "log"
    lines = {line.get_label(): line for line in ax.lines}
    assert len(lines) == 4 and "total" in lines
    haadf = next(v for k, v in lines.items() if "HAADF" in k)
    np.testing.assert_allclose(haadf.get_ydata(), result.params.lambda_haadf * result.history["haadf"])
    np.testing.assert_allclose(step_ax.lines[0].get_ydata(), result.history["step"])
    assert not any("shifted" in k for k in lines)  # min-max normalized: the Poisson term is positive
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("step" in t for t in legend)


@pytest.mark.parametrize("kind", ["result", "dataset"])
def test_convergence_with_per_element_weights_shows_their_weighted_sum(kind):
    from fusex.datasets import phantom

    sample = phantom((20, 20), seed=1)
    params = FusionParams(n_iter=5, lambda_tv={"Sr": 0.01, "Ti": 0.002, "O": 0.02})
    if kind == "result":
        result = fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=params)
        history = result.history
    else:
        result = fusex.fuse(label(sample.haadf, sample.maps, sample.elements), params=params)
        history = {k: result[f"history_{k}"].values for k in ("haadf", "total")}
    lines = {line.get_label(): line for line in plot.convergence(result).axes[0].lines}
    assert len(lines) == 3
    both = next(v for k, v in lines.items() if "Poisson" in k and "TV" in k)
    np.testing.assert_allclose(both.get_ydata(), np.asarray(history["total"]) - np.asarray(history["haadf"]) / 3)


def test_convergence_of_one_item_of_a_labeled_batch_reads_its_per_item_weights():
    from fusex.datasets import phantom

    frames = [phantom((20, 20), seed=i) for i in range(2)]
    ds = label(frames[0].haadf, frames[0].maps, frames[0].elements)
    series = ds.expand_dims(frame=2).copy(
        data={"haadf": np.stack([f.haadf for f in frames]), "maps": np.stack([f.maps for f in frames])}
    )
    out = fusex.fuse(series, params=FusionParams(n_iter=4, lambda_chem=[0.01, 0.03]))
    one = out.isel(frame=1)
    lines = {line.get_label(): line for line in plot.convergence(one).axes[0].lines}
    poisson = next(v for k, v in lines.items() if "Poisson" in k)
    np.testing.assert_allclose(poisson.get_ydata(), 0.03 * one.history_poisson.values)
    with pytest.raises(ValueError, match="records no 'lambda_chem'"):
        plot.convergence(one.drop_vars("param_lambda_chem"))


def test_convergence_shifts_a_negative_poisson_term_and_says_so():
    poisson = np.array([-5.0, -8.0, -9.0, -9.5, -9.75, -9.8])
    fig = plot.convergence(make_result(ramps(), poisson=poisson))
    ax = fig.axes[0]
    line = next(line for line in ax.lines if "Poisson" in line.get_label())
    assert "shifted" in line.get_label()
    y = np.asarray(line.get_ydata())
    np.testing.assert_allclose(y[:-1], FusionParams().lambda_chem * (poisson[:-1] - poisson.min()))
    assert np.isnan(y[-1])  # its minimum, 0, has no place on a log axis
    assert "backtracked" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_convergence_draws_on_given_axes(fused):
    fig, ax = plt.subplots()
    before = plt.get_fignums()
    assert plot.convergence(fused[1], ax=ax) is fig
    assert plt.get_fignums() == before


# rgb_overlay


def test_rgb_overlay_channels_follow_the_elements_in_order():
    maps = ramps()
    result = make_result(maps / maps.max(axis=(1, 2), keepdims=True), elements=["A", "B", "C"])
    fig = plot.rgb_overlay(result, ["B", "A"], percentiles=(0, 100))
    image = fig.axes[0].images[0].get_array()
    assert image.shape == (12, 16, 3)
    assert image.min() >= 0 and image.max() <= 1
    np.testing.assert_allclose(image[..., 0], maps[1] / 11, atol=1e-6)  # B (rows) in red
    np.testing.assert_allclose(image[..., 1], maps[0] / 15, atol=1e-6)  # A (columns) in green
    assert np.all(image[..., 2] == 0)  # blue unused
    legend = fig.axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["B", "A"]
    colours = [tuple(h.get_facecolor()[:3]) for h in legend.legend_handles]
    assert colours == [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0)]


def test_rgb_overlay_scales_each_channel_robustly_and_defaults_to_the_first_three(fused):
    _, _, ds = fused
    four = make_result(np.random.default_rng(0).random((4, 20, 20)), elements=["A", "B", "C", "D"])
    image = plot.rgb_overlay(four).axes[0].images[0].get_array()
    for c in range(3):
        assert image[..., c].min() == 0 and image[..., c].max() == 1
        assert 0.01 <= np.mean(image[..., c] == 1) <= 0.02  # the top 1 % saturates
    fig = plot.rgb_overlay(ds)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["Sr", "Ti", "O"]
    assert scale_bar_texts(fig.axes[0])[0].endswith("nm")


def test_rgb_overlay_errors_and_given_axes():
    result = make_result(np.random.default_rng(1).random((4, 8, 8)), elements=["A", "B", "C", "D"])
    with pytest.raises(ValueError, match="at most 3"):
        plot.rgb_overlay(result, ["A", "B", "C", "D"])
    with pytest.raises(ValueError, match=r"unknown element\(s\) \['Fe'\]"):
        plot.rgb_overlay(result, ["A", "Fe"])
    with pytest.raises(ValueError, match="distinct"):
        plot.rgb_overlay(result, ["A", "A"])
    fig, ax = plt.subplots()
    before = plt.get_fignums()
    assert plot.rgb_overlay(result, "C", ax=ax) is fig
    assert plt.get_fignums() == before


# line_profile


def profile(fig, label):
    line = next(line for line in fig.axes[0].lines if line.get_label() == label)
    return np.asarray(line.get_xdata()), np.asarray(line.get_ydata())


def test_line_profile_samples_a_ramp_in_pixels():
    result = make_result(ramps(), elements=["A", "B", "C"])
    fig = plot.line_profile(result, (5, 0), (5, 10))
    x, y = profile(fig, "A fused")
    np.testing.assert_allclose(x, np.arange(11.0))
    np.testing.assert_allclose(y, np.arange(11.0), atol=1e-5)
    np.testing.assert_allclose(profile(fig, "B fused")[1], 5.0, atol=1e-5)
    assert fig.axes[0].get_xlabel() == "distance (px)"
    x, y = profile(plot.line_profile(result, (0, 0), (3, 4), elements=["C"]), "C fused")  # a 3-4-5 diagonal
    np.testing.assert_allclose(x, np.arange(6.0))
    np.testing.assert_allclose(y, 7 * np.arange(6.0) / 5, atol=1e-5)


@pytest.mark.parametrize("width", [2, 3, 5])
def test_line_profile_averages_width_lines_across(width):
    result = make_result(ramps(), elements=["A", "B", "C"])
    fig = plot.line_profile(result, (5, 2), (5, 12), elements=["B"], width=width)
    np.testing.assert_allclose(profile(fig, "B fused")[1], 5.0, atol=1e-5)  # rows 5 -+ offsets average to 5


def test_line_profile_of_a_dataset_takes_coordinates_and_shows_raw_dashed():
    maps = ramps()
    result = make_result(maps / 27, elements=["A", "B", "C"], scale=((0.0, 27.0),) * 3)
    ds = make_dataset(result, maps + 1, pixel_size=0.5, unit="nm")
    fig = plot.line_profile(ds, (1.0, 0.0), (1.0, 5.0), elements=["A"])  # row 2, columns 0..10
    x, y = profile(fig, "A fused")
    np.testing.assert_allclose(x, np.linspace(0, 5, 11))
    np.testing.assert_allclose(y, np.arange(11.0), atol=1e-4)  # in the input maps' units
    _, yr = profile(fig, "A raw")
    np.testing.assert_allclose(yr, np.arange(11.0) + 1)
    raw_line = next(line for line in fig.axes[0].lines if line.get_label() == "A raw")
    assert raw_line.get_linestyle() == "--"
    assert fig.axes[0].get_xlabel() == "distance (nm)"


def test_line_profile_draws_on_given_axes_and_marks_the_line_on_images(fused):
    s, result, ds = fused
    images = plot.compare_maps(ds)
    fig, ax = plt.subplots()
    before = plt.get_fignums()
    image_axes = np.array(images.axes[:6]).reshape(2, 3)
    limits = image_axes[0, 0].get_xlim(), image_axes[0, 0].get_ylim()
    assert plot.line_profile(ds, (0.4, 0.1), (0.4, 1.1), ax=ax, image_ax=image_axes[0]) is fig
    assert plt.get_fignums() == before
    for iax in image_axes[0]:
        np.testing.assert_allclose(iax.lines[0].get_xydata(), [[0.1, 0.4], [1.1, 0.4]])
    assert (image_axes[0, 0].get_xlim(), image_axes[0, 0].get_ylim()) == limits
    assert len(image_axes[1, 0].lines) == 0
    assert len(ax.lines) == 6  # fused and raw for three elements
    one = plot.line_profile(result, (3, 3), (20, 25), raw=s.maps, image_ax=image_axes[1, 0])
    assert len(image_axes[1, 0].lines) == 2 and one is not images


def test_line_profile_errors():
    result = make_result(ramps(), elements=["A", "B", "C"])
    with pytest.raises(ValueError, match="same point"):
        plot.line_profile(result, (2, 2), (2, 2))
    with pytest.raises(ValueError, match="`end` lies outside"):
        plot.line_profile(result, (2, 2), (2, 40))
    with pytest.raises(ValueError, match="`width` must be a positive integer"):
        plot.line_profile(result, (2, 2), (2, 8), width=0)
    with pytest.raises(ValueError, match="unknown element"):
        plot.line_profile(result, (2, 2), (2, 8), elements=["Fe"])


# all of them


def test_no_function_modifies_its_inputs_and_all_render(fused, tmp_path):
    s, result, ds = fused
    maps, raw, truth, ds_copy = np.copy(result.maps), s.maps.copy(), s.truth.copy(), ds.copy(deep=True)
    history = result.history.copy()
    figures = [
        plot.compare_maps(result, s.maps, truth=s.truth),
        plot.compare_maps(ds, truth=s.truth),
        plot.convergence(result),
        plot.convergence(ds),
        plot.rgb_overlay(result),
        plot.rgb_overlay(ds),
        plot.line_profile(result, (4, 0), (4, 31), raw=s.maps, width=3),
        plot.line_profile(ds, (0.2, 0.0), (1.0, 1.2)),
    ]
    for i, fig in enumerate(figures):
        fig.savefig(tmp_path / f"{i}.png")
        assert (tmp_path / f"{i}.png").stat().st_size > 1000
    np.testing.assert_array_equal(result.maps, maps)
    np.testing.assert_array_equal(s.maps, raw)
    np.testing.assert_array_equal(s.truth, truth)
    pd.testing.assert_frame_equal(result.history, history)
    xr.testing.assert_identical(ds, ds_copy)


def test_missing_matplotlib_names_the_extra(monkeypatch, fused):
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r'pip install "fusex\[plot\]"'):
        plot.convergence(fused[1])
