"""Fusion parameters: every knob of the solver, validated, with per-item and per-element weights."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np

from .priors import PRIORS
from .schedules import ConstantStep, ExponentialDecay, PolynomialDecay, StepSchedule, step_schedule, step_size

__all__ = [
    "HAADF_WEIGHTINGS",
    "PER_ELEMENT_FIELDS",
    "PER_ITEM_FIELDS",
    "ConstantStep",
    "ExponentialDecay",
    "FusionParams",
    "PerElement",
    "PolynomialDecay",
    "StepSchedule",
]

PER_ITEM_FIELDS = ("gamma", "lambda_haadf", "lambda_chem", "lambda_tv", "eps", "huber_delta", "dtv_strength")
"""Fields that may hold one value per batch item (an array broadcasting over the batch shape)."""

PER_ELEMENT_FIELDS = ("lambda_chem", "lambda_tv", "huber_delta", "dtv_strength")
"""Fields that may hold one value per element (a mapping symbol -> value, stored as `PerElement`)."""

HAADF_WEIGHTINGS = ("none", "z_mean", "z_sum", "zgamma_mean", "zgamma_sum")
"""Named HAADF weighting schemes: ``w_e`` as a function of ``Z`` and ``gamma``."""


class PerElement(Mapping[str, Any]):
    """An immutable, hashable mapping element label -> weight, for the `PER_ELEMENT_FIELDS`.

    Each value is a number, or nested tuples of numbers (one per batch item).
    `FusionParams` builds it from any mapping it is given.
    """

    __slots__ = ("_pairs",)

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._pairs = tuple((str(k), v) for k, v in values.items())

    def __getitem__(self, key: str) -> Any:
        for name, value in self._pairs:
            if name == key:
                return value
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._pairs)

    def __len__(self) -> int:
        return len(self._pairs)

    def __hash__(self) -> int:
        return hash(frozenset(self._pairs))

    def __repr__(self) -> str:
        return repr(dict(self._pairs))


@dataclass(frozen=True)
class FusionParams:
    r"""Every knob of the fusion solver, with documented defaults.

    The solver minimizes

    .. math::

        \lambda_H \tfrac12 \lVert b_H - \textstyle\sum_e w_e x_e^\gamma \rVert^2
        + \lambda_C \sum_e \sum_{px} (x_e - b_e \log(x_e + \epsilon))
        + \lambda_{TV} \sum_e \lVert x_e \rVert_{TV}, \qquad x \ge 0,

    by proximal gradient steps of size :math:`\eta_k`; with the default
    ``haadf_model="fitted"`` and ``background="smooth"`` the HAADF term reads
    :math:`\tfrac12 \lVert b_H - c - B - a \sum_e w_e x_e^\gamma \rVert^2`,
    with gain :math:`a`, offset :math:`c` and smooth background :math:`B`
    fitted from the data.

    Parameters
    ----------
    gamma : float
        Z-contrast exponent of the HAADF model (dimensionless, >= 1; physically
        1.4-2).  Default 1.7.
    lambda_haadf : float or None
        Weight :math:`\lambda_H` of the HAADF consistency term.  ``None``
        (default) means :math:`1/E` for ``E`` elements, as in the published method.
    lambda_chem : float or mapping
        Weight :math:`\lambda_C` of the Poisson fidelity of the chemical maps.
        Default 0.02.  A mapping ``{element: value}`` gives each map its own
        weight :math:`\lambda_{C,e}` (every map must be named).
    lambda_tv : float or mapping
        Weight :math:`\lambda_{TV}` of the total variation.  Default 0.02.
        A mapping ``{element: value}`` gives each map its own :math:`\lambda_{TV,e}`.
        It weighs each map's ``prior``.
    prior : {"tv", "huber", "dtv"} or mapping
        The smoothness prior :math:`R` weighted by :math:`\lambda_{TV}`
        (`fusex.priors`, docs/theory.md "Priors"): ``"tv"`` (default, the
        published method) is isotropic total variation; ``"huber"`` is Huber
        TV, quadratic for gradients below ``huber_delta``, which smooths
        low-count maps instead of flattening them into staircases; ``"dtv"``
        is directional TV guided by the HAADF image (Ehrhardt & Betcke 2016),
        which does not penalize a map's edges where they run along the HAADF
        image's edges.  A mapping ``{element: name}`` gives each map its own.
    huber_delta : float or mapping
        Threshold :math:`\delta > 0` of the Huber prior, in the units of the
        (normalized) maps: gradients smaller than it are penalized
        quadratically.  Default 0.05.  Per item or per element like
        ``lambda_tv``; read only by maps whose prior is ``"huber"``.
    dtv_eta : float
        Edge parameter :math:`\eta > 0` of ``"dtv"``, relative to the largest
        HAADF gradient: HAADF gradients well below :math:`\eta` times it
        count as flat.  Default 0.1.
    dtv_strength : float or mapping
        Strength :math:`\gamma_d \in [0, 1]` of ``"dtv"``: the fraction of a
        map's gradient along the HAADF edge normal that goes unpenalized
        (0 is TV).  Default 0.9.  Per item or per element like ``lambda_tv``.
    n_iter : int
        Maximum number of outer iterations (a cap: ``tol`` normally stops
        the solver first).  Default 500.
    n_tv : int
        Inner (dual) iterations of the TV proximal operator per outer
        iteration.  Default 10; with ``tv_warm`` each prox continues from the
        previous one's dual, so the inner iterations add up over the outer
        ones and the prox becomes exact as the iterates settle.  Measured on
        two phantoms (3x128², 3 and 10 counts, two lattices), 5, 8, 10 and 15
        reached a 1e-4 objective gap in the same number of outer iterations
        (within 3); with 5 the residual test (then at ``tol=1e-4``) did not stop
        one of them within 500 iterations, with 10 it stopped both
        (``docs/parameters.md``).  They grow where the objective climbs
        (``tv_growth``).
    n_dtv : int
        Inner iterations of the proximal operator when some map uses the
        directional prior ``"dtv"`` (every map of that stack gets them).
        Default 20: the anisotropic dual settles more slowly, and with 10
        the residual test (then at ``tol=1e-4``) did not stop three of four
        such phantom fusions within 500 iterations, where 20 stopped them
        after about 70 (``docs/parameters.md``).
    tv_growth : int
        With ``step="lipschitz"``, the most the prior's inner iterations
        grow, as a multiple of ``n_tv``: an item whose objective climbs more
        than 1e-5 (relative) above its lowest value so far gets twice the
        inner iterations for the rest of its solve, up to ``tv_growth * n_tv``
        (``n_dtv`` grows to the same number).  Default 8; 1 never grows them.
        The inexact warm prox can otherwise let accepted steps trade the prior
        for the data for hundreds of iterations, the residual test never
        stopping them (``docs/parameters.md``).  `fusex.tune` scores its
        candidates with 1 and fits its choice with this value.
    tv_method : {"fgp", "gp"}
        ``"fgp"``: the accelerated dual projection of Beck & Teboulle (default);
        ``"gp"``: the same without momentum, as the published reference code does.
    eps : float
        Offset :math:`\epsilon` inside the Poisson logarithm, in the units of the
        (normalized) maps.  Default 0.01 (the published method's 0.1 is half a
        count where the brightest pixel holds 5 counts, which biases low-dose maps).
    haadf_weights : str or sequence of float
        The weights :math:`w_e`: ``"none"`` (:math:`w_e = 1`), ``"z_mean"``
        (:math:`Z_e / \overline{Z}`), ``"z_sum"`` (:math:`Z_e / \sum Z`),
        ``"zgamma_mean"`` (:math:`Z_e^\gamma / \overline{Z^\gamma}`),
        ``"zgamma_sum"`` (:math:`Z_e^\gamma / \sum Z^\gamma`, default: the
        paper's :math:`(Z_e x_e)^\gamma` model scaled so that maps in [0, 1]
        predict a HAADF image in [0, 1]), or explicit values, one per element.
    normalize : {"scale", "minmax", "none"}
        ``"scale"`` (default) divides a copy of each map by its maximum (zeros
        stay 0 and totals stay proportional to the counts) and rescales the
        HAADF image to [0, 1]; ``"minmax"`` rescales the HAADF image and each
        map to [0, 1] (the published method); ``"none"`` uses the data as
        given.  See Notes.
    step : "lipschitz", float or callable
        Step size :math:`\eta_k`.  ``"lipschitz"`` (default): per item,
        :math:`1/L` from a secant estimate of the curvature :math:`L` of the
        smooth terms along the solver's own steps,
        :math:`L \approx \lVert \nabla f(x_{k+1}) - \nabla f(y_k)\rVert / \lVert x_{k+1} - y_k \rVert`,
        made before the first iteration; with ``backtracking`` each step then
        passes Beck & Teboulle's sufficient-decrease test, and the step grows
        by `fusex.solver.STEP_GROWTH` after each step that needed no cut.
        Without backtracking nothing checks the estimate.
        Otherwise a number (constant), a `ConstantStep`, `ExponentialDecay`,
        `PolynomialDecay`, or any callable ``k -> eta`` (``k`` counts from 0).
    backtracking : bool
        Shrink the step by ``backtrack_factor`` and retry whenever an iteration
        raises the objective.  The shrink persists for later iterations.
        ``True`` or ``False`` (NumPy booleans too); anything else, a string
        such as ``"False"`` included, raises `TypeError`.
        Default True: it costs nothing while the objective falls (the usual
        case), and rescues a step too large for the data, e.g. a single map,
        where the HAADF term's curvature reaches :math:`\lambda_H \gamma^2 > 2`.
    backtrack_factor : float
        Factor in (0, 1) applied to the step on each backtrack.  Default 0.5.
    max_backtracks : int
        Retries per iteration before the step is accepted anyway.  Default 20.
    tol : float
        Stop an item when its relative fixed-point residual
        :math:`\lVert x_{k+1} - y_k \rVert / \lVert x_{k+1} \rVert` falls
        below ``tol``, where :math:`y_k` is the point the step started from
        (:math:`x_k` without acceleration): it vanishes exactly at a solution,
        and, divided by the step, is the norm of the gradient mapping.  0
        disables early stopping.  Default 3e-4: on seven phantoms of
        128 x 128 to 512 x 512 pixels at 1 to 10 counts it stopped at a
        relative objective gap below 1e-4 in six and 1.7e-4 in one, after 36
        to 83 iterations, where 1e-4 took 66 to 112 for maps as close to the
        truth (docs/parameters.md).
    divergence_patience : int
        Raise `FusionDivergedError` when the objective has risen this many
        iterations in a row to above its starting value, or has stayed above
        its starting value for this many iterations (an oscillating, too
        large step).  0 disables both checks; non-finite values always raise.
        Default 10.
    accel : {"fista", "none"}
        ``"fista"`` (default): accelerated proximal gradient (Beck & Teboulle
        2009) with restart (O'Donoghue & Candes 2015): each step starts from
        :math:`y_k = x_k + \tfrac{t_{k-1} - 1}{t_k}(x_k - x_{k-1})` (projected
        onto :math:`x \ge 0`).  With ``step="lipschitz"`` the momentum restarts
        where :math:`\langle y_k - x_{k+1}, x_{k+1} - x_k \rangle > 0` (the
        gradient test, no step redone); with a fixed step a step that raises
        the objective is redone from :math:`x_k` with the momentum reset, so
        the objective never rises.  Same fixed point as ``"none"``, plain
        proximal gradient.
    tv_warm : bool
        Start each TV prox from the previous iteration's dual variables
        (default True) instead of from zero (the published method).
    haadf_model : {"fitted", "minmax"}
        How the maps' HAADF prediction meets the image: ``"fitted"`` (default)
        fits a gain :math:`a` and an offset :math:`c`,
        :math:`b_H \approx c + B + a \sum_e w_e x_e^\gamma`, by least squares
        from the data (at the start and every ``refit_every`` iterations), so
        the HAADF term cannot inflate or drain the maps; ``"minmax"`` takes
        :math:`a = 1`, :math:`c = 0`, i.e. trusts the min-max scaling of both
        (the published method).  See `docs/theory.md`.
    background : {"smooth", None}
        ``"smooth"`` (default) adds a smooth background :math:`B` to the HAADF
        model, fitted with :math:`a` and :math:`c`: HAADF signal of matter no
        map holds (support film, thickness, unlisted elements) goes there
        instead of into the maps.  It is not returned as a map;
        `FusionResult.haadf_background` holds it, with the offset.  None: no background.
    background_modes : int
        Cosine modes per axis spanning :math:`B` (`fusex.operators.background_basis`):
        :math:`B` has ``background_modes**2 - 1`` terms and varies over no
        less than about ``H / (background_modes - 1)`` pixels.  Default 3.
    refit_every : int
        Refit :math:`a`, :math:`c` and :math:`B` every this many iterations
        (alternating minimization); 0 fits them once, at the start.  Default 1:
        a refit costs one pass over the maps (the normal equations' other
        parts are kept), and refitting every iteration reached a 1e-4
        objective gap in 40 iterations of a 3x128² phantom where every 10th
        took 261, since the maps then wait for the gain and background.
        With 1 each accelerated step also refits at its extrapolated point,
        so that the solver minimizes the objective minimized over the fit
        (variable projection, ``docs/theory.md``): 1.3-1.5x fewer iterations
        to a 1e-4 gap again.
    rescale_totals : bool
        Scale each fused map, after the last iteration, to the Poisson
        maximum-likelihood total of its shape, :math:`\sum b_e / \sum x_e`
        (which undoes the shrinkage of the prior and of :math:`\epsilon`; see
        `docs/theory.md`).  Default True.
    init : {"smoothed", "counts"}
        Where the iterations start: ``"smoothed"`` (default), the (normalized)
        maps blurred twice by the binomial filter (1, 2, 1)/4 along each axis
        (a Gaussian of :math:`\sigma = 1` pixel that keeps each total);
        ``"counts"``, the maps as they are (the published method).  The
        objective is not convex (:math:`x^\gamma` in the HAADF model, its
        fitted gain and background): started at the noisy counts the solver
        stopped at a higher objective on seven of eight phantoms, in up to
        1.5x more iterations, and far higher at one count per column (see
        "init" in `docs/parameters.md`).  A ``start`` given to the solver (as
        `fusex.tune` passes earlier fits) takes precedence wherever it is not NaN.

    Notes
    -----
    ``gamma``, ``lambda_haadf``, ``lambda_chem``, ``lambda_tv`` and ``eps`` may
    be arrays (or nested sequences) instead of numbers, for a batch of
    fusions: they broadcast against the batch shape of the inputs (the axes
    before ``(element, y, x)``), so ``lambda_tv=[0.001, 0.003, 0.01]`` with a
    single acquisition runs three fusions of it in one vectorized solve.  They
    are stored as nested tuples, so parameters stay hashable and comparable.

    ``lambda_chem`` and ``lambda_tv`` may also be mappings from element labels
    to values (numbers or per-item arrays), ``lambda_tv={"Sr": 0.01, "Ti": 0.005,
    "O": 0.02}``: the terms then read :math:`\sum_e \lambda_{C,e}\Psi_{2,e}` and
    :math:`\sum_e \lambda_{TV,e} \lVert x_e \rVert_{TV}`.  Elements differ in
    dose and in how much the HAADF image says about them, so their best
    weights differ; `fusex.tune` chooses them per element.

    Numeric fields take Python or NumPy numbers (``np.int64(3)``,
    ``np.float32(0.5)``) and store them as Python ``int``/``float``, so a
    NumPy scalar never promotes float32 work.  Booleans are not numbers
    here: ``n_iter=True`` or ``lambda_tv=[True, 0.1]`` raise.  A step
    schedule must return one finite number > 0 per iteration; anything else
    raises an error naming ``FusionParams.step``.  `check_dtype` refuses
    values the compute dtype cannot hold; `fuse` calls it with the data's
    dtype before the first iteration.

    The Poisson term is a likelihood of counts only for ``normalize="none"``
    on raw counts.  After min-max normalization it is a fidelity term that
    weights low-signal pixels more, which is what the published method uses;
    ``eps`` is then a fraction of each map's range.

    """

    gamma: float | Sequence[float] = 1.7
    lambda_haadf: float | Sequence[float] | None = None
    lambda_chem: float | Sequence[float] | Mapping[str, Any] = 0.02
    lambda_tv: float | Sequence[float] | Mapping[str, Any] = 0.02
    prior: Literal["tv", "huber", "dtv"] | Mapping[str, Literal["tv", "huber", "dtv"]] = "tv"
    huber_delta: float | Sequence[float] | Mapping[str, Any] = 0.05
    dtv_eta: float = 0.1
    dtv_strength: float | Sequence[float] | Mapping[str, Any] = 0.9
    n_iter: int = 500
    n_tv: int = 10
    n_dtv: int = 20
    tv_growth: int = 8
    tv_method: Literal["fgp", "gp"] = "fgp"
    eps: float | Sequence[float] = 0.01
    haadf_weights: str | Sequence[float] = "zgamma_sum"
    normalize: Literal["scale", "minmax", "none"] = "scale"
    step: StepSchedule | Literal["lipschitz"] = "lipschitz"
    backtracking: bool = True
    backtrack_factor: float = 0.5
    max_backtracks: int = 20
    tol: float = 3e-4
    divergence_patience: int = 10
    accel: Literal["fista", "none"] = "fista"
    tv_warm: bool = True
    haadf_model: Literal["fitted", "minmax"] = "fitted"
    background: Literal["smooth"] | None = "smooth"
    background_modes: int = 3
    refit_every: int = 1
    rescale_totals: bool = True
    init: Literal["smoothed", "counts"] = "smoothed"

    def __post_init__(self) -> None:
        _check_params(self)

    @classmethod
    def published(cls, **overrides: Any) -> FusionParams:
        """Defaults of the published method's reference package (``multimodal-fusion`` 0.6.0).

        gamma 1.6, 50 iterations, ``lambda_haadf = 1/E``, ``lambda_chem`` 0.005,
        ``lambda_tv`` 0.1, TV prox without momentum (``"gp"``), ``eps`` 0.1,
        unweighted HAADF model, min-max normalization taken as the HAADF
        model's scale (``haadf_model="minmax"``, no background), unit step
        without backtracking, no early stopping, no rescaling of totals.  With
        these, `fuse` reproduces the reference's maps to float precision.  Keyword arguments override single fields.

        Notes
        -----
        The reference's TV loop is called with 15 iterations, but each pass
        forms the image *before* updating the dual variable and the last
        update is discarded, so only 14 dual updates reach the result.  fusex
        counts dual updates, hence ``n_tv=14`` here; ``published(n_tv=15)``
        runs one more update than the reference does.

        """
        base = cls(
            gamma=1.6,
            lambda_haadf=None,
            lambda_chem=0.005,
            lambda_tv=0.1,
            n_iter=50,
            n_tv=14,
            tv_method="gp",
            eps=0.1,
            haadf_weights="none",
            normalize="minmax",
            step=1.0,
            backtracking=False,
            tol=0.0,
            accel="none",
            tv_warm=False,
            haadf_model="minmax",
            background=None,
            rescale_totals=False,
            init="counts",
        )
        return replace(base, **overrides)

    def replace(self, **changes: Any) -> FusionParams:
        """Return a copy with some fields changed (validated like a new instance)."""
        return replace(self, **changes)

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """Broadcast shape of the per-item fields (``()`` when every field is one number)."""
        return np.broadcast_shapes(*(_shape(getattr(self, name)) for name in PER_ITEM_FIELDS))

    def item_values(self, name: str, batch_shape: tuple[int, ...]) -> np.ndarray:
        """Field ``name`` broadcast to ``batch_shape`` and flattened: one float64 per item."""
        value = getattr(self, name)
        if isinstance(value, PerElement):
            raise ValueError(f"FusionParams.{name} holds one value per element; use map_values")
        return _broadcast(name, value, batch_shape).reshape(-1)

    def map_values(self, name: str, batch_shape: tuple[int, ...], elements: Sequence[str]) -> np.ndarray:
        """Field ``name`` as one float64 per item and map: shape ``(prod(batch_shape), E)``."""
        value = getattr(self, name)
        if not isinstance(value, PerElement):
            return np.repeat(self.item_values(name, batch_shape)[:, None], len(elements), axis=1)
        self.check_elements(elements)
        return np.stack([_broadcast(name, value[e], batch_shape).reshape(-1) for e in elements], axis=-1)

    def check_dtype(self, dtype: Any) -> None:
        r"""Raise unless the compute dtype ``dtype`` (float32 or float64) can hold these parameters.

        Two things are refused, each with a `ValueError` naming the field and the dtype:

        * a value of ``gamma``, ``lambda_*``, ``eps`` or explicit ``haadf_weights``
          that overflows ``dtype``, or a non-zero one below its smallest normal
          number (``eps=1e-300`` is 0 in float32, and :math:`\log(x + \epsilon)`
          is then :math:`-\infty` wherever a map is 0);
        * weights whose largest one-step move of a pixel,

          .. math::

              s = \eta_0 f^m \bigl(\lambda_H \gamma w_{max} + \lambda_C / \epsilon\bigr),

          cannot be raised to the power :math:`\gamma` in ``dtype``
          (:math:`s^\gamma` enters the HAADF model).  Here
          :math:`\lambda_C / \epsilon` bounds the Poisson gradient for maps
          scaled to [0, 1], :math:`\eta_0` is the step of iteration 0,
          :math:`f^m` is ``backtrack_factor ** max_backtracks`` with
          backtracking (the smallest step the first iteration tries) and 1
          without, :math:`w_{max}` is the largest explicit HAADF weight (1 for
          a named weighting), :math:`\lambda_H` is 1 when None, and each
          field takes its largest value (``eps`` its smallest) over items and
          maps.  ``lambda_chem=1e30`` is refused in float32 this way.

        This is a necessary condition only: settings that pass may still
        diverge, which `fuse` reports as `FusionDivergedError`.
        """
        dtype = np.dtype(dtype)
        info = np.finfo(dtype)
        fields = [n for n in PER_ITEM_FIELDS if getattr(self, n) is not None]
        fields += [] if isinstance(self.haadf_weights, str) else ["haadf_weights"]
        flat = {name: _flat(getattr(self, name)) for name in fields}
        for name, values in flat.items():
            size = np.abs(values)
            if np.any(size > info.max) or np.any((size > 0) & (size < info.tiny)):
                bound = "overflows" if np.any(size > info.max) else "is below the smallest normal number of"
                raise ValueError(
                    f"FusionParams.{name}={getattr(self, name)!r} {bound} the compute dtype {dtype.name} "
                    f"(normal range {info.tiny:g} to {info.max:g}); give a value inside it, or float64 data"
                )
        if self.step == "lipschitz":
            eta = 1.0  # the Lipschitz step is only known once the data are: the check is for a unit step
        else:
            eta = self.step if isinstance(self.step, float) else step_size(step_schedule(self.step), 0)
        shrink = self.backtrack_factor**self.max_backtracks if self.backtracking else 1.0
        gamma, w = float(np.max(flat["gamma"])), float(np.max(flat.get("haadf_weights", 1.0)))
        lam_h = float(np.max(flat.get("lambda_haadf", 1.0)))
        lam_c, eps = float(np.max(flat["lambda_chem"])), float(np.min(flat["eps"]))
        haadf_part, chem_part = lam_h * gamma * w, lam_c / eps
        move = eta * shrink * (haadf_part + chem_part)
        if move > 0 and gamma * math.log(move) > math.log(info.max):
            culprit = (
                f"lambda_chem={lam_c:g} with eps={eps:g}" if chem_part >= haadf_part else f"lambda_haadf={lam_h:g}"
            )
            raise ValueError(
                f"FusionParams.{culprit} cannot be computed in {dtype.name}: one step (step {eta:g}"
                + (f", shrunk by backtracking to {eta * shrink:g}" if self.backtracking else "")
                + f") can move a pixel by {move:.3g}, and x**gamma of that (gamma={gamma:g}) overflows {dtype.name} "
                f"(largest {info.max:.3g}); lower lambda_chem or lambda_haadf, raise eps, give a smaller step, "
                "or use float64 data"
            )

    def priors(self, elements: Sequence[str]) -> tuple[str, ...]:
        """Return the prior of each map ``elements`` (`prior`, per element when it is a mapping)."""
        if isinstance(self.prior, str):
            return (self.prior,) * len(elements)
        self.check_elements(elements)
        return tuple(self.prior[str(e)] for e in elements)

    def check_elements(self, elements: Sequence[str]) -> None:
        """Raise unless every per-element field names exactly the maps ``elements``."""
        for name in (*PER_ELEMENT_FIELDS, "prior"):
            value = getattr(self, name)
            if isinstance(value, PerElement) and set(value) != {str(e) for e in elements}:
                raise ValueError(
                    f"FusionParams.{name} gives values for {list(value)}, but the maps are {list(elements)}: "
                    "give one value for each map, or one number for all"
                )

    def at(self, index: tuple[int, ...], batch_shape: tuple[int, ...]) -> FusionParams:
        """Return the parameters of batch item ``index``: every per-item field reduced to its value there."""

        def pick(name: str, value: Any) -> float:
            return float(_broadcast(name, value, batch_shape)[index])

        changes: dict[str, Any] = {}
        for name in PER_ITEM_FIELDS:
            value = getattr(self, name)
            if isinstance(value, PerElement):
                changes[name] = {e: pick(name, v) for e, v in value.items()}
            elif value is not None:
                changes[name] = pick(name, value)
        return self.replace(**changes)

    def to_dict(self) -> dict[str, Any]:
        """Return the parameters as plain Python values (schedules as their ``repr``)."""
        out = asdict(self)
        if not isinstance(self.step, (int, float, str)):
            out["step"] = repr(self.step)
        if not isinstance(self.haadf_weights, str):
            out["haadf_weights"] = [float(w) for w in self.haadf_weights]
        for name in (*PER_ELEMENT_FIELDS, "prior"):
            if isinstance(getattr(self, name), PerElement):
                out[name] = dict(getattr(self, name))
        return out


def _shape(value: Any) -> tuple[int, ...]:
    """Batch shape of one per-item field value (the broadcast of its entries for a `PerElement`)."""
    if isinstance(value, PerElement):
        return np.broadcast_shapes(*(np.shape(v) for v in value.values()))
    return np.shape(value)


def _broadcast(name: str, value: Any, batch_shape: tuple[int, ...]) -> np.ndarray:
    try:
        return np.broadcast_to(np.asarray(value, dtype=np.float64), batch_shape)
    except ValueError:
        raise ValueError(
            f"FusionParams.{name} has shape {np.shape(value)}, which does not broadcast against the "
            f"batch shape {batch_shape} of the inputs; give one value, or one per batch item"
        ) from None


def _check_params(p: FusionParams) -> None:
    def require(ok: bool, name: str, message: str) -> None:
        if not ok:
            raise ValueError(f"FusionParams.{name} {message} (got {getattr(p, name)!r})")

    def number(name: str) -> float:
        # NumPy scalars are numbers too; store a Python float so float32 work is not promoted by a float64 scalar
        value = getattr(p, name)
        if not _is_real(value) or not math.isfinite(value):
            raise TypeError(f"FusionParams.{name} must be a finite number (got {value!r})")
        object.__setattr__(p, name, float(value))
        return float(value)

    def values(name: str) -> np.ndarray:
        # A number stays a float; an array-like becomes nested tuples, so the dataclass stays hashable.
        value = getattr(p, name)
        if isinstance(value, Mapping):
            if name not in PER_ELEMENT_FIELDS or not value:
                raise TypeError(
                    f"FusionParams.{name} must be a number or an array of them"
                    + (", or a non-empty mapping element -> value" if name in PER_ELEMENT_FIELDS else "")
                    + f" (got {value!r})"
                )
            entries = {str(k): _plain(name, v) for k, v in value.items()}
            object.__setattr__(p, name, PerElement({k: _nested_tuple(a) for k, a in entries.items()}))
            return np.concatenate([a.ravel() for a in entries.values()])
        array = _plain(name, value)
        object.__setattr__(p, name, _nested_tuple(array))
        return array

    require(
        np.all(values("gamma") >= 1.0), "gamma", "must be >= 1 (the gradient of x**gamma is unbounded at 0 otherwise)"
    )
    if p.lambda_haadf is not None:
        require(np.all(values("lambda_haadf") >= 0), "lambda_haadf", "must be >= 0, or None for 1/E")
    require(np.all(values("lambda_chem") >= 0), "lambda_chem", "must be >= 0")
    require(np.all(values("lambda_tv") >= 0), "lambda_tv", "must be >= 0")
    require(np.all(values("eps") > 0), "eps", "must be > 0 (it keeps log(x + eps) finite at x = 0)")
    _check_prior(p)
    require(np.all(values("huber_delta") > 0), "huber_delta", "must be > 0 (the Huber threshold, in map units)")
    strengths = values("dtv_strength")
    require(bool(np.all((strengths >= 0) & (strengths <= 1))), "dtv_strength", "must lie in [0, 1]")
    require(number("dtv_eta") > 0, "dtv_eta", "must be > 0 (relative to the largest HAADF gradient)")
    counts = ("n_iter", "n_tv", "n_dtv", "tv_growth", "max_backtracks", "divergence_patience")
    for name in (*counts, "background_modes", "refit_every"):
        value = getattr(p, name)
        least = 1 if name in ("n_iter", "tv_growth") else 0
        if _is_bool(value) or not isinstance(value, numbers.Integral) or value < least:
            raise ValueError(
                f"FusionParams.{name} must be a non-negative integer (n_iter and tv_growth >= 1), got {value!r}"
            )
        object.__setattr__(p, name, int(value))
    for name in ("backtracking", "rescale_totals"):
        if not _is_bool(getattr(p, name)):
            raise TypeError(f"FusionParams.{name} must be True or False, got {getattr(p, name)!r}")
        object.__setattr__(p, name, bool(getattr(p, name)))
    try:
        shapes = {name: _shape(getattr(p, name)) for name in PER_ITEM_FIELDS if _shape(getattr(p, name))}
    except ValueError:
        raise ValueError("the per-element values of a FusionParams field must broadcast against each other") from None
    try:
        np.broadcast_shapes(*shapes.values())
    except ValueError:
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(
            f"the per-item FusionParams fields must broadcast against each other, but their shapes are {listed}"
        ) from None
    require(p.tv_method in ("fgp", "gp"), "tv_method", "must be 'fgp' or 'gp'")
    require(p.normalize in ("scale", "minmax", "none"), "normalize", "must be 'scale', 'minmax' or 'none'")
    require(p.haadf_model in ("fitted", "minmax"), "haadf_model", "must be 'fitted' or 'minmax'")
    require(p.background in ("smooth", None), "background", "must be 'smooth' or None")
    require(p.init in ("smoothed", "counts"), "init", "must be 'smoothed' or 'counts'")
    require(0 < number("backtrack_factor") < 1, "backtrack_factor", "must lie in (0, 1)")
    require(number("tol") >= 0, "tol", "must be >= 0")
    if isinstance(p.haadf_weights, str):
        require(p.haadf_weights in HAADF_WEIGHTINGS, "haadf_weights", f"must be one of {HAADF_WEIGHTINGS} or numbers")
    else:
        weights = list(p.haadf_weights) if isinstance(p.haadf_weights, Iterable) else []
        if not weights or not all(_is_real(w) and math.isfinite(w) and w >= 0 for w in weights):
            raise ValueError(
                f"FusionParams.haadf_weights must be a name or a sequence of finite numbers >= 0, one per map, "
                f"got {p.haadf_weights!r}"
            )
        object.__setattr__(p, "haadf_weights", tuple(float(w) for w in weights))
    if not (_is_real(p.step) or p.step == "lipschitz" or (callable(p.step) and not _is_bool(p.step))):
        raise TypeError(f"FusionParams.step must be 'lipschitz', a number or a callable k -> eta, got {p.step!r}")
    require(p.accel in ("fista", "none"), "accel", "must be 'fista' or 'none'")
    if not _is_bool(p.tv_warm):
        raise TypeError(f"FusionParams.tv_warm must be True or False, got {p.tv_warm!r}")
    object.__setattr__(p, "tv_warm", bool(p.tv_warm))
    if _is_real(p.step):
        require(math.isfinite(p.step) and p.step > 0, "step", "must be a finite number > 0")
        object.__setattr__(p, "step", float(p.step))


def _check_prior(p: FusionParams) -> None:
    """Validate ``prior``: one of `PRIORS`, or a non-empty mapping element -> one of them (stored as `PerElement`)."""
    prior = p.prior
    names = list(prior.values()) if isinstance(prior, Mapping) else [prior]
    if (isinstance(prior, Mapping) and not prior) or not all(isinstance(n, str) and n in PRIORS for n in names):
        raise ValueError(
            f"FusionParams.prior must be one of {PRIORS}, or a mapping element -> one of them (got {prior!r})"
        )
    if isinstance(prior, Mapping):
        object.__setattr__(p, "prior", PerElement({str(k): v for k, v in prior.items()}))


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    """Tell Python and NumPy real numbers from booleans (``True`` is not the number 1 here)."""
    return isinstance(value, numbers.Real) and not _is_bool(value)


def _holds_bool(value: Any) -> bool:
    """Tell whether ``value`` is, or nests, a boolean (``np.asarray([True, 0.5])`` would hide it as 1.0)."""
    if _is_bool(value):
        return True
    if isinstance(value, np.ndarray):
        return value.dtype == bool or (value.dtype == object and any(_holds_bool(v) for v in value.flat))
    return isinstance(value, (list, tuple)) and any(_holds_bool(v) for v in value)


def _plain(name: str, value: Any) -> np.ndarray:
    """``value`` as a float64 array of finite numbers, or a TypeError naming the field."""
    array = np.asarray(None if _holds_bool(value) else value)
    if array.dtype.kind not in "iuf" or array.size == 0 or not np.all(np.isfinite(array)):
        raise TypeError(f"FusionParams.{name} must be a finite number or a non-empty array of them (got {value!r})")
    return array.astype(np.float64)


def _flat(value: Any) -> np.ndarray:
    """Every number of a validated field (a `PerElement`'s over all maps) as one flat float64 array."""
    parts = value.values() if isinstance(value, PerElement) else [value]
    return np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in parts])


def _nested_tuple(array: np.ndarray) -> Any:
    return float(array) if array.ndim == 0 else tuple(_nested_tuple(a) for a in array)
