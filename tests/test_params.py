import dataclasses
import math

import pytest

from fusex import ConstantStep, ExponentialDecay, FusionParams, PolynomialDecay


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


def test_schedules():
    assert ConstantStep(0.3)(10) == 0.3
    assert ExponentialDecay(2.0, 0.5)(2) == pytest.approx(2.0 * math.exp(-1.0))
    assert PolynomialDecay(1.0, alpha=1.0, beta=0.5)(4) == pytest.approx(1 / 3)


def test_to_dict_is_plain():
    d = FusionParams(step=ExponentialDecay(1.0, 0.1)).to_dict()
    assert d["step"].startswith("ExponentialDecay(") and d["gamma"] == 1.7


def test_per_item_fields_must_broadcast_together():
    assert FusionParams(lambda_tv=[0.1, 0.2], gamma=[[1.5], [1.7], [1.9]]).batch_shape == (3, 2)
    with pytest.raises(ValueError, match=r"must broadcast.*gamma \(3,\), lambda_tv \(2,\)"):
        FusionParams(lambda_tv=[0.1, 0.2], gamma=[1.5, 1.7, 1.9])
