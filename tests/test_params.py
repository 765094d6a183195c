import dataclasses
import math

import numpy as np
import pytest

from fusex import ExponentialDecay, FusionParams
from fusex.params import PerElement


def test_published_defaults():
    p = FusionParams.published()
    assert (p.gamma, p.n_iter, p.lambda_haadf, p.lambda_chem, p.lambda_tv) == (1.6, 50, None, 0.005, 0.1)
    assert (p.n_tv, p.tv_method, p.eps, p.haadf_weights, p.normalize, p.step) == (14, "gp", 0.1, "none", "minmax", 1.0)
    assert p.tol == 0.0 and not p.backtracking
    assert FusionParams().backtracking
    assert FusionParams.published(n_iter=5).n_iter == 5


def test_params_are_frozen_and_replace_validates():
    p = FusionParams()
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.gamma = 2.0
    assert p.replace(gamma=2.0).gamma == 2.0 and p.gamma == 1.7
    with pytest.raises(ValueError, match="gamma"):
        p.replace(gamma=0.5)


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("gamma", 0.9, ValueError),
        ("gamma", math.nan, TypeError),
        ("lambda_chem", -1.0, ValueError),
        ("lambda_tv", "big", TypeError),
        ("eps", 0.0, ValueError),
        ("n_iter", 0, ValueError),
        ("n_tv", 2.5, ValueError),
        ("tv_method", "chambolle", ValueError),
        ("normalize", "zscore", ValueError),
        ("haadf_weights", "z2", ValueError),
        ("haadf_weights", [1.0, -2.0], ValueError),
        ("step", 0.0, ValueError),
        ("step", "fast", TypeError),
        ("backtrack_factor", 1.0, ValueError),
        ("tol", -1e-3, ValueError),
    ],
)
def test_bad_params_name_the_field(field, value, error):
    with pytest.raises(error, match=f"FusionParams.{field}"):
        FusionParams(**{field: value})


def test_explicit_weights_become_a_tuple():
    assert FusionParams(haadf_weights=[1, 2]).haadf_weights == (1.0, 2.0)


def test_to_dict_is_plain():
    d = FusionParams(step=ExponentialDecay(1.0, 0.1)).to_dict()
    assert d["step"].startswith("ExponentialDecay(") and d["gamma"] == 1.7


def test_per_item_fields_must_broadcast_together():
    assert FusionParams(lambda_tv=[0.1, 0.2], gamma=[[1.5], [1.7], [1.9]]).batch_shape == (3, 2)
    with pytest.raises(ValueError, match=r"must broadcast.*gamma \(3,\), lambda_tv \(2,\)"):
        FusionParams(lambda_tv=[0.1, 0.2], gamma=[1.5, 1.7, 1.9])


def test_per_element_weights_are_a_hashable_mapping():
    p = FusionParams(lambda_tv={"Sr": 0.01, "O": 0.02}, lambda_chem={"Sr": [0.01, 0.02], "O": 0.005})
    assert isinstance(p.lambda_tv, PerElement) and dict(p.lambda_tv) == {"Sr": 0.01, "O": 0.02}
    assert p == FusionParams(lambda_tv={"O": 0.02, "Sr": 0.01}, lambda_chem={"Sr": (0.01, 0.02), "O": 0.005})
    assert hash(p) == hash(p.replace())
    assert p.batch_shape == (2,)
    np.testing.assert_array_equal(p.map_values("lambda_chem", (2,), ["O", "Sr"]), [[0.005, 0.01], [0.005, 0.02]])
    np.testing.assert_array_equal(p.map_values("lambda_tv", (2,), ["Sr", "O"]), [[0.01, 0.02], [0.01, 0.02]])
    assert p.to_dict()["lambda_tv"] == {"Sr": 0.01, "O": 0.02}
    one = p.at((1,), (2,))
    assert dict(one.lambda_chem) == {"Sr": 0.02, "O": 0.005} and one.batch_shape == ()


@pytest.mark.parametrize(
    ("field", "value", "error", "match"),
    [
        ("lambda_tv", {"Sr": -0.1}, ValueError, "must be >= 0"),
        ("lambda_tv", {}, TypeError, "non-empty mapping"),
        ("lambda_chem", {"Sr": "big"}, TypeError, "finite number"),
        ("gamma", {"Sr": 1.7}, TypeError, "FusionParams.gamma must be a number"),
        ("lambda_tv", {"Sr": [0.1, 0.2], "O": [0.1, 0.2, 0.3]}, ValueError, "per-element values"),
    ],
)
def test_bad_per_element_weights_name_the_field(field, value, error, match):
    with pytest.raises(error, match=match):
        FusionParams(**{field: value})


def test_per_element_weights_must_name_every_map():
    p = FusionParams(lambda_tv={"Sr": 0.01, "Ti": 0.01})
    p.check_elements(["Ti", "Sr"])
    with pytest.raises(ValueError, match=r"lambda_tv gives values for \['Sr', 'Ti'\], but the maps are"):
        p.check_elements(["Sr", "Ti", "O"])


@pytest.mark.parametrize("value", ["False", "no", 1, 0, None, 1.0])
def test_a_boolean_field_takes_only_booleans(value):
    with pytest.raises(TypeError, match=r"FusionParams.backtracking must be True or False"):
        FusionParams(backtracking=value)


def test_numpy_booleans_are_booleans_and_stored_as_python_ones():
    p = FusionParams(backtracking=np.False_)
    assert p.backtracking is False
    assert FusionParams(backtracking=np.True_).backtracking is True


def test_numpy_scalars_are_numbers_stored_as_python_numbers():
    p = FusionParams(
        n_iter=np.int64(3),
        n_tv=np.int32(4),
        max_backtracks=np.uint8(5),
        divergence_patience=np.int16(0),
        step=np.float32(0.5),
        tol=np.float32(0.25),
        backtrack_factor=np.float64(0.25),
        gamma=np.float32(1.5),
        lambda_tv=[np.float32(0.5), 0.25],
        haadf_weights=np.array([1, 2], dtype=np.float32),
    )
    assert (p.n_iter, p.n_tv, p.max_backtracks, p.divergence_patience) == (3, 4, 5, 0)
    assert all(type(getattr(p, n)) is int for n in ("n_iter", "n_tv", "max_backtracks", "divergence_patience"))
    assert (p.step, p.tol, p.backtrack_factor, p.gamma) == (0.5, 0.25, 0.25, 1.5)
    assert all(type(getattr(p, n)) is float for n in ("step", "tol", "backtrack_factor", "gamma"))
    assert p.lambda_tv == (0.5, 0.25) and all(type(v) is float for v in p.lambda_tv)
    assert p.haadf_weights == (1.0, 2.0) and all(type(v) is float for v in p.haadf_weights)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n_iter", True),
        ("n_tv", np.True_),
        ("max_backtracks", False),
        ("gamma", True),
        ("eps", np.True_),
        ("lambda_tv", [True, 0.1]),
        ("lambda_chem", np.array([0.1, True], dtype=object)),
        ("lambda_chem", {"Sr": True, "O": 0.1}),
        ("haadf_weights", [True, 1.0]),
        ("step", True),
        ("step", np.True_),
        ("tol", False),
        ("backtrack_factor", np.True_),
    ],
)
def test_booleans_are_not_numbers(field, value):
    with pytest.raises((TypeError, ValueError), match=f"FusionParams.{field}"):
        FusionParams(**{field: value})


def test_haadf_weights_that_are_one_number_say_what_to_give():
    with pytest.raises(ValueError, match=r"FusionParams.haadf_weights must be a name or a sequence.*one per map"):
        FusionParams(haadf_weights=1.0)


@pytest.mark.parametrize(
    ("changes", "dtype", "match"),
    [
        ({"eps": 1e-300}, np.float32, r"FusionParams.eps=1e-300 is below the smallest normal number .* float32"),
        ({"lambda_tv": 1e39}, np.float32, r"FusionParams.lambda_tv=1e\+39 overflows the compute dtype float32"),
        ({"lambda_chem": {"Sr": 0.1, "O": 1e-45}}, np.float32, r"FusionParams.lambda_chem=.* float32"),
        ({"lambda_chem": 1e30}, np.float32, r"lambda_chem=1e\+30 with eps=0.01 cannot be computed in float32"),
        ({"lambda_haadf": 1e30}, np.float32, r"FusionParams.lambda_haadf=1e\+30 cannot be computed in float32"),
        ({"eps": 1e-300}, np.float64, r"FusionParams.lambda_chem=0.02 with eps=1e-300 cannot be computed in float64"),
        ({"step": 1e300, "backtracking": False}, np.float64, r"one step \(step 1e\+300\) can move a pixel"),
    ],
)
def test_values_the_compute_dtype_cannot_hold_are_refused(changes, dtype, match):
    with pytest.raises(ValueError, match=match):
        FusionParams(**changes).check_dtype(dtype)


def test_values_the_compute_dtype_holds_pass():
    FusionParams().check_dtype(np.float32)
    FusionParams.published().check_dtype(np.float32)
    FusionParams(lambda_chem=1e30).check_dtype(np.float64)
    FusionParams(eps=1e-300, lambda_chem=0.0).check_dtype(np.float64)
    # a step small enough keeps the same weights computable: the check follows the settings in force
    FusionParams(lambda_chem=1e30, step=1e-25).check_dtype(np.float32)
    FusionParams(step=1e60, max_backtracks=250).check_dtype(np.float32)
