"""`fuse` end to end: quality on phantoms, backends, devices, no mutation."""

import numpy as np
import pytest
from array_api_compat import device

import fusex
from fusex import FusionParams
from fusex._eager import RunOptions, fuse_arrays
from fusex.datasets import nrmse, phantom


@pytest.mark.parametrize(
    ("lattice", "dose", "seed"), [("perovskite", 2.0, 21), ("perovskite", 4.0, 22), ("rocksalt", 3.0, 23)]
)
def test_fusion_beats_raw_maps_at_low_dose(lattice, dose, seed):
    """With the default (recommended) parameters every element improves by >= 5 %, on average by >= 20 %."""
    sample = phantom((96, 96), lattice=lattice, dose=dose, seed=seed)
    res = fusex.fuse(sample.haadf, sample.maps, elements=sample.elements)
    raw = nrmse(sample.maps, sample.truth)
    fused = nrmse(res.maps, sample.truth)
    assert np.all(fused < 0.95 * raw), (raw, fused)
    assert np.mean(fused / raw) < 0.8, (raw, fused)


def test_result_carries_provenance():
    sample = phantom((32, 32), seed=1)
    res = fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=FusionParams(n_iter=5))
    assert res.elements == ("Sr", "Ti", "O") and res.z == (38, 22, 8)
    w = np.array([38, 22, 8], dtype=float) ** 1.7
    np.testing.assert_allclose(res.weights, w / w.sum())
    assert res.haadf_model.shape == (32, 32)
    assert "3 maps" in res.summary()
    lo, span = res.scale["maps"][0]
    assert lo == sample.maps[0].min() and span == np.ptp(sample.maps[0])
    np.testing.assert_allclose(res.to_input_units()[0], res.maps[0] * span + lo, rtol=1e-6)


def test_maps_may_be_a_mapping_or_a_list():
    sample = phantom((24, 24), seed=2)
    params = FusionParams(n_iter=4)
    as_array = fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=params)
    as_dict = fusex.fuse(sample.haadf, dict(zip(sample.elements, sample.maps)), params=params)
    as_list = fusex.fuse(sample.haadf, list(sample.maps), elements=sample.elements, params=params)
    assert as_dict.elements == sample.elements
    np.testing.assert_array_equal(as_array.maps, as_dict.maps)
    np.testing.assert_array_equal(as_array.maps, as_list.maps)


def test_z_gives_the_same_answer_as_symbols():
    sample = phantom((24, 24), seed=3)
    params = FusionParams(n_iter=4)
    by_symbol = fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=params)
    by_z = fusex.fuse(sample.haadf, sample.maps, z=[38, 22, 8], params=params)
    np.testing.assert_array_equal(by_symbol.maps, by_z.maps)
    assert by_z.elements == ("map0", "map1", "map2")


def test_unweighted_model_needs_no_elements():
    sample = phantom((24, 24), seed=4)
    res = fusex.fuse(sample.haadf, sample.maps, params=FusionParams(n_iter=3, haadf_weights="none"))
    assert res.z is None and res.weights == (1.0, 1.0, 1.0)


def test_inputs_are_never_modified(backend):
    sample = phantom((24, 24), seed=5)
    haadf, maps = backend.asarray(sample.haadf), backend.asarray(sample.maps)
    fusex.fuse(haadf, maps, elements=sample.elements, params=FusionParams(n_iter=3))
    fusex.fuse(haadf, maps, elements=sample.elements, params=FusionParams.published(n_iter=3))
    np.testing.assert_array_equal(backend.numpy(haadf), sample.haadf)
    np.testing.assert_array_equal(backend.numpy(maps), sample.maps)


def test_backends_agree_and_results_stay_on_the_input_device(backend):
    sample = phantom((32, 32), seed=6)
    params = FusionParams(n_iter=10, tol=0.0)
    haadf, maps = backend.asarray(sample.haadf), backend.asarray(sample.maps)
    res = fusex.fuse(haadf, maps, elements=sample.elements, params=params)
    ref = fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=params)
    for out in (res.maps, res.haadf_model):
        assert type(out) is type(maps) and device(out) == device(maps)
    assert res.maps.dtype == maps.dtype
    np.testing.assert_allclose(backend.numpy(res.maps), ref.maps, atol=2e-4)
    np.testing.assert_allclose(res.history.total, ref.history.total, rtol=1e-4)


def test_float64_backends_agree_tightly(backend):
    sample = phantom((24, 24), seed=7)
    params = FusionParams(n_iter=10, tol=0.0)
    h64, m64 = sample.haadf.astype(np.float64), sample.maps.astype(np.float64)
    res = fusex.fuse(backend.asarray(h64), backend.asarray(m64), elements=sample.elements, params=params)
    ref = fusex.fuse(h64, m64, elements=sample.elements, params=params)
    np.testing.assert_allclose(backend.numpy(res.maps), ref.maps, atol=1e-10)


def test_backend_argument_converts_and_returns_input_kind():
    torch = pytest.importorskip("torch")
    sample = phantom((24, 24), seed=8)
    params = FusionParams(n_iter=5, tol=0.0)
    seen = []
    res = fusex.fuse(
        sample.haadf,
        sample.maps,
        elements=sample.elements,
        params=params,
        backend="torch",
        callback=lambda k, s: seen.append(type(s.maps)),
    )
    ref = fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=params)
    assert seen[0] is torch.Tensor
    assert isinstance(res.maps, np.ndarray)
    np.testing.assert_allclose(res.maps, ref.maps, atol=1e-5)


def test_integer_counts_are_accepted_as_float32():
    sample = phantom((24, 24), seed=9)
    counts = sample.maps.astype(np.int64)
    res = fusex.fuse(sample.haadf, counts, elements=sample.elements, params=FusionParams(n_iter=3))
    assert res.maps.dtype == np.float32
    assert counts.dtype == np.int64


def test_tune_refuses_elements_that_contradict_a_mappings_keys_up_front():
    sample = phantom((16, 16), seed=5)
    by_name = dict(zip(sample.elements, sample.maps))
    with pytest.raises(ValueError, match=r"`elements` \['Sr', 'Ti', 'Fe'\] contradicts the keys of `maps`"):
        fusex.tune(sample.haadf, by_name, elements=["Sr", "Ti", "Fe"])
    with pytest.raises(ValueError, match=r"`elements` names \['Sr'\] more than once"):
        fusex.tune(sample.haadf, sample.maps, elements=["Sr", "Sr", "O"])


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_tv_denoise_refuses_masked_arrays_and_matrices():
    image = phantom((16, 16), seed=6).haadf
    with pytest.raises(TypeError, match=r"`x` is a NumPy masked array.*np.ma.filled\(x, value\)"):
        fusex.tv_denoise(np.ma.masked_greater(image, 0.5), 0.1)
    with pytest.raises(TypeError, match=r"`x` is an np.matrix.*np.asarray\(x\)"):
        fusex.tv_denoise(np.asmatrix(image), 0.1)


@pytest.mark.parametrize("route", ["arrays", "labeled", "auto"])
def test_run_options_are_checked_once_before_any_route(route):
    sample = phantom((16, 16), seed=8)
    inputs = (sample.haadf, sample.maps)
    if route == "labeled":
        inputs = (fusex.labeled.label(sample.haadf, sample.maps, sample.elements),)
    params = "auto" if route == "auto" else FusionParams(n_iter=2)
    with pytest.raises(ValueError, match="`on_divergence` must be 'raise' or 'mark', got 'skip'"):
        fusex.fuse(*inputs, elements=sample.elements, params=params, on_divergence="skip")
    with pytest.raises(TypeError, match="`callback` must be callable"):
        fusex.fuse(*inputs, elements=sample.elements, params=params, callback="print")
    with pytest.raises(TypeError, match="`engine` must be an engine name"):
        fusex.fuse(*inputs, elements=sample.elements, params=params, engine=3)


def test_labeled_input_is_fused_without_fuse_calling_itself(monkeypatch):
    sample = phantom((16, 16), seed=9)
    calls = []
    original = fusex.api.fuse
    monkeypatch.setattr(fusex.api, "fuse", lambda *a, **k: calls.append(a) or original(*a, **k))
    ds = original(fusex.labeled.label(sample.haadf, sample.maps, sample.elements), params=FusionParams(n_iter=2))
    assert calls == [] and int(ds.attrs["iterations_run"]) == 2


def test_fuse_arrays_takes_the_run_options_fuse_checked():
    sample = phantom((16, 16), seed=10)
    params = FusionParams(n_iter=3, tol=0.0)
    seen = []
    run = RunOptions(callback=lambda k, state: seen.append(k))
    res = fuse_arrays(sample.haadf, sample.maps, elements=sample.elements, params=params, run=run)
    ref = fusex.fuse(sample.haadf, sample.maps, elements=sample.elements, params=params)
    assert seen == [1, 2, 3] and isinstance(res, fusex.FusionResult)
    np.testing.assert_array_equal(res.maps, ref.maps)
    with pytest.raises(TypeError, match="`maps` is missing"):
        fuse_arrays(sample.haadf, None, run=run)
