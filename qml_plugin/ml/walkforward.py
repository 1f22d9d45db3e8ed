"""Anchored walk-forward training: one model per period, each trained only on labels known before it.

This is how a run produces honest, out-of-sample scores for a whole history:

1. the timeline is cut into periods (``every_months``, default 12);
2. before each period a model (three heads when ``y`` is a targets frame, SPEC §7) is trained on
   every pattern whose label was known before the period starts, minus the ``embargo`` (a
   duration; :func:`.validation.walk_forward_by_period`, purged). Its ``ml_confidence`` is
   calibrated inside that training window on purged held-out predictions (the model's own
   ``fit``: by default the window's last 20 %), never on the period it will score;
3. each model is saved as a version (``v0001``, ``v0002`` ...; XGBoost JSON + metadata, no pickle);
4. every pattern is then scored by the latest version that passes the out-of-sample guard
   (:func:`.guard.admissible_model`): the same rule the backtest filter applies, so the reported
   out-of-sample metrics describe exactly the scores the backtests used.

Times may be naive stamps of one clock (a single market) or UTC instants (``known_at_utc`` and
``exit_known_at_utc``, tz-aware or naive UTC throughout) for a universe: the guard, the purge and
the retrain dates all compare the times given here.

**Regime models** (SPEC §13, ``regimes=``): at each step, a regime (``regime_at_detection``) with at
least ``min_regime_labels`` training labels gets its own model, trained on that regime's rows only;
a pattern of that regime is scored by the latest admissible model of its regime, any other pattern
by the pooled model (:func:`route_models`, the one routing rule: the universe schemes and the regime
comparison call it too). ``WalkForwardResult.regime_models`` says which regimes had their own.

Patterns before the first model have no score (NaN): there, every mode equals the baseline.
A labeled pattern without an exit time (e.g. a user's label on a pattern that never filled) is
scored but never trained on: nobody can say when its label became known, so no period may use it.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ConfigError, InsufficientDataError
from .guard import admissible_model
from .metrics import calibration_table, evaluate, expected_calibration_error
from .model import SignalQualityModel
from .validation import walk_forward_by_period

__all__ = ["WalkForwardResult", "train_walk_forward", "score_by_model", "route_models"]


@dataclass
class WalkForwardResult:
    """Models per period, the out-of-sample scores of every pattern, and their metrics.

    The ``oos_*`` Series are aligned with the input rows; NaN where no model may score.
    ``oos_raw_proba`` is the same models' P(win) before calibration (to show what calibration did).
    ``metrics`` holds :func:`~.metrics.evaluate` of the scored labeled rows plus ``ece`` and
    ``ece_uncalibrated`` (10 equal-count bins). ``model_family`` names, per model, ``"pooled"`` or
    the regime it was trained for; ``regime_models`` lists the regimes that had their own model.
    """

    root: Path
    models: list[SignalQualityModel]
    paths: list[Path]
    oos_proba: pd.Series
    first_model_time: pd.Timestamp | None       # start of the first test period
    metrics: dict = field(default_factory=dict)
    calibration: list = field(default_factory=list)
    oos_expected_r: pd.Series | None = None
    oos_stop_risk: pd.Series | None = None
    oos_raw_proba: pd.Series | None = None
    model_family: list[str] = field(default_factory=list)
    regime_models: list[str] = field(default_factory=list)

    @property
    def fits(self) -> int:
        """Models trained (each with its calibration folds)."""
        return len(self.models)


def train_walk_forward(X: pd.DataFrame, y, detection_times, exit_times, *, root: str | Path,
                       every_months: int = 12, min_labels: int = 100, embargo: pd.Timedelta | None = None,
                       model_factory: Callable[[], SignalQualityModel] | None = None,
                       feature_schema: str | None = None, on_step: Callable[[str], None] | None = None,
                       regimes=None, min_regime_labels: int = 50, min_train: int | None = None,
                       ) -> WalkForwardResult:
    """Train and save one model per period under ``root`` and score every row out of sample.

    ``y``: 0/1 labels (NaN = no known outcome: scored, never trained on), or a targets frame with
    ``label``, ``r_multiple``, ``stop_first`` (three heads). ``root`` must be a new or empty folder
    (two runs never share a model folder; nothing is deleted). ``regimes``: each row's
    ``regime_at_detection`` to train regime models (see the module docstring). Raises
    :class:`InsufficientDataError` when no period has ``min_labels`` labels before it.
    ``min_train=`` is the deprecated spelling of ``min_labels=``.
    """
    if min_train is not None:
        warnings.warn("min_train= is deprecated; use min_labels=", DeprecationWarning, stacklevel=2)
        min_labels = min_train
    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ConfigError(f"walk-forward model folder {str(root)!r} already exists and is not empty: give each "
                          "run its own folder (nothing is deleted or overwritten)")
    root.mkdir(parents=True, exist_ok=True)
    targets = y.reset_index(drop=True) if isinstance(y, pd.DataFrame) else None
    label = (targets["label"] if targets is not None else pd.Series(y)).to_numpy(dtype=float, na_value=np.nan)
    det, ex = pd.DatetimeIndex(detection_times), pd.DatetimeIndex(exit_times)
    if not (len(X) == len(label) == len(det) == len(ex)):
        raise ValueError(f"X, y, detection_times and exit_times must have one row per pattern; got {len(X)}, "
                         f"{len(label)}, {len(det)}, {len(ex)}")
    labeled = ~np.isnan(label) & ~ex.isna()
    lab_idx = np.flatnonzero(labeled)
    month0 = det.min().normalize().replace(day=1) if len(det) else None
    folds = walk_forward_by_period(det[lab_idx], ex[lab_idx], freq=int(every_months), embargo=embargo,
                                   min_labels=min_labels, start=month0,
                                   end=det.max() + pd.Timedelta(1, "ns") if len(det) else None)
    factory = model_factory or (lambda: SignalQualityModel(embargo=embargo))
    regime = None if regimes is None else pd.Series(regimes).reset_index(drop=True).to_numpy(dtype=object)

    def fit(rows: np.ndarray, folder: Path, fold) -> tuple[SignalQualityModel, Path] | None:
        if len(np.unique(label[rows])) < 2:
            return None
        model = factory()
        if embargo is not None and getattr(model, "embargo", 0) is None:
            model.set_params(embargo=embargo)        # calibration folds purge like the walk-forward does
        yt = targets.iloc[rows] if targets is not None else label[rows].astype(int)
        model.fit(X.iloc[rows], yt, detection_times=det[rows], exit_times=ex[rows], feature_schema=feature_schema)
        return model, model.save_version(folder, metrics={"train_end": str(fold.train_end),
                                                          "test_start": str(fold.test_start)})

    models, paths, family, starts = [], [], [], []
    for fold in folds:
        train = lab_idx[fold.train_idx]
        jobs = [("pooled", train, root)]
        if regime is not None:
            jobs += [(str(r), train[regime[train] == r], root / f"regime_{r}")
                     for r in sorted({x for x in regime[train] if x is not None and x == x})
                     if (regime[train] == r).sum() >= min_regime_labels]
        for name, rows, folder in jobs:
            done = fit(rows, folder, fold)
            if done is None:
                continue
            models.append(done[0])
            paths.append(done[1])
            family.append(name)
            starts.append(pd.Timestamp(fold.test_start))
            if on_step:
                on_step(f"{name} model {len(models)} trained on {len(rows)} labels up to {fold.train_end:%Y-%m-%d}")
    if not any(f == "pooled" for f in family):
        raise InsufficientDataError(
            f"walk-forward training needs at least {min_labels} labeled patterns before a period starts; "
            f"only {int(labeled.sum())} labels exist in all (lower walk_forward.min_train_labels or use more data)")
    scores = _score(X, det, models, family, regime, embargo)
    result = WalkForwardResult(root, models, paths, pd.Series(scores["proba"], index=X.index), min(starts),
                               model_family=family, regime_models=sorted(set(family) - {"pooled"}))
    result.oos_raw_proba = pd.Series(scores["raw"], index=X.index)
    for head, attr in (("expected_r", "oos_expected_r"), ("stop_risk", "oos_stop_risk")):
        if head in scores:
            setattr(result, attr, pd.Series(scores[head], index=X.index))
    scored = ~np.isnan(scores["proba"]) & labeled
    if scored.sum() >= 2:
        yy = label[scored].astype(int)
        result.metrics = evaluate(yy, scores["proba"][scored]) | {
            "ece": expected_calibration_error(yy, scores["proba"][scored]),
            "ece_uncalibrated": expected_calibration_error(yy, scores["raw"][scored])}
        result.calibration = calibration_table(yy, scores["proba"][scored], n_bins=10)
    return result


def _score(X: pd.DataFrame, det: pd.DatetimeIndex, models: list, family: list[str], regime,
           embargo) -> dict[str, np.ndarray]:
    """Each row's scores from the latest admissible model of its family (:func:`route_models`)."""
    out = score_by_model(X, route_models(det, models, family, regime, embargo=embargo), models)
    out["proba"], out["raw"] = out.pop("confidence"), out.pop("raw_confidence")
    shared = set.intersection(*(set(m.heads_) for m in models))
    return {k: v for k, v in out.items() if k in ("proba", "raw") or k in shared}


def route_models(detection_times, models: list, family: list[str] | None = None, regime=None, *,
                 embargo: pd.Timedelta | None = None) -> np.ndarray:
    """Which of ``models`` scores each row: the index of the latest admissible model of its family, -1 for none.

    ``family`` names each model's family (``"pooled"`` or a regime, :attr:`WalkForwardResult.model_family`;
    None = all pooled). A row whose ``regime`` has an admissible model of that regime is scored by the latest
    one; every other row (its regime had no model, or none passes the guard yet, or ``regime`` is None) by
    the latest admissible pooled model. ``regime=None`` therefore gives the **pooled-only** routing of the
    same models: what the regime models are compared against. The guard is
    :func:`.guard.admissible_model` with ``embargo`` for every family alike. The one routing rule: the
    walk-forward trainer, the universe schemes and the regime comparison all call it.
    """
    det = pd.DatetimeIndex(detection_times)
    fam = np.asarray(family if family is not None else ["pooled"] * len(models), dtype=object)
    if len(fam) != len(models):
        raise ValueError(f"family names {len(fam)} models, but {len(models)} models were given")
    ends = np.array([m.trained_on_end_ for m in models], dtype=object)
    which = np.full(len(det), -1)
    pooled = np.flatnonzero(fam == "pooled")
    hit = admissible_model(det, list(ends[pooled]), embargo=embargo)
    which[hit >= 0] = pooled[hit[hit >= 0]]
    if regime is None:
        return which
    regime = pd.Series(regime).reset_index(drop=True).to_numpy(dtype=object)
    if len(regime) != len(det):
        raise ValueError(f"regime has {len(regime)} rows, detection_times {len(det)}")
    for name in sorted(set(fam.tolist()) - {"pooled"}):
        own = np.flatnonzero(fam == name)
        rows = np.flatnonzero(regime == name)
        hit = admissible_model(det[rows], list(ends[own]), embargo=embargo)
        which[rows[hit >= 0]] = own[hit[hit >= 0]]
    return which


def score_by_model(X: pd.DataFrame, which: np.ndarray, models: list) -> dict[str, np.ndarray]:
    """Every head for each row ``i`` of ``X`` from ``models[which[i]]`` (NaN where ``which`` is -1),
    one batch per model: what the walk-forward trainer and :mod:`qml_plugin.scoring` both need."""
    out = {h: np.full(len(X), np.nan) for h in ("confidence", "raw_confidence", "expected_r", "stop_risk")}
    for k, model in enumerate(models):
        rows = np.flatnonzero(which == k)
        if len(rows):
            for head, values in model.predict_heads(X.iloc[rows]).items():
                out[head][rows] = values
    return out
