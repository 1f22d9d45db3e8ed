"""How good is a signal-quality score? Ranking, thresholded and probability metrics in one dict.

A meta-label model answers "will this pattern win?" with a probability (``ml_confidence``). Three
questions matter to a trader, and this module reports all of them, computed by scikit-learn:

- **ranking** (``auc``): does a higher score mean a better pattern? 0.5 = chance.
- **decision** at a threshold (``precision``, ``recall``, ``f1``, ``pass_rate``): what the
  ``filter`` mode keeps. ``precision`` is the win rate of the patterns kept; compare it with
  ``base_rate``, the win rate of all patterns.
- **probability** (``brier``, ``log_loss``, :func:`calibration_table`): can ``0.7`` be read as
  "wins 70 % of the time"? That is what ``score_enhancement`` and ``size_by_score`` rely on.

:func:`cross_validate_walk_forward` puts them together with :mod:`.validation`'s splits: every
pattern is scored by a model that never saw its label, and the metrics are computed on those
out-of-sample scores only (the number to quote, e.g. in the model's metadata).

Everything returned is JSON-friendly (Python floats and ints). A metric that is undefined (AUC
with a single class in ``y_true``) is ``nan``, never an exception, so a quiet fold does not stop a
walk-forward run. :func:`json_safe` turns those ``nan`` into ``None`` for strict JSON.
"""
from __future__ import annotations

import inspect
import math
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.metrics import brier_score_loss, f1_score, log_loss, precision_score, recall_score, roc_auc_score

from .calibration import expected_calibration_error  # the one ECE (10 equal-count bins), re-exported here
from .validation import PurgedWalkForward, _renamed, find_label_times, label_windows

__all__ = ["evaluate", "calibration_table", "expected_calibration_error", "cross_validate_walk_forward", "json_safe"]


def _positive_proba(proba: Any) -> np.ndarray:
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim == 2:
        if p.shape[1] != 2:
            raise ValueError(f"proba must be shape (n,) or (n, 2), got {p.shape}")
        p = p[:, 1]
    if p.ndim != 1:
        raise ValueError(f"proba must be shape (n,) or (n, 2), got {p.shape}")
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("proba must be probabilities in [0, 1] without NaN")
    return p


def _binary_labels(y_true: Any, n: int) -> np.ndarray:
    y = np.asarray(y_true, dtype=np.float64).ravel()
    if len(y) != n:
        raise ValueError(f"y_true has {len(y)} labels but proba has {n} rows")
    if np.isnan(y).any() or not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("y_true must be 0 (loss) / 1 (win) labels without NaN; drop open outcomes first")
    return y.astype(np.int64)


def evaluate(y_true: Any, proba: Any, *, threshold: float = 0.5) -> dict[str, float | int]:
    """Metrics of positive-class probabilities ``proba`` against 0/1 labels ``y_true``.

    ``proba`` may be ``predict_proba``'s (n, 2) array or the positive column. A pattern "passes"
    when ``proba >= threshold`` (the same rule as ``confidence_threshold`` in the filter).

    >>> evaluate([0, 1, 1, 0], [0.2, 0.8, 0.6, 0.4])["auc"]
    1.0
    """
    p = _positive_proba(proba)
    y = _binary_labels(y_true, len(p))
    n = len(y)
    out: dict[str, float | int] = {"n": int(n), "threshold": float(threshold)}
    if n == 0:
        nan = float("nan")
        return out | dict.fromkeys(("base_rate", "pass_rate", "auc", "precision", "recall", "f1", "brier",
                                    "log_loss", "mean_proba"), nan)
    passed = (p >= threshold).astype(np.int64)
    two_classes = len(np.unique(y)) == 2
    out["base_rate"] = float(y.mean())
    out["pass_rate"] = float(passed.mean())
    out["mean_proba"] = float(p.mean())
    out["auc"] = float(roc_auc_score(y, p)) if two_classes else float("nan")
    out["precision"] = float(precision_score(y, passed, zero_division=0.0))
    out["recall"] = float(recall_score(y, passed, zero_division=0.0))
    out["f1"] = float(f1_score(y, passed, zero_division=0.0))
    out["brier"] = float(brier_score_loss(y, p, labels=[0, 1]))
    out["log_loss"] = float(log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1]))
    return out


def calibration_table(y_true: Any, proba: Any, *, n_bins: int = 10,
                      strategy: str = "quantile") -> list[dict[str, float | int]]:
    """Observed win rate per bin of predicted probability: the reliability diagram as rows.

    ``strategy="quantile"`` puts about the same number of patterns in each bin (bins with equal
    edges merge); ``"uniform"`` uses equal-width bins on [0, 1] like
    ``sklearn.calibration.calibration_curve``. Empty bins are left out. Each row: ``bin``,
    ``lower``, ``upper``, ``n``, ``mean_predicted``, ``observed_rate``. A well calibrated model
    has ``observed_rate`` close to ``mean_predicted`` in every row.
    """
    p = _positive_proba(proba)
    y = _binary_labels(y_true, len(p))
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be an integer >= 1, got {n_bins!r}")
    if strategy == "quantile":
        edges = np.unique(np.quantile(p, np.linspace(0, 1, n_bins + 1))) if len(p) else np.array([0.0, 1.0])
    elif strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    else:
        raise ValueError(f"strategy must be 'quantile' or 'uniform', got {strategy!r}")
    if len(edges) < 2:
        edges = np.array([edges[0], edges[0]])
    # The binning rule of calibration_curve: a value on an inner edge belongs to the lower bin.
    which = np.searchsorted(edges[1:-1], p)
    rows = []
    for b in range(len(edges) - 1):
        mask = which == b
        if not mask.any():
            continue
        rows.append({"bin": int(b), "lower": float(edges[b]), "upper": float(edges[b + 1]), "n": int(mask.sum()),
                     "mean_predicted": float(p[mask].mean()), "observed_rate": float(y[mask].mean())})
    return rows


def json_safe(value: Any) -> Any:
    """``value`` as strict JSON: numpy scalars -> Python, NaN / inf / NaT -> ``None``, timestamps -> ISO
    text, durations -> text (``pd.Timestamp`` / ``pd.Timedelta`` read both back)."""
    if value is pd.NaT or (isinstance(value, (np.datetime64, np.timedelta64)) and np.isnat(value)):
        return None
    if isinstance(value, (pd.Timestamp, np.datetime64)):
        return pd.Timestamp(value).isoformat()
    if isinstance(value, (pd.Timedelta, np.timedelta64)):
        return str(pd.Timedelta(value))
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return [json_safe(v) for v in value.tolist()]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def cross_validate_walk_forward(model: Any, X: Any, y: Any, *, detection_times: Any = None, exit_times: Any = None,
                                splitter: Any = None, threshold: float = 0.5, times: Any = None) -> dict[str, Any]:
    """The honest out-of-sample score: fit on each walk-forward training set, predict its test block.

    ``model`` is an estimator (cloned for every fold) or a zero-argument factory returning one.
    ``splitter`` is a :class:`~.validation.PurgedWalkForward` (default: 5 folds, no embargo), any
    scikit-learn splitter, or a list of folds such as :func:`~.validation.walk_forward_by_period`'s.
    Folds whose training labels hold a single class are skipped. A splitter whose test blocks
    overlap, or that trains on rows detected after its test block starts, is refused.

    Returns ``metrics`` (:func:`evaluate` on all out-of-sample predictions together), ``folds``
    (per-fold metrics and periods), ``calibration`` (:func:`calibration_table`), and the
    predictions: ``test_idx`` (positions in ``X``), ``y_true``, ``proba`` (one per test row).
    """
    detection_times = _renamed(detection_times, times, "times", "detection_times")
    y_arr = _binary_labels(y, len(X))
    t, e = find_label_times(X, detection_times=detection_times, exit_times=exit_times)
    windows = label_windows(X, detection_times=t, exit_times=e, require_exit=False) if t is not None else None
    splitter = PurgedWalkForward(5) if splitter is None else splitter
    if isinstance(splitter, PurgedWalkForward):
        folds = splitter.split(X, y_arr, detection_times=t, exit_times=e)
    elif hasattr(splitter, "split"):
        folds = splitter.split(X, y_arr)
    else:
        folds = splitter
    fit_takes_times = None                  # fit(..., detection_times=, exit_times=) like SignalQualityModel
    seen = np.zeros(len(y_arr), dtype=bool)
    idx_parts, p_parts, fold_rows = [], [], []
    for k, fold in enumerate(folds):
        train, test = np.asarray(fold[0], dtype=np.intp), np.asarray(fold[1], dtype=np.intp)
        if seen[test].any():
            raise ValueError(f"fold {k}: test rows already tested by an earlier fold; walk-forward test blocks "
                             "must be disjoint")
        seen[test] = True
        row: dict[str, Any] = {"fold": k, "n_train": int(len(train)), "n_test": int(len(test))}
        if windows is not None:
            if len(train) and windows.start[train].max() >= windows.start[test].min():
                raise ValueError(f"fold {k} trains on rows detected after its test block starts: a shuffled or "
                                 "k-fold splitter; use PurgedWalkForward")
            row |= {"train_start": _when(windows.times, windows.start, train, np.argmin),
                    "train_end": _when(windows.exit_times, windows.end, train, np.argmax),
                    "test_start": _when(windows.times, windows.start, test, np.argmin),
                    "test_end": _when(windows.times, windows.start, test, np.argmax)}
        if len(np.unique(y_arr[train])) < 2:
            fold_rows.append(row | {"skipped": "training labels hold a single class"})
            continue
        est = clone(model) if hasattr(model, "fit") else model()
        if fit_takes_times is None:
            fit_takes_times = "detection_times" in inspect.signature(est.fit).parameters
        X_tr, X_te = _rows(X, train), _rows(X, test)
        if fit_takes_times and t is not None:
            est.fit(X_tr, y_arr[train], detection_times=t[train], exit_times=None if e is None else e[train])
        else:
            est.fit(X_tr, y_arr[train])
        p = np.asarray(est.predict_proba(X_te))[:, 1]
        fold_rows.append(row | evaluate(y_arr[test], p, threshold=threshold))
        idx_parts.append(test)
        p_parts.append(p)
    if not idx_parts:
        raise ValueError("no fold could be evaluated: every training set was empty or held a single class")
    test_idx, proba = np.concatenate(idx_parts), np.concatenate(p_parts)
    return {"metrics": evaluate(y_arr[test_idx], proba, threshold=threshold), "folds": fold_rows,
            "calibration": calibration_table(y_arr[test_idx], proba), "test_idx": test_idx,
            "y_true": y_arr[test_idx], "proba": proba}


def _rows(X: Any, idx: np.ndarray) -> Any:
    return X.iloc[idx] if hasattr(X, "iloc") else np.asarray(X)[idx]


def _when(raw: Any, units: np.ndarray, rows: np.ndarray, pick: Any) -> Any:
    """The raw time (ISO text for datetimes) of the row picked by ``pick`` (argmin / argmax)."""
    v = raw[rows[int(pick(units[rows]))]]
    return v.isoformat() if isinstance(v, pd.Timestamp) else json_safe(v)
