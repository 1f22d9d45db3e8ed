"""Probability calibration of a classifier head, kept as plain numbers (no pickle).

A boosted classifier's raw probabilities are usually over-confident out of sample (on EURUSD an
uncalibrated 0.8 won 58 % of the time). Calibration maps the raw margin to a probability that
can be read as a frequency. It is fitted by scikit-learn on **held-out** predictions from inside
the training window (``SignalQualityModel(calibration_cv=...)``: a purged hold-out at the window's
end, or purged walk-forward folds; never a shuffled split, never the scored period), so the map
learns how the model errs on data it did not see. This module fits and applies the map;
:mod:`.calibration` judges the result (the ECE and the noise it carries). The fitted map is stored
as numbers:

- ``isotonic``: the thresholds of ``IsotonicRegression(out_of_bounds="clip")`` on P = sigmoid(margin),
  applied with linear interpolation (exactly scikit-learn's ``predict``);
- ``sigmoid`` (Platt): ``P = sigmoid(a * margin + b)``, ``a`` and ``b`` from an unpenalized
  logistic regression.

    >>> import numpy as np
    >>> cal = fit_calibrator("sigmoid", np.array([-2.0, -1.0, 0.0, 1.0, 2.0, 3.0]), np.array([0, 0, 1, 0, 1, 1]))
    >>> cal["method"], bool(0 < apply_calibration(cal, np.array([0.5]))[0] < 1)
    ('sigmoid', True)
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from ..errors import ModelError

__all__ = ["CALIBRATION_METHODS", "MIN_CALIBRATION_SAMPLES", "fit_calibrator", "apply_calibration"]

CALIBRATION_METHODS = (None, "isotonic", "sigmoid")
"""Allowed values of ``SignalQualityModel(calibration=...)``."""

MIN_CALIBRATION_SAMPLES = 50
"""Fewest out-of-fold predictions (with both classes present) a calibrator is fitted on."""


def fit_calibrator(method: str, margin: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Fit ``method`` (``"isotonic"`` / ``"sigmoid"``) on out-of-fold margins and 0/1 outcomes."""
    m = np.asarray(margin, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if method == "isotonic":
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(expit(m), y)
        return {"method": "isotonic", "x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist(),
                "n_samples": int(len(y))}
    if method == "sigmoid":
        platt = LogisticRegression(C=np.inf).fit(m[:, None], y)
        return {"method": "sigmoid", "a": float(platt.coef_[0, 0]), "b": float(platt.intercept_[0]),
                "n_samples": int(len(y))}
    raise ValueError(f"calibration must be one of {CALIBRATION_METHODS}, got {method!r}")


def apply_calibration(cal: dict | None, margin: np.ndarray) -> np.ndarray:
    """Probability from XGBoost's raw margin, through the stored calibrator (None: plain sigmoid)."""
    if cal is None:
        return expit(margin)
    method = cal.get("method") if isinstance(cal, dict) else None
    try:
        if method == "isotonic":
            return np.interp(expit(margin), np.asarray(cal["x"], float), np.asarray(cal["y"], float))
        if method == "sigmoid":
            return expit(float(cal["a"]) * margin + float(cal["b"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"stored calibration {method!r} is damaged ({exc!r})") from exc
    raise ModelError(f"unknown calibration method {method!r}; expected 'isotonic' or 'sigmoid'")
