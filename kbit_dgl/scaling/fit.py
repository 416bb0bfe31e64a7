"""Power-law fits with parameter uncertainties, and their validation on a held-out point.

Two laws, both fitted by least squares with ``scipy.optimize.curve_fit``:

* ``saturating``: y = a * x**-b + c, with b >= 0, so y tends to c as x grows (a > 0 for a loss
  that falls towards c, a < 0 for a quality such as MRR that rises towards c);
* ``power_law``:  y = a * x**-b (b < 0 for a rising quality).

Standard errors are the square roots of the diagonal of curve_fit's covariance (scaled by the
residual variance, ``absolute_sigma=False``, unless ``sigma`` is given as absolute errors). With
no more points than parameters the covariance is undefined and the errors are infinite.
Internally x is divided by its geometric mean, which keeps a * x**-b well conditioned for x in
the millions (training steps); ``a`` and its error are converted back (delta method).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

KINDS = ("saturating", "power_law")
PARAMETERS = {"saturating": ("a", "b", "c"), "power_law": ("a", "b")}
MAX_EXPONENT = 10.0  # bound on b for the saturating law: beyond it the curve is a step, not a law


def power_law(x, a: float, b: float):
    """y = a * x**-b (x > 0)."""
    return a * np.power(x, -b)


def saturating_power_law(x, a: float, b: float, c: float):
    """y = a * x**-b + c (x > 0)."""
    return a * np.power(x, -b) + c


LAWS = {"saturating": saturating_power_law, "power_law": power_law}


def _finite_or_none(value: float) -> Optional[float]:
    return float(value) if math.isfinite(value) else None


@dataclass
class FitResult:
    """A fitted law: parameters, their standard errors and covariance (in the order of
    ``PARAMETERS[kind]``), the number of points and the root-mean-square residual."""

    kind: str
    params: Dict[str, float]
    stderr: Dict[str, float]
    covariance: List[List[float]]
    num_points: int
    rmse: float

    def predict(self, x) -> np.ndarray:
        """The law at ``x`` (scalar or array)."""
        return LAWS[self.kind](np.asarray(x, dtype=float), *(self.params[name] for name in PARAMETERS[self.kind]))

    def formula(self, digits: int = 3) -> str:
        """E.g. ``y = 0.52(±0.03) * x^-0.41(±0.05) + 0.31(±0.01)`` (the exponent shown is -b)."""
        def term(name: str, sign: float = 1.0) -> str:
            error = self.stderr[name]
            shown = "±inf" if not math.isfinite(error) else f"±{error:.{digits}g}"
            return f"{sign * self.params[name]:.{digits}g}({shown})"
        text = f"y = {term('a')} * x^{term('b', -1.0)}"
        return text + (f" + {term('c')}" if self.kind == "saturating" else "")

    @property
    def determined(self) -> bool:
        """Whether the points pin the exponent down: its standard error is finite and below |b|."""
        error = self.stderr["b"]
        return math.isfinite(error) and error < abs(self.params["b"])

    def to_dict(self) -> Dict[str, object]:
        """JSON-safe: non-finite errors become None."""
        return {"kind": self.kind, "formula": self.formula(),
                "params": {k: float(v) for k, v in self.params.items()},
                "stderr": {k: _finite_or_none(v) for k, v in self.stderr.items()},
                "covariance": [[_finite_or_none(v) for v in row] for row in self.covariance],
                "num_points": self.num_points, "rmse": self.rmse, "exponent_determined": self.determined}


def _as_arrays(x: Sequence[float], y: Sequence[float], sigma: Optional[Sequence[float]]):
    x_arr, y_arr = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if x_arr.shape != y_arr.shape:
        raise ValueError(f"x and y differ in length: {x_arr.size} vs {y_arr.size}")
    if not (np.all(np.isfinite(x_arr)) and np.all(np.isfinite(y_arr))):
        raise ValueError("x and y must be finite")
    if np.any(x_arr <= 0):
        raise ValueError("power laws need x > 0")
    sigma_arr = None
    if sigma is not None:
        sigma_arr = np.asarray(sigma, dtype=float).ravel()
        if sigma_arr.shape != x_arr.shape or np.any(~np.isfinite(sigma_arr)) or np.any(sigma_arr <= 0):
            raise ValueError("sigma must be finite, positive and as long as x")
    return x_arr, y_arr, sigma_arr


def _log_linear_start(u: np.ndarray, residual: np.ndarray) -> Optional[List[float]]:
    """(a, b) of |residual| = |a| * u**-b by a straight line in log-log space, sign kept; None if
    the residual changes sign or touches zero."""
    sign = np.sign(residual)
    if np.any(sign == 0) or np.any(sign != sign[0]) or len(np.unique(u)) < 2:
        return None
    slope, intercept = np.polyfit(np.log(u), np.log(np.abs(residual)), 1)
    return [float(sign[0] * math.exp(intercept)), float(-slope)]


def _starts(kind: str, u: np.ndarray, y: np.ndarray) -> List[List[float]]:
    """Starting points for curve_fit: log-log regressions under several guesses of the asymptote."""
    if kind == "power_law":
        start = _log_linear_start(u, y)
        return [start] if start else [[float(np.mean(y)), 0.0]]
    spread = float(np.ptp(y)) or max(abs(float(np.mean(y))), 1.0) * 1e-3
    rising = np.polyfit(np.log(u), y, 1)[0] > 0
    starts = []
    for fraction in (0.02, 0.1, 0.3, 1.0, 3.0):
        c = float(np.max(y) + fraction * spread) if rising else float(np.min(y) - fraction * spread)
        start = _log_linear_start(u, y - c)
        if start is not None:
            start[1] = min(max(start[1], 1e-3), MAX_EXPONENT)
            starts.append(start + [c])
    return starts or [[-spread if rising else spread, 0.5, float(np.mean(y))]]


def fit_power_law(x: Sequence[float], y: Sequence[float], kind: str = "saturating",
                  sigma: Optional[Sequence[float]] = None) -> FitResult:
    """Least-squares fit of ``kind`` (``saturating`` or ``power_law``) to points (x, y).

    ``x`` may repeat (e.g. one point per seed). ``sigma``: optional absolute standard errors of
    ``y``, used as weights and for the covariance. Several starting points are tried and the one
    with the smallest squared error kept. Raises ``ValueError`` on bad input or too few distinct
    x, ``RuntimeError`` when no start converges.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown law {kind!r}; expected one of {KINDS}")
    x_arr, y_arr, sigma_arr = _as_arrays(x, y, sigma)
    names = PARAMETERS[kind]
    if len(np.unique(x_arr)) < len(names):
        raise ValueError(f"a {kind} fit needs at least {len(names)} distinct x values, got {len(np.unique(x_arr))}")
    x_ref = float(np.exp(np.mean(np.log(x_arr))))
    u = x_arr / x_ref
    bounds = ([-np.inf, 0.0, -np.inf], [np.inf, MAX_EXPONENT, np.inf]) if kind == "saturating" else (-np.inf, np.inf)
    best, errors = None, []
    for start in _starts(kind, u, y_arr):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)  # dof = 0: covariance inf, reported as such
                params, covariance = curve_fit(LAWS[kind], u, y_arr, p0=start, sigma=sigma_arr,
                                               absolute_sigma=sigma_arr is not None, bounds=bounds, maxfev=20000)
        except (RuntimeError, ValueError) as error:
            errors.append(str(error))
            continue
        squared_error = float(np.sum((LAWS[kind](u, *params) - y_arr) ** 2))
        if best is None or squared_error < best[0]:
            best = (squared_error, params, covariance)
    if best is None:
        raise RuntimeError(f"{kind} fit did not converge from any start: {errors}")
    squared_error, params, covariance = best
    # back from u = x / x_ref: a_x = a_u * x_ref**b; Jacobian of (a_x, b, c) with respect to (a_u, b, c)
    scale = x_ref ** params[1]
    jacobian = np.eye(len(names))
    jacobian[0, 0] = scale
    jacobian[0, 1] = params[0] * scale * math.log(x_ref)
    with np.errstate(invalid="ignore"):
        covariance = jacobian @ np.asarray(covariance, dtype=float) @ jacobian.T
    values = np.array(params, dtype=float)
    values[0] = params[0] * scale
    diagonal = np.diag(covariance)
    stderr = np.where(np.isfinite(diagonal) & (diagonal >= 0), np.sqrt(np.abs(diagonal)), np.inf)
    return FitResult(kind=kind, params=dict(zip(names, map(float, values))),
                     stderr=dict(zip(names, map(float, stderr))), covariance=covariance.tolist(),
                     num_points=int(x_arr.size), rmse=math.sqrt(squared_error / x_arr.size))


def holdout_error(x: Sequence[float], y: Sequence[float], kind: str = "saturating",
                  sigma: Optional[Sequence[float]] = None) -> Dict[str, object]:
    """Fit without the points at the largest x, predict there, and compare with the observed mean.

    Returns ``heldout_x``, ``observed`` (mean y at that x), ``observed_std`` (their standard
    deviation, 0 for one point), ``predicted``, ``abs_error`` = |predicted - observed|,
    ``rel_error`` = abs_error / |observed| (None when observed is 0) and ``fit`` (the reduced
    fit as a dict).
    """
    x_arr, y_arr, sigma_arr = _as_arrays(x, y, sigma)
    heldout_x = float(np.max(x_arr))
    held = x_arr == heldout_x
    fit = fit_power_law(x_arr[~held], y_arr[~held], kind, None if sigma_arr is None else sigma_arr[~held])
    observed = float(np.mean(y_arr[held]))
    predicted = float(fit.predict(heldout_x))
    abs_error = abs(predicted - observed)
    return {"kind": kind, "heldout_x": heldout_x, "observed": observed,
            "observed_std": float(np.std(y_arr[held], ddof=1)) if held.sum() > 1 else 0.0,
            "predicted": predicted, "abs_error": abs_error,
            "rel_error": abs_error / abs(observed) if observed != 0 else None, "fit": fit.to_dict()}
