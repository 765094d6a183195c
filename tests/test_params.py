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
