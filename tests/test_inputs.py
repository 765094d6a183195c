"""Every bad input raises an error that names the argument and the fix."""

import numpy as np
import pytest

import fusex
from fusex import FusionParams
from fusex.datasets import phantom

SAMPLE = phantom((16, 16), seed=0)
OK = {"haadf": SAMPLE.haadf, "maps": SAMPLE.maps, "elements": SAMPLE.elements}


def _fuse(**changes):
    kwargs = {**OK, "params": FusionParams(n_iter=2), **changes}
    return fusex.fuse(kwargs.pop("haadf"), kwargs.pop("maps"), **kwargs)


def _with(array, index, value):
    out = array.copy()
    out[index] = value
    return out


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"haadf": SAMPLE.haadf[:15]}, ValueError, r"`haadf` has shape \(15, 16\) but each map .* \(16, 16\)"),
        ({"haadf": SAMPLE.maps}, ValueError, r"`haadf` has batch shape \(3,\).*one HAADF image per set of maps"),
        ({"maps": SAMPLE.maps[0]}, ValueError, r"`maps` must have shape \(element, H, W\)"),
        ({"maps": SAMPLE.maps[:0]}, ValueError, "too small"),
        ({"elements": ["Sr", "Ti"]}, ValueError, "`elements` has 2 symbols but `maps` has 3 maps"),
        ({"elements": "SrTiO"}, TypeError, "`elements` must be a list of symbols"),
        ({"elements": ["Sr", "Tx", "O"]}, ValueError, "unknown element symbol 'Tx'"),
        ({"elements": None, "z": [38, 22]}, ValueError, "`z` has 2 atomic numbers but `maps` has 3"),
        ({"elements": None, "z": [38, 22, 200]}, ValueError, "between 1 and 118"),
        ({"elements": None, "z": [38, 22, 8.5]}, TypeError, "integer atomic numbers"),
        ({"elements": None}, ValueError, "needs atomic numbers: pass `elements=`"),
        ({"haadf": _with(SAMPLE.haadf, (3, 4), np.nan)}, ValueError, "`haadf` contains 1 NaN or infinite"),
        ({"maps": _with(SAMPLE.maps, (1, 2, 2), np.inf)}, ValueError, "`maps` contains 1 NaN or infinite"),
        ({"maps": _with(SAMPLE.maps, (0, 0, 0), -1.0)}, ValueError, r"`maps` contains negative values \(minimum -1\)"),
        (
            {"maps": _with(SAMPLE.maps, 1, 2.0), "params": FusionParams(n_iter=2, normalize="minmax")},
            ValueError,
            r"map 'Ti' of `maps` is constant .*normalize='none'",
        ),
        ({"haadf": np.ones((16, 16))}, ValueError, r"`haadf` is constant"),
        ({"maps": SAMPLE.maps.astype(bool)}, TypeError, "`maps` has dtype bool"),
        ({"haadf": SAMPLE.haadf.astype(np.complex64)}, TypeError, "`haadf` has dtype complex64"),
        ({"haadf": SAMPLE.haadf.tolist()}, TypeError, "`haadf` is a list, not an array"),
        ({"maps": {}}, ValueError, "`maps` is an empty mapping"),
        ({"maps": [SAMPLE.maps[0], SAMPLE.maps[1][:8]]}, ValueError, "different shapes"),
        ({"params": {"lambda_tv": 1}}, TypeError, "`params` must be a FusionParams"),
        ({"backend": "jax"}, ValueError, "unknown `backend` 'jax'"),
        ({"device": "cuda"}, ValueError, "runs on the CPU only"),
    ],
)
def test_bad_input_is_named(changes, error, match):
    with pytest.raises(error, match=match):
        _fuse(**changes)


@pytest.mark.parametrize("normalize", ["none", "scale"])
def test_constant_maps_are_fine_without_minmax_normalization(normalize):
    maps = _with(SAMPLE.maps, 1, 2.0)
    res = _fuse(maps=maps, params=FusionParams(n_iter=2, normalize=normalize))
    assert np.all(np.isfinite(res.maps))


def test_mixed_namespaces_are_refused():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"`haadf` is a numpy array but `maps` is a torch array.*one library"):
        _fuse(maps=torch.asarray(SAMPLE.maps))


def test_mixed_devices_are_refused():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    with pytest.raises(ValueError, match="`haadf` is on device cpu but `maps` is on device cuda"):
        _fuse(haadf=torch.asarray(SAMPLE.haadf), maps=torch.asarray(SAMPLE.maps, device="cuda"))


def test_cuda_without_gpu_says_what_to_do():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(fusex.BackendUnavailableError, match="torch sees no CUDA GPU"):
        _fuse(backend="torch", device="cuda")


def test_missing_backend_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_cupy(name, *args, **kwargs):
        if name == "cupy":
            raise ImportError("no cupy")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cupy)
    monkeypatch.delitem(__import__("sys").modules, "cupy", raising=False)
    with pytest.raises(fusex.BackendUnavailableError, match=r'pip install "fusex\[cupy\]"'):
        _fuse(backend="cupy")


def test_big_endian_float64_stays_float64():
    res = _fuse(haadf=SAMPLE.haadf.astype(">f8"), maps=SAMPLE.maps.astype(">f8"))
    assert res.maps.dtype == np.float64


def test_labels_that_are_not_symbols_work_without_z_weights():
    maps = {"map_a": SAMPLE.maps[0], "map_b": SAMPLE.maps[1]}
    res = fusex.fuse(SAMPLE.haadf, maps, params=FusionParams(n_iter=2, haadf_weights="none"))
    assert res.elements == ("map_a", "map_b") and res.z is None
    with pytest.raises(ValueError, match="needs atomic numbers"):
        fusex.fuse(SAMPLE.haadf, maps, params=FusionParams(n_iter=2))


def test_torch_results_carry_no_autograd_graph():
    torch = pytest.importorskip("torch")
    haadf = torch.tensor(SAMPLE.haadf, requires_grad=True)
    res = fusex.fuse(haadf, torch.tensor(SAMPLE.maps), elements=SAMPLE.elements, params=FusionParams(n_iter=2))
    assert not res.maps.requires_grad and res.maps.grad_fn is None


def _by_name():
    return dict(zip(SAMPLE.elements, SAMPLE.maps))  # Sr, Ti, O


def test_elements_that_contradict_a_mappings_keys_are_refused_naming_both():
    with pytest.raises(
        ValueError, match=r"`elements` \['Sr', 'Ti', 'Fe'\] contradicts the keys of `maps` \['Sr', 'Ti', 'O'\]"
    ):
        _fuse(maps=_by_name(), elements=["Sr", "Ti", "Fe"])
    with pytest.raises(ValueError, match=r"`elements` \['Sr', 'Ti'\] contradicts the keys"):
        _fuse(maps=_by_name(), elements=["Sr", "Ti"])


def test_elements_in_another_order_take_a_mappings_maps_by_name():
    order = ["O", "Sr", "Ti"]
    res = _fuse(maps=_by_name(), elements=order)
    ref = _fuse(maps=np.stack([_by_name()[e] for e in order]), elements=order)
    assert res.elements == tuple(order) and res.z == (8, 38, 22)
    np.testing.assert_array_equal(res.maps, ref.maps)
    assert _fuse(maps=_by_name(), elements=list(SAMPLE.elements)).elements == SAMPLE.elements


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"elements": ["Sr", "Sr", "O"]}, r"`elements` names \['Sr'\] more than once"),
        ({"elements": ["O", "O", "O"], "z": [8, 8, 8]}, r"`elements` names \['O'\] more than once"),
        ({"maps": {1: SAMPLE.maps[0], "1": SAMPLE.maps[1]}, "elements": None}, r"the keys of `maps` names \['1'\]"),
        ({"maps": _by_name(), "elements": ["Sr", "Sr", "O"]}, r"`elements` names \['Sr'\] more than once"),
    ],
)
def test_repeated_element_names_are_refused(changes, match):
    with pytest.raises(ValueError, match=match):
        _fuse(**changes)


def test_elements_must_be_names():
    with pytest.raises(TypeError, match=r"`elements` must hold names .*got 38; give atomic numbers with `z=`"):
        _fuse(elements=[38, 22, 8])


@pytest.mark.parametrize("z", [[True, 22, 8], [38, np.True_, 8], np.array([True, True, False])])
def test_booleans_are_not_atomic_numbers(z):
    with pytest.raises(TypeError, match=r"`z` must hold integer atomic numbers \(not booleans\)"):
        _fuse(elements=None, z=z)


def test_numpy_integers_are_atomic_numbers():
    assert _fuse(elements=None, z=np.array([38, 22, 8])).z == (38, 22, 8)
    assert _fuse(elements=None, z=[np.int64(38), np.uint8(22), 8]).z == (38, 22, 8)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        (
            lambda: {"haadf": np.ma.masked_greater(SAMPLE.haadf, 0.5)},
            r"`haadf` is a NumPy masked array.*np.ma.filled\(haadf, value\).*saturated=haadf.mask",
        ),
        (lambda: {"maps": np.ma.masked_array(SAMPLE.maps)}, r"`maps` is a NumPy masked array.*np.ma.getdata\(maps\)"),
        (lambda: {"maps": [np.ma.masked_array(m) for m in SAMPLE.maps]}, r"`maps\[0\]` is a NumPy masked array"),
        (lambda: {"maps": {"Sr": np.ma.masked_array(SAMPLE.maps[0])}, "elements": None}, r"`maps\[0\]` is a NumPy"),
        (lambda: {"haadf": np.asmatrix(SAMPLE.haadf)}, r"`haadf` is an np.matrix.*pass np.asarray\(haadf\)"),
        (lambda: {"maps": [np.asmatrix(m) for m in SAMPLE.maps]}, r"`maps\[0\]` is an np.matrix"),
    ],
)
@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_masked_arrays_and_matrices_are_refused_with_what_to_pass(changes, match):
    with pytest.raises(TypeError, match=match):
        _fuse(**changes())
