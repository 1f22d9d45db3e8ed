"""What :meth:`SignalQualityModel.fit <.model.SignalQualityModel.fit>` accepts, turned into plain arrays.

Features: a DataFrame (or a 2-d array, whose columns are then named ``x0, x1, ...``) of numeric
columns, NaN allowed (XGBoost sends it down each split's learned default branch). Targets: a 0/1
label array (the confidence head only) or a targets frame with ``label`` and any of ``r_multiple``
(the expected-R head) and ``stop_first`` (the stop-risk head); NaN marks an unknown target for
that head only. Checking and converting is all this module does (and :func:`check_features`, the feature contract
of a fitted model); it knows nothing of XGBoost.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from .metrics import _binary_labels
from .persist import missing_features_error

__all__ = ["HEADS", "TARGET_COLUMNS", "MIN_REGRESSION_ROWS", "head_targets", "feature_frame", "numeric_matrix",
           "check_features"]

HEADS = ("confidence", "expected_r", "stop_risk")
"""The model's heads: ``ml_confidence`` (P(win)), ``expected_r`` (R-multiple), ``stop_risk`` (P(stop first))."""
TARGET_COLUMNS = {"confidence": "label", "expected_r": "r_multiple", "stop_risk": "stop_first"}
"""The column of a targets frame each head learns (``fit(X, targets)``)."""
MIN_REGRESSION_ROWS = 10
"""Fewest known ``r_multiple`` values the expected-R head is trained on."""


def head_targets(y: Any, n: int) -> dict[str, np.ndarray]:
    """Per-head float targets from a label array or a targets frame (NaN = unknown for that head)."""
    if not isinstance(y, pd.DataFrame):
        return {"confidence": _binary_labels(y, n).astype(np.float64)}
    if "label" not in y.columns:
        raise ValueError(f"a targets frame needs a 'label' column (and r_multiple, stop_first for the other "
                         f"heads); got columns {list(map(str, y.columns))[:12]}")
    if len(y) != n:
        raise ValueError(f"targets have {len(y)} rows but X has {n}")
    out = {"confidence": _binary_labels(y["label"].to_numpy(dtype=np.float64, na_value=np.nan), n)
           .astype(np.float64)}
    if "r_multiple" in y.columns:
        r = y["r_multiple"].to_numpy(dtype=np.float64, na_value=np.nan)
        if np.isinf(r).any():
            raise ValueError("r_multiple holds inf; an R-multiple is a finite number (NaN = unknown)")
        if np.isfinite(r).sum() >= MIN_REGRESSION_ROWS:
            out["expected_r"] = r
        else:
            warnings.warn(f"expected_r head not trained: only {int(np.isfinite(r).sum())} rows have an r_multiple "
                          f"(need {MIN_REGRESSION_ROWS})", UserWarning, stacklevel=3)
    if "stop_first" in y.columns:
        s = y["stop_first"].to_numpy(dtype=np.float64, na_value=np.nan)
        known = s[np.isfinite(s)]
        if not np.isin(known, (0.0, 1.0)).all():
            raise ValueError("stop_first must be 1 (the stop was hit first), 0 or NaN")
        if len(np.unique(known)) == 2:
            out["stop_risk"] = s
        else:
            warnings.warn("stop_risk head not trained: stop_first holds a single class", UserWarning, stacklevel=3)
    return out


def feature_frame(X: Any) -> pd.DataFrame:
    """``X`` as a DataFrame with string column names (duplicates refused)."""
    if isinstance(X, pd.DataFrame):
        if not X.columns.is_unique:
            raise ValueError(f"X has duplicate column names: {sorted(set(X.columns[X.columns.duplicated()]))}")
        return X.rename(columns=str)
    arr = np.asarray(X)
    if arr.ndim != 2:
        raise ValueError(f"X must be a 2-d table of features, got shape {arr.shape}")
    return pd.DataFrame(arr, columns=[f"x{i}" for i in range(arr.shape[1])])


def numeric_matrix(frame: pd.DataFrame) -> np.ndarray:
    """The frame's values as float64 (NaN for missing); a non-numeric column is refused by name."""
    bad = [str(c) for c, dt in frame.dtypes.items() if not (pd.api.types.is_numeric_dtype(dt)
                                                           or pd.api.types.is_bool_dtype(dt))]
    if bad:
        raise ValueError(f"features must be numeric (NaN allowed); non-numeric columns: {bad}. Put detection and "
                         "exit times in the index or pass times=/exit_times=")
    return frame.to_numpy(dtype=np.float64, na_value=np.nan)


def check_features(model: Any, available_feature_names: Any, schema_hash: str | None = None) -> list[str]:
    """Check that ``available_feature_names`` covers what ``model`` needs; return the model's features.

    Missing features are a :class:`ModelError` listing them; extra features are ignored (the model
    picks its own columns, in its own order). A ``schema_hash`` that differs from the one the model
    was trained with only warns: same names may still mean the same thing.
    """
    needed = list(model.feature_names)
    have = set(available_feature_names)
    missing = [f for f in needed if f not in have]
    if missing:
        raise missing_features_error(missing, "the feature extractor's output")
    trained = getattr(model, "feature_schema_", None)
    if schema_hash is not None and trained is not None and schema_hash != trained:
        warnings.warn(f"feature schema hash {schema_hash!r} differs from the model's {trained!r}: the features "
                      "were computed by another extractor version; scores may be off", UserWarning, stacklevel=2)
    return needed
