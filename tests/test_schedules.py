import math

import pytest

from fusex import ConstantStep, ExponentialDecay, PolynomialDecay
from fusex.schedules import step_schedule


def test_schedules():
    assert ConstantStep(0.3)(10) == 0.3
    assert ExponentialDecay(2.0, 0.5)(2) == pytest.approx(2.0 * math.exp(-1.0))
    assert PolynomialDecay(1.0, alpha=1.0, beta=0.5)(4) == pytest.approx(1 / 3)


def test_a_number_becomes_a_constant_schedule_and_callables_pass_through():
    assert step_schedule(0.5)(7) == 0.5
    decay = ExponentialDecay(1.0, 0.1)
    assert step_schedule(decay) is decay
