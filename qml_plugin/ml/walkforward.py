"""Anchored walk-forward training: one model per period, each trained only on labels known before it.

This is how ``qml run`` produces honest, out-of-sample ``ml_confidence`` for a whole history:

1. the timeline is cut into periods (``retrain_every_months``, default 12);
2. before each period a model is trained on every pattern whose label was known (exit time)
   before the period starts, minus the embargo (:func:`.validation.walk_forward_by_period`, purged);
3. each model is saved as a version (``v0001``, ``v0002`` ...; XGBoost JSON + metadata, no pickle);
4. every pattern is then scored by the latest version that passes the out-of-sample guard
   (:func:`.guard.admissible_model`): the same rule the backtest filter applies, so the reported
   out-of-sample AUC describes exactly the scores the backtests used.

Patterns before the first model have no score (NaN): there, every mode equals the baseline.
A labeled pattern without an exit time (e.g. a user's label on a pattern that never filled) is
scored but never trained on: nobody can say when its label became known, so no period may use it.
"""
from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InsufficientDataError
from .guard import admissible_model
from .metrics import calibration_table, evaluate
from .model import SignalQualityModel
from .validation import walk_forward_by_period

__all__ = ["WalkForwardResult", "train_walk_forward"]


@dataclass
class WalkForwardResult:
    """Models per period, the out-of-sample score of every pattern, and its metrics."""

    root: Path
    models: list[SignalQualityModel]
    paths: list[Path]
    oos_proba: pd.Series                 # aligned with the input rows; NaN where no model may score
    first_model_time: pd.Timestamp | None  # start of the first test period
    metrics: dict = field(default_factory=dict)
    calibration: list = field(default_factory=list)


def train_walk_forward(X: pd.DataFrame, y, detection_times, exit_times, *, root: str | Path,
                       every_months: int = 12, min_train: int = 100, embargo: pd.Timedelta | None = None,
                       model_factory: Callable[[], SignalQualityModel] | None = None,
                       feature_schema: str | None = None, on_step: Callable[[str], None] | None = None,
                       ) -> WalkForwardResult:
    """Train and save one model per period under ``root`` (emptied first) and score every row OOS.

    ``y`` may hold NaN for rows without a known outcome: they are scored but never trained on.
    Raises :class:`InsufficientDataError` when no period has ``min_train`` labels before it.
    """
    root = Path(root)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    y = np.asarray(y, dtype=float)
    det = pd.DatetimeIndex(detection_times)
    ex = pd.DatetimeIndex(exit_times)
    labeled = ~np.isnan(y) & ~ex.isna()
    lab_idx = np.flatnonzero(labeled)
    folds = walk_forward_by_period(det[lab_idx], ex[lab_idx], freq=int(every_months),
                                   embargo=embargo if embargo is not None else 0, min_train=min_train,
                                   start=det.min().to_period("M").start_time if len(det) else None,
                                   end=det.max() + pd.Timedelta(1, "ns") if len(det) else None)
    factory = model_factory or SignalQualityModel
    models, paths, starts = [], [], []
    for fold in folds:
        train = lab_idx[fold.train_idx]
        if len(np.unique(y[train])) < 2:
            continue
        model = factory().fit(X.iloc[train], y[train].astype(int), times=det[train], exit_times=ex[train],
                              feature_schema=feature_schema)
        paths.append(model.save_version(root, metrics={"train_end": str(fold.train_end),
                                                       "test_start": str(fold.test_start)}))
        models.append(model)
        starts.append(pd.Timestamp(fold.test_start))
        if on_step:
            on_step(f"model {len(models)} trained on {len(train)} labels up to {fold.train_end:%Y-%m-%d}")
    if not models:
        raise InsufficientDataError(
            f"walk-forward training needs at least {min_train} labeled patterns before a period starts; "
            f"only {int(labeled.sum())} labels exist in all (lower walk_forward.min_train_labels or use more data)")
    which = admissible_model(det, [m.trained_on_end_ for m in models], embargo)
    proba = np.full(len(X), np.nan)
    for k, model in enumerate(models):
        rows = np.flatnonzero(which == k)
        if len(rows):
            proba[rows] = model.predict_proba(X.iloc[rows])[:, 1]
    scored = ~np.isnan(proba) & labeled
    metrics, cal = {}, []
    if scored.sum() >= 2:
        metrics = evaluate(y[scored].astype(int), proba[scored])
        cal = calibration_table(y[scored].astype(int), proba[scored], n_bins=10)
    first = starts[0]
    return WalkForwardResult(root, models, paths, pd.Series(proba, index=X.index), first, metrics, cal)
