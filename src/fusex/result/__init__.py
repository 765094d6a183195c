"""The results of a fusion: `FusionResult`, its convergence history and its assembly from solved batch items.

The modules, by job: ``_result`` (`FusionResult` and `FusionDivergedError`),
``_history`` (the per-iteration cost terms the solver records, and their
table) and ``_assembly`` (one `FusionResult` from the solved parts of a batch).
"""

from ._result import FusionDivergedError, FusionResult

__all__ = ["FusionDivergedError", "FusionResult"]
