"""The signal-quality model: three XGBoost heads that score each QML pattern (SPEC §7).

:class:`SignalQualityModel` answers three questions about a pattern from its feature vector,
with three heads trained together on the same rows:

- ``predict_proba(X)[:, 1]`` = ``ml_confidence``, P(win), **calibrated** (Platt by default);
- ``predict_expected_r(X)`` = ``expected_r``, the trade's expected R-multiple;
- ``predict_stop_risk(X)`` = ``stop_risk``, P(the stop is hit first), calibrated like the first.

Why three: a win/loss label alone rewards near targets (P(target first) is about 1/(1 + rr)
whatever the market does), so a high ``ml_confidence`` can carry no expectancy. ``expected_r``
is what the ``expected_value`` mode decides on.

**The expected-R head** is an XGBoost regression (squared error) on the **winsorized** R-multiple:
the training targets are clipped to their own 1st and 99th percentiles (``r_clip_``, stored). R is
bounded near -1 on the left (the stop) and has a fat right tail (swing targets, gaps), and one
+15 R trade would otherwise pull every nearby leaf. Clipping keeps the estimate a mean (what
expectancy needs; a pseudo-Huber or median loss would estimate something closer to the median,
which on a skewed payoff is not the expectation) while bounding the influence of a single trade.

**Calibration** is fitted inside the training data only, never on the scored period. By default
(``calibration_cv=3``) a purged walk-forward over the training window (3 folds, ``embargo``)
gives out-of-fold margins, on which :mod:`.calibrator` fits the map: 3 extra fits per probability
head. A share such as ``calibration_cv=0.4`` holds out that final part of the window instead (in
time order, purged: the rows before it whose labels were known before it began train one more
booster per probability head, whose margins over the hold-out the map is fitted on): one extra fit
per head, but on the shipped universe a worse ECE for windows of a few hundred labels
(BENCHMARKS.md, "fit budget"). The final heads are always fitted on the whole window. With fewer than
:data:`~.calibrator.MIN_CALIBRATION_SAMPLES` out-of-fold rows calibration is skipped, with a warning.

It is a scikit-learn estimator (``fit`` / ``predict_proba`` / ``get_params``, usable with ``clone``
and ``cv=``); trees, missing values (NaN goes down XGBoost's learned default branch) and the file
format are XGBoost's. ``fit`` records ``trained_on_end_``, the last time a training label became
known: the out-of-sample guard (:mod:`.guard`) lets the model score only patterns after it.
Persistence (:mod:`.persist`): one XGBoost JSON file per head plus ``metadata.json`` with sha256.

    >>> import numpy as np, pandas as pd
    >>> rng = np.random.default_rng(0)
    >>> X = pd.DataFrame({"ctx_a": rng.normal(size=400), "geo_b": rng.normal(size=400)})
    >>> r = np.where(rng.random(400) < 0.4 + 0.2 * (X.ctx_a > 0), 2.0, -1.0)
    >>> targets = pd.DataFrame({"label": (r > 0).astype(int), "r_multiple": r, "stop_first": (r < 0).astype(int)})
    >>> days = pd.date_range("2020-01-01", periods=400, freq="D")
    >>> m = SignalQualityModel(n_estimators=20).fit(X, targets, detection_times=days,
    ...                                             exit_times=days + pd.Timedelta("3D"))
    >>> m.predict_proba(X).shape, m.predict_expected_r(X).shape, list(m.explain(X.iloc[:2]).columns)
    ((400, 2), (400,), ['ctx_a', 'geo_b', 'bias'])
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from ..errors import InsufficientDataError, ModelError
from . import persist
from .calibrator import CALIBRATION_METHODS, MIN_CALIBRATION_SAMPLES, apply_calibration, fit_calibrator
from .inputs import HEADS, TARGET_COLUMNS, check_features, feature_frame, head_targets, numeric_matrix
from .persist import METADATA_FILE, MODEL_FILE, missing_features_error
from .validation import PurgedWalkForward, _renamed, find_label_times, label_windows

__all__ = ["SignalQualityModel", "check_features", "MODEL_FILE", "METADATA_FILE", "HEADS", "TARGET_COLUMNS"]

R_CLIP_QUANTILES = (0.01, 0.99)
"""Training R-multiples are winsorized to these quantiles of their own distribution."""


class SignalQualityModel(ClassifierMixin, BaseEstimator):
    """Three XGBoost heads over pattern features; ``predict_proba(X)[:, 1]`` is ``ml_confidence``.

    The named parameters are XGBoost's, with defaults for ~500-5000 patterns x ~180 features
    (shallow trees, row and column subsampling, 64 histogram bins), shared by the three heads. With
    so few rows a tree's cost is mostly its histograms (bins x features), not the rows: 150 trees at
    learning rate 0.1 with 64 bins fit about 4x faster than 300 at 0.05 with XGBoost's 256 bins, at
    the same out-of-sample AUC on the shipped universe within its noise (BENCHMARKS.md, "fit budget").
    ``params`` holds any other XGBoost keyword and overrides the named ones. ``calibration`` =
    ``"sigmoid"`` (Platt, the default: strictly monotone, so the ranking and AUC are the
    uncalibrated model's), ``"isotonic"`` (more flexible, but its steps tie patterns and cost
    ranking resolution) or None; ``calibration_cv`` = where the calibrators' out-of-sample margins
    come from: an integer number of purged walk-forward folds (default 3), or a share in (0, 1) of
    the training window held out at its end (at least
    :data:`~.calibrator.MIN_CALIBRATION_SAMPLES` rows and at most half); both purge with ``embargo``
    (a duration).

    Fitted attributes: ``boosters_`` (head -> ``xgb.Booster``; ``booster_`` is the confidence
    head), ``heads_`` (the heads trained), ``calibrations_`` (head -> stored calibrator or None),
    ``r_clip_``, ``feature_names_in_``, ``n_features_in_``, ``classes_``, ``training_samples_``,
    ``base_rate_``, ``trained_on_start_`` / ``trained_on_end_`` (first detection, last label
    known), ``feature_schema_``; after ``load`` also ``version_``, ``metrics_``, ``metadata_``.
    """

    def __init__(self, params: dict | None = None, *, calibration: str | None = "sigmoid",
                 n_estimators: int = 150, max_depth: int = 3, learning_rate: float = 0.1, subsample: float = 0.8,
                 colsample_bytree: float = 0.5, min_child_weight: float = 5.0, reg_lambda: float = 1.0,
                 max_bin: int = 64, n_jobs: int = 1, random_state: int = 0, calibration_cv: int | float = 3,
                 embargo: Any = None, model_name: str = "signal_quality") -> None:
        self.params = params
        self.calibration = calibration
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.min_child_weight = min_child_weight
        self.reg_lambda = reg_lambda
        self.max_bin = max_bin
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.calibration_cv = calibration_cv
        self.embargo = embargo
        self.model_name = model_name

    # ----------------------------------------------------------------------------------- fitting
    def xgb_params(self, head: str = "confidence") -> dict[str, Any]:
        """The XGBoost keyword arguments of one head (``params`` overrides the named ones)."""
        objective = {"objective": "reg:squarederror", "eval_metric": "rmse"} if head == "expected_r" else \
            {"objective": "binary:logistic", "eval_metric": "logloss"}
        out = {"n_estimators": self.n_estimators, "max_depth": self.max_depth, "learning_rate": self.learning_rate,
               "subsample": self.subsample, "colsample_bytree": self.colsample_bytree,
               "min_child_weight": self.min_child_weight, "reg_lambda": self.reg_lambda, "max_bin": self.max_bin,
               **objective,
               "tree_method": "hist", "n_jobs": self.n_jobs, "random_state": self.random_state}
        extra = {k: v for k, v in dict(self.params or {}).items() if head != "expected_r" or k not in objective}
        return out | extra

    def fit(self, X: Any, y: Any, *, detection_times: Any = None, exit_times: Any = None,
            feature_schema: str | None = None, times: Any = None) -> SignalQualityModel:
        """Train on features ``X`` (DataFrame; NaN allowed) and targets ``y``; return ``self``.

        ``y`` is a 0/1 label array (the confidence head only; the other heads then raise
        :class:`ModelError` when asked), or a DataFrame with ``label`` and any of ``r_multiple``,
        ``stop_first`` (all three heads, e.g. ``PatternRegistry.get_training_data(targets=True)``;
        a row with NaN ``r_multiple`` / ``stop_first`` is left out of that head only).
        ``detection_times`` / ``exit_times`` are when each pattern was detected and when its label
        became known: UTC instants (``known_at_utc`` / ``exit_known_at_utc``) or naive stamps, found
        as :mod:`.validation` describes (also an ``exit_known_at_utc`` / ``exit_time`` column of
        ``y``). Without exit times ``trained_on_end_`` falls back to the last detection time, with a
        warning. ``times=`` is the deprecated spelling of ``detection_times=``.
        """
        detection_times = _renamed(detection_times, times, "times", "detection_times")
        if self.calibration not in CALIBRATION_METHODS:
            raise ValueError(f"calibration must be None, 'isotonic' or 'sigmoid', got {self.calibration!r}")
        frame = feature_frame(X)
        arr = numeric_matrix(frame)
        targets = head_targets(y, len(frame))
        labels = targets["confidence"].astype(np.int64)
        classes = np.unique(labels)
        if len(classes) < 2:
            raise InsufficientDataError(f"training labels are all {int(classes[0]) if len(classes) else 'missing'}"
                                        f" ({len(labels)} rows): the model needs both wins (1) and losses (0)")
        if exit_times is None and isinstance(y, pd.DataFrame):
            exit_times = next((y[c] for c in ("exit_known_at_utc", "exit_time") if c in y.columns), None)
        t, e = find_label_times(frame, detection_times=detection_times, exit_times=exit_times)
        if t is not None and e is None:
            warnings.warn("fit() got detection times but no exit times: trained_on_end_ is the last detection "
                          "time, so the out-of-sample guard ignores the label horizon", UserWarning, stacklevel=2)
        windows = label_windows(frame, detection_times=t, exit_times=e, require_exit=False) if t is not None else None
        if windows is not None and (np.isinf(windows.end).any() or (windows.end == np.iinfo(np.int64).max).any()):
            raise ValueError("exit_times has NaT/NaN for labeled rows: a label is known only once the trade exited")
        self.heads_ = [h for h in HEADS if h in targets]
        self.r_clip_ = None
        if "expected_r" in targets:
            r = targets["expected_r"]
            lo, hi = np.quantile(r[np.isfinite(r)], R_CLIP_QUANTILES)
            self.r_clip_ = (float(lo), float(hi))
        self.calibrations_ = dict.fromkeys(self.heads_)
        if self.calibration is not None:
            self.calibrations_.update(self._fit_calibration(arr, targets, windows))
        self.boosters_ = self._fit_heads(self.heads_, arr, targets)
        self.classes_ = np.array([0, 1])
        self.feature_names_in_, self.n_features_in_ = np.asarray(frame.columns, dtype=object), frame.shape[1]
        self.training_samples_, self.base_rate_ = len(labels), float(labels.mean())
        self.feature_schema_ = feature_schema
        self.trained_on_start_ = self.trained_on_end_ = None
        if windows is not None:
            first, last = windows.times[int(np.argmin(windows.start))], windows.exit_times[int(np.argmax(windows.end))]
            convert = pd.Timestamp if windows.is_datetime else (lambda v: np.asarray(v).item())
            self.trained_on_start_, self.trained_on_end_ = convert(first), convert(last)
        return self

    def _fit_heads(self, heads: list[str], arr: np.ndarray, targets: dict, rows: np.ndarray | None = None
                   ) -> dict[str, xgb.Booster]:
        """Boosters of ``heads`` on ``rows`` (all rows by default) whose target is known.

        Heads that know the same rows share one quantized matrix (XGBoost's ``QuantileDMatrix``,
        built once, relabelled per head): with a few thousand rows, sketching 188 features costs
        about as much as boosting a hundred shallow trees.
        """
        base = np.arange(len(arr)) if rows is None else rows
        out, dm, dm_rows = {}, None, None
        for head in heads:
            target = targets[head]
            keep = base[np.isfinite(target[base])]
            y = np.clip(target[keep], *self.r_clip_) if head == "expected_r" else target[keep].astype(np.int64)
            params = self.xgb_params(head)
            if dm is None or not np.array_equal(keep, dm_rows):
                dm, dm_rows = xgb.QuantileDMatrix(arr[keep], label=y, max_bin=int(params.get("max_bin", 256)),
                                                  nthread=self.n_jobs), keep
            else:
                dm.set_label(y)
            rounds = int(params.pop("n_estimators"))
            params["nthread"], params["seed"] = params.pop("n_jobs"), params.pop("random_state")
            out[head] = xgb.train(params, dm, num_boost_round=rounds)
        return out

    def _fit_calibration(self, arr: np.ndarray, targets: dict, windows: Any) -> dict[str, dict | None]:
        """Calibrators of the probability heads, fitted on purged held-out margins (``calibration_cv``)."""
        if windows is None:       # no times: rows are taken to be in time order, nothing to purge
            t = e = np.arange(len(arr), dtype=np.float64)
            embargo = 0
        else:
            t, e, embargo = windows.times, windows.exit_times, self.embargo
        heads = [h for h in ("confidence", "stop_risk") if h in targets]
        margins: dict[str, list] = {h: [] for h in heads}
        ys: dict[str, list] = {h: [] for h in heads}
        splitter = self._calibration_splitter(len(arr), embargo)
        try:
            folds = list(splitter.split(arr, detection_times=t, exit_times=e))
        except ValueError:       # too few rows for the folds
            folds = []
        for train, test in folds:
            usable = [h for h in heads if len(np.unique(targets[h][train][np.isfinite(targets[h][train])])) == 2
                      and np.isfinite(targets[h][test]).any()]
            for h, booster in self._fit_heads(usable, arr, targets, train).items():
                te = test[np.isfinite(targets[h][test])]
                margins[h].append(booster.inplace_predict(arr[te], predict_type="margin"))
                ys[h].append(targets[h][te])
        out: dict[str, dict | None] = {}
        for h in heads:
            y_oos = np.concatenate(ys[h]) if ys[h] else np.array([])
            if len(y_oos) < MIN_CALIBRATION_SAMPLES or len(np.unique(y_oos)) < 2:
                warnings.warn(f"{h} head left uncalibrated: calibration={self.calibration!r} needs at least "
                              f"{MIN_CALIBRATION_SAMPLES} out-of-fold predictions of both classes "
                              f"(calibration_cv={self.calibration_cv!r}, purged), got {len(y_oos)}", UserWarning,
                              stacklevel=3)
                out[h] = None
                continue
            out[h] = fit_calibrator(self.calibration, np.concatenate(margins[h]).astype(np.float64),
                                    y_oos.astype(np.int64))
        return out

    def _calibration_splitter(self, n: int, embargo: Any) -> PurgedWalkForward:
        """The purged split(s) whose held-out margins the calibrators learn from (``calibration_cv``)."""
        cv = self.calibration_cv
        if isinstance(cv, (float, np.floating)) and 0 < cv < 1:
            size = min(max(int(round(cv * n)), MIN_CALIBRATION_SAMPLES), n // 2)
            return PurgedWalkForward(1, embargo=embargo, test_size=max(size, 1))
        if isinstance(cv, (int, np.integer)) and not isinstance(cv, bool) and cv >= 1:
            return PurgedWalkForward(int(cv), embargo=embargo)
        raise ValueError(f"calibration_cv must be a share in (0, 1) of the training window held out at its end, "
                         f"or an integer >= 1 of purged walk-forward folds; got {cv!r}")

    # -------------------------------------------------------------------------------- predicting
    @property
    def feature_names(self) -> list[str]:
        """The features the model needs, in its column order."""
        check_is_fitted(self, "boosters_")
        return [str(f) for f in self.feature_names_in_]

    @property
    def booster_(self) -> xgb.Booster:
        """The confidence head's booster (P(win))."""
        check_is_fitted(self, "boosters_")
        return self.boosters_["confidence"]

    @property
    def calibration_params_(self) -> dict | None:
        """The confidence head's stored calibrator (None when uncalibrated)."""
        check_is_fitted(self, "boosters_")
        return self.calibrations_.get("confidence")

    def has_head(self, head: str) -> bool:
        """Whether ``head`` (one of :data:`HEADS`) was trained."""
        check_is_fitted(self, "boosters_")
        return head in self.boosters_

    def decision_function(self, X: Any, *, head: str = "confidence") -> np.ndarray:
        """The raw margin of a head (log-odds for the probability heads, R for ``expected_r``)."""
        return self._booster(head).inplace_predict(self._matrix(X), predict_type="margin").astype(np.float64)

    def predict_proba(self, X: Any) -> np.ndarray:
        """``(n, 2)`` array of P(loss), P(win), calibrated. ``X``'s columns are picked by name (extra ones ignored)."""
        p = apply_calibration(self.calibrations_.get("confidence"), self.decision_function(X))
        return np.column_stack([1.0 - p, p])

    def predict_expected_r(self, X: Any) -> np.ndarray:
        """``expected_r`` of each pattern: the expected (winsorized) R-multiple of its trade.

        Kept inside ``r_clip_``: a mean of targets clipped to that range lies in it, while a sum of
        boosted leaves can overshoot it a little."""
        r = self.decision_function(X, head="expected_r")
        return r if self.r_clip_ is None else np.clip(r, *self.r_clip_)

    def predict_stop_risk(self, X: Any) -> np.ndarray:
        """``stop_risk`` of each pattern: P(the stop is hit first), calibrated like ``ml_confidence``."""
        return apply_calibration(self.calibrations_.get("stop_risk"), self.decision_function(X, head="stop_risk"))

    def predict_heads(self, X: Any) -> dict[str, np.ndarray]:
        """All heads at once: ``confidence`` (P(win)), ``raw_confidence`` (before calibration),
        ``expected_r`` and ``stop_risk`` (NaN when the model lacks the head)."""
        margin = self.decision_function(X)
        nan = np.full(len(margin), np.nan)
        return {"confidence": apply_calibration(self.calibrations_.get("confidence"), margin),
                "raw_confidence": apply_calibration(None, margin),
                "expected_r": self.predict_expected_r(X) if self.has_head("expected_r") else nan,
                "stop_risk": self.predict_stop_risk(X) if self.has_head("stop_risk") else nan}

    def predict(self, X: Any, *, threshold: float = 0.5) -> np.ndarray:
        """1 where P(win) >= ``threshold`` (the ``filter`` mode's rule), else 0."""
        return (self.predict_proba(X)[:, 1] >= threshold).astype(np.int64)

    def explain(self, X: Any, *, head: str = "confidence") -> pd.DataFrame:
        """Per-feature contributions of each prediction (XGBoost's TreeSHAP, ``pred_contribs``).

        One column per feature plus ``bias``; each row sums to the head's margin
        (:meth:`decision_function`: log-odds before calibration, or R for ``expected_r``). XGBoost
        adds the contributions in float32; ``bias`` takes up that rounding (about 1e-6, never a
        feature's share) so that every row adds up to the margin in float64.
        """
        booster = self._booster(head)
        arr = self._matrix(X)
        contribs = booster.predict(xgb.DMatrix(arr, nthread=self.n_jobs), pred_contribs=True).astype(np.float64)
        margin = booster.inplace_predict(arr, predict_type="margin").astype(np.float64)
        contribs[:, -1] += margin - contribs.sum(axis=1)
        index = X.index if isinstance(X, pd.DataFrame) else None
        return pd.DataFrame(contribs, index=index, columns=[*self.feature_names, "bias"])

    def feature_importances(self, *, importance_type: str = "gain", head: str = "confidence") -> pd.Series:
        """XGBoost's importance per feature (0 for unused ones), largest first."""
        score = self._booster(head).get_score(importance_type=importance_type)
        values = [float(score.get(f"f{i}", 0.0)) for i in range(self.n_features_in_)]
        s = pd.Series(values, index=self.feature_names, name=importance_type)
        return s.sort_values(ascending=False, kind="stable")

    def _booster(self, head: str) -> xgb.Booster:
        check_is_fitted(self, "boosters_")
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        if head not in self.boosters_:
            raise ModelError(f"this model has no {head} head: it was trained on labels only; fit it on a targets "
                             f"frame with columns {list(TARGET_COLUMNS.values())} (e.g. "
                             "PatternRegistry.get_training_data(targets=True)) to get all three heads")
        return self.boosters_[head]

    def _matrix(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "boosters_")
        if isinstance(X, pd.DataFrame):
            missing = [f for f in self.feature_names if f not in X.columns]
            if missing:
                raise missing_features_error(missing, "X")
            return numeric_matrix(X[self.feature_names])
        arr = np.asarray(X, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != self.n_features_in_:
            raise ModelError(f"X without column names must have shape (n, {self.n_features_in_}) in the "
                             f"model's feature order, got {arr.shape}; pass a DataFrame instead")
        return arr

    # ------------------------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike, *, metrics: dict | None = None, overwrite: bool = False) -> Path:
        """Write one XGBoost JSON file per head + ``metadata.json`` into directory ``path``; return it.

        ``metrics`` (default: ``self.metrics_`` if set) are stored in the metadata.
        """
        check_is_fitted(self, "boosters_")
        return persist.save(self, Path(path), metrics=metrics, overwrite=overwrite)

    def save_version(self, root: str | os.PathLike, *, metrics: dict | None = None) -> Path:
        """Save as the next version under ``root``: ``root/v0001``, ``root/v0002`` ...; return its path.

        Safe when two processes save at once: each version directory is claimed by an atomic mkdir.
        """
        return self.save(persist.claim_version_dir(Path(root)), metrics=metrics)

    @classmethod
    def load(cls, path: str | os.PathLike, *, version: int | None = None) -> SignalQualityModel:
        """Load a saved model after checking the sha256 of every file; any defect is a :class:`ModelError`.

        ``path`` is a model directory, one of its files, or a directory of versions (``v0001`` ...),
        from which the latest complete one (or ``version``) is taken.
        """
        return persist.load(cls, Path(path), version=version)


