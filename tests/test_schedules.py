import math

import numpy as np
import pytest

from fusex import ConstantStep, ExponentialDecay, PolynomialDecay
from fusex.schedules import step_schedule, step_size


def test_schedules():
    assert ConstantStep(0.3)(10) == 0.3
    assert ExponentialDecay(2.0, 0.5)(2) == pytest.approx(2.0 * math.exp(-1.0))
    assert PolynomialDecay(1.0, alpha=1.0, beta=0.5)(4) == pytest.approx(1 / 3)


def test_a_number_becomes_a_constant_schedule_and_callables_pass_through():
    assert step_schedule(0.5)(7) == 0.5
    decay = ExponentialDecay(1.0, 0.1)
    assert step_schedule(decay) is decay


@pytest.mark.parametrize(
    ("returned", "error", "match"),
    [
        (None, TypeError, r"FusionParams.step returned None \(NoneType\) at iteration 3"),
        (np.ones(3), TypeError, r"FusionParams.step returned array\(\[1., 1., 1.\]\)"),
        (True, TypeError, "FusionParams.step returned True"),
        ("0.5", TypeError, "FusionParams.step returned '0.5'"),
        (math.nan, ValueError, "FusionParams.step returned nan at iteration 3; it must give finite steps > 0"),
        (-1.0, ValueError, "FusionParams.step returned -1.0"),
    ],
)
def test_a_schedule_returning_no_usable_step_names_step(returned, error, match):
    with pytest.raises(error, match=match):
        step_size(lambda k: returned, 3)


def test_a_schedule_may_return_numpy_scalars():
    value = step_size(lambda k: np.float32(0.5), 0)
    assert value == 0.5 and type(value) is float
