"""Deprecated alias of `fusex.labeled`, the labeled layer (kept so that ``import fusex.xarray`` still works).

This module's name hid the ``xarray`` package's inside fusex; import
`fusex.labeled` instead.
"""

import warnings

from .labeled import (
    ELEMENT_DIM,
    check_params_fit,
    is_labeled,
    label,
    labeled_mask,
    params_attrs,
    per_element_params,
    result_to_dataset,
    to_input_units,
    unwrap,
)

__all__ = [
    "ELEMENT_DIM",
    "check_params_fit",
    "is_labeled",
    "label",
    "labeled_mask",
    "params_attrs",
    "per_element_params",
    "result_to_dataset",
    "to_input_units",
    "unwrap",
]

warnings.warn(
    "fusex.xarray is deprecated and will be removed; import fusex.labeled (the same functions) instead",
    DeprecationWarning,
    stacklevel=2,
)
