"""The final choice of `fusex.tune` between each element's fusion and its simple candidates."""

import numpy as np

from fusex import _choice
from fusex.params import FusionParams


class _HoldOut:
    """The two things `decide` asks of a hold-out: the per-element denominators and the total."""

    denominator = np.ones(2)

    def total(self, values):
        return np.mean(values, axis=-1)


def _option(parts):
    parts = np.asarray(parts, dtype=np.float64)
    return _choice.Option("shared", FusionParams(), parts.mean(axis=0), parts, np.zeros((len(parts), 2, 1, 1)))


def test_a_fusion_must_beat_the_best_simple_map_by_more_than_the_paired_noise():
    # per part (K=4) and element: element 0's simple map is worse than the fusion by a steady 1.0 (a clear lead),
    # element 1's by 0.3 on average, with a standard error of 0.75 on that difference (a lead within the noise)
    fusion = _option([[2.0, 2.0], [3.0, 3.0], [2.5, 2.5], [2.5, 2.5]])
    simple_parts = np.array([[[3.0, 3.05 + 1.0]], [[4.0, 3.05 - 1.0]], [[3.5, 2.55 + 1.0]], [[3.5, 2.55 - 1.0]]])
    pick, takes = _choice.decide(_HoldOut(), [fusion], (simple_parts.mean(axis=0), simple_parts))
    assert pick == 0
    assert takes.tolist() == [-1, 0]  # element 0 keeps the fusion, element 1 the simple map


def test_without_parts_any_lead_keeps_the_fusion():
    fusion = _option([[2.0, 2.0], [2.0, 2.0]])
    fusion = _choice.Option("shared", fusion.params, fusion.values, None, fusion.maps)
    pick, takes = _choice.decide(_HoldOut(), [fusion], (np.array([[2.01, 1.99]]), None))
    assert pick == 0 and takes.tolist() == [-1, 0]


def test_the_option_is_picked_by_what_its_elements_end_up_taking():
    # "noisy" leads on element 0 only within the noise, so there it counts as the simple map's 1.5;
    # a strict minimum would pick it (total 1.5 against 1.65), the rule picks "steady" (1.65 against 1.75)
    noisy = _option([[0.0, 2.0], [2.0, 2.0]])
    steady = _option([[1.4, 1.9], [1.4, 1.9]])
    simple_parts = np.array([[[1.5, 5.0]], [[1.5, 5.0]]])
    pick, takes = _choice.decide(_HoldOut(), [noisy, steady], (simple_parts.mean(axis=0), simple_parts))
    assert pick == 1 and takes.tolist() == [-1, -1]


def test_an_element_not_eligible_takes_its_simple_map_whatever_its_fusion_scores():
    fusion = _option([[1.0, 1.0], [1.0, 1.0]])  # a steady lead of 1 on both elements
    simple_parts = np.array([[[2.0, 2.0]], [[2.0, 2.0]]])
    simple = (simple_parts.mean(axis=0), simple_parts)
    assert _choice.decide(_HoldOut(), [fusion], simple)[1].tolist() == [-1, -1]
    assert _choice.decide(_HoldOut(), [fusion], simple, np.array([True, False]))[1].tolist() == [-1, 0]
