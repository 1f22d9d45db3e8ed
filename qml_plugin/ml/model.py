"""The signal-quality model: an XGBoost meta-label classifier that scores each QML pattern.

:class:`SignalQualityModel` predicts ``ml_confidence`` = P(win) for a pattern from its feature
vector. It is a scikit-learn estimator (``fit`` / ``predict_proba`` / ``get_params``, usable with
``clone`` and ``cv=``) around ``xgboost.XGBClassifier``; the trees, the handling of missing values
(NaN features go down XGBoost's learned default branch) and the file format are XGBoost's.

What this module adds on top:

- **time awareness**: ``fit`` records the training period, and above all ``trained_on_end_``,
  the last exit time of the training labels. The out-of-sample guard (SPEC §7) lets the model
  score only patterns detected after it.
- **optional calibration** (``"isotonic"`` or ``"sigmoid"``), fitted with scikit-learn on
  out-of-sample predictions from a purged walk-forward over the training data (never a shuffled
  split), then kept as plain numbers (isotonic thresholds, or Platt's ``a`` and ``b``) so the
  model saves without pickle.
- **safe persistence**: ``save`` writes XGBoost's native ``model.json`` and a ``metadata.json``
  (features in order, schema hash, training period, params, metrics, calibration, sha256 of both).
  ``load`` refuses a file whose sha256 changed. No pickle or joblib anywhere: loading a model never
  executes code. Versions live in ``models/signal_quality/v0001/``, ``v0002/`` ...
- **feature contract**: :func:`check_features` fails with a :class:`~qml_plugin.errors.ModelError`
  listing the features a model needs but the extractor does not produce.

Example::

    model = SignalQualityModel(calibration="isotonic").fit(X, y, times=t, exit_times=e,
                                                           feature_schema=fx.schema_hash)
    path = model.save_version("models/signal_quality")        # models/signal_quality/v0001
    ml_confidence = SignalQualityModel.load("models/signal_quality").predict_proba(X_new)[:, 1]
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sklearn
import xgboost as xgb
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import check_is_fitted

from ..errors import InsufficientDataError, ModelError
from .metrics import _binary_labels, json_safe
from .validation import PurgedWalkForward, find_label_times, label_windows

__all__ = ["SignalQualityModel", "check_features", "MODEL_FILE", "METADATA_FILE"]

MODEL_FILE = "model.json"
"""XGBoost's native JSON model inside a model directory."""
METADATA_FILE = "metadata.json"
"""The metadata next to it: ``json.loads(Path(d, METADATA_FILE).read_text())["features"]``."""
_FORMAT = "qml-plugin/signal-quality"
_VERSION_DIR = re.compile(r"^v(\d+)$")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _metadata_digest(meta: dict) -> str:
    body = {k: v for k, v in meta.items() if k != "metadata_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _missing_features_error(missing: list[str], where: str) -> ModelError:
    shown = ", ".join(missing[:25]) + (f" ... ({len(missing) - 25} more)" if len(missing) > 25 else "")
    return ModelError(f"{where} lacks {len(missing)} feature(s) the model was trained on: {shown}. "
                      "Retrain the model on the current feature set, or use the extractor version it was trained with")


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
        raise _missing_features_error(missing, "the feature extractor's output")
    trained = getattr(model, "feature_schema_", None)
    if schema_hash is not None and trained is not None and schema_hash != trained:
        warnings.warn(f"feature schema hash {schema_hash!r} differs from the model's {trained!r}: the features "
                      "were computed by another extractor version; scores may be off", UserWarning, stacklevel=2)
    return needed


class SignalQualityModel(ClassifierMixin, BaseEstimator):
    """XGBoost classifier of pattern outcomes (1 = win); ``predict_proba(X)[:, 1]`` is ``ml_confidence``.

    The named parameters are XGBoost's, with defaults for ~500-5000 patterns x ~180 features
    (shallow trees, slow learning rate, row and column subsampling). ``params`` holds any other
    ``XGBClassifier`` keyword and overrides the named ones. ``calibration`` = None, ``"isotonic"``
    or ``"sigmoid"`` (Platt); ``calibration_cv`` = the number of purged walk-forward folds (with
    ``embargo``) whose out-of-sample predictions the calibrator is fitted on.

    Fitted attributes: ``booster_``, ``feature_names_in_``, ``n_features_in_``, ``classes_``,
    ``training_samples_``, ``base_rate_`` (win rate of the training labels), ``trained_on_start_``
    (first detection time), ``trained_on_end_`` (last exit time: the out-of-sample guard),
    ``feature_schema_``, ``calibration_params_``; after ``load`` also ``version_``, ``metrics_``.
    """

    def __init__(self, params: dict | None = None, *, calibration: str | None = None, n_estimators: int = 300,
                 max_depth: int = 3, learning_rate: float = 0.05, subsample: float = 0.8,
                 colsample_bytree: float = 0.5, min_child_weight: float = 5.0, reg_lambda: float = 1.0,
                 n_jobs: int = 1, random_state: int = 0, calibration_cv: int = 3, embargo: Any = 0,
                 model_name: str = "signal_quality") -> None:
        self.params = params
        self.calibration = calibration
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.min_child_weight = min_child_weight
        self.reg_lambda = reg_lambda
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.calibration_cv = calibration_cv
        self.embargo = embargo
        self.model_name = model_name

    # ----------------------------------------------------------------------------------- fitting
    def xgb_params(self) -> dict[str, Any]:
        """The keyword arguments given to ``XGBClassifier``."""
        out = {"n_estimators": self.n_estimators, "max_depth": self.max_depth, "learning_rate": self.learning_rate,
               "subsample": self.subsample, "colsample_bytree": self.colsample_bytree,
               "min_child_weight": self.min_child_weight, "reg_lambda": self.reg_lambda,
               "objective": "binary:logistic", "eval_metric": "logloss", "tree_method": "hist",
               "n_jobs": self.n_jobs, "random_state": self.random_state}
        return out | dict(self.params or {})

    def fit(self, X: Any, y: Any, *, times: Any = None, exit_times: Any = None,
            feature_schema: str | None = None) -> SignalQualityModel:
        """Train on features ``X`` (DataFrame; NaN allowed) and 0/1 labels ``y``; return ``self``.

        ``times`` / ``exit_times`` are the detection and exit times of the patterns (or ``X``'s
        index as :mod:`.validation` describes). Without exit times ``trained_on_end_`` falls back to
        the last detection time, with a warning (the guard is then too lenient).
        """
        if self.calibration not in (None, "isotonic", "sigmoid"):
            raise ValueError(f"calibration must be None, 'isotonic' or 'sigmoid', got {self.calibration!r}")
        frame = _as_frame(X)
        arr = _numeric(frame)
        labels = _binary_labels(y, len(frame))
        classes = np.unique(labels)
        if len(classes) < 2:
            raise InsufficientDataError(f"training labels are all {int(classes[0]) if len(classes) else 'missing'}"
                                        f" ({len(labels)} rows): the model needs both wins (1) and losses (0)")
        t, e = find_label_times(frame, times=times, exit_times=exit_times)
        if t is not None and e is None:
            warnings.warn("fit() got detection times but no exit times: trained_on_end_ is the last detection "
                          "time, so the out-of-sample guard ignores the label horizon", UserWarning, stacklevel=2)
        windows = label_windows(frame, times=t, exit_times=e, require_exit=False) if t is not None else None
        if windows is not None and (np.isinf(windows.end).any() or (windows.end == np.iinfo(np.int64).max).any()):
            raise ValueError("exit_times has NaT/NaN for labeled rows: a label is known only once the trade exited")
        self.calibration_params_ = None
        if self.calibration is not None:
            self.calibration_params_ = self._fit_calibration(arr, labels, windows)
        clf = xgb.XGBClassifier(**self.xgb_params())
        clf.fit(arr, labels)
        self.booster_, self.classes_ = clf.get_booster(), np.array([0, 1])
        self.feature_names_in_, self.n_features_in_ = np.asarray(frame.columns, dtype=object), frame.shape[1]
        self.training_samples_, self.base_rate_ = len(labels), float(labels.mean())
        self.feature_schema_ = feature_schema
        self.trained_on_start_ = self.trained_on_end_ = None
        if windows is not None:
            first, last = windows.times[int(np.argmin(windows.start))], windows.exit_times[int(np.argmax(windows.end))]
            convert = pd.Timestamp if windows.is_datetime else (lambda v: np.asarray(v).item())
            self.trained_on_start_, self.trained_on_end_ = convert(first), convert(last)
        return self

    def _fit_calibration(self, arr: np.ndarray, labels: np.ndarray, windows: Any) -> dict[str, Any]:
        """Fit the calibrator on purged walk-forward out-of-sample predictions of the training data."""
        if windows is None:       # no times: rows are taken to be in time order, nothing to purge
            t = e = np.arange(len(labels), dtype=np.float64)
        else:
            t, e = windows.times, windows.exit_times
        splitter = PurgedWalkForward(self.calibration_cv, embargo=self.embargo)
        margins, ys = [], []
        for train, test in splitter.split(arr, times=t, exit_times=e):
            if len(np.unique(labels[train])) < 2:
                continue
            fold = xgb.XGBClassifier(**self.xgb_params()).fit(arr[train], labels[train])
            margins.append(fold.get_booster().inplace_predict(arr[test], predict_type="margin"))
            ys.append(labels[test])
        y_oos = np.concatenate(ys) if ys else np.array([])
        if len(np.unique(y_oos)) < 2:
            raise InsufficientDataError(f"calibration={self.calibration!r} needs out-of-sample predictions of both "
                                        f"classes from {self.calibration_cv} walk-forward folds; got {len(y_oos)} "
                                        "rows: use more data or calibration=None")
        m = np.concatenate(margins).astype(np.float64)
        if self.calibration == "isotonic":
            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(expit(m), y_oos)
            return {"method": "isotonic", "x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist(),
                    "n_samples": len(y_oos)}
        platt = LogisticRegression(C=np.inf).fit(m[:, None], y_oos)
        return {"method": "sigmoid", "a": float(platt.coef_[0, 0]), "b": float(platt.intercept_[0]),
                "n_samples": len(y_oos)}

    # -------------------------------------------------------------------------------- predicting
    @property
    def feature_names(self) -> list[str]:
        """The features the model needs, in its column order."""
        check_is_fitted(self, "booster_")
        return [str(f) for f in self.feature_names_in_]

    def predict_proba(self, X: Any) -> np.ndarray:
        """``(n, 2)`` array of P(loss), P(win). ``X``'s columns are picked by name (extra ones ignored)."""
        check_is_fitted(self, "booster_")
        if isinstance(X, pd.DataFrame):
            missing = [f for f in self.feature_names if f not in X.columns]
            if missing:
                raise _missing_features_error(missing, "X")
            arr = _numeric(X[self.feature_names])
        else:
            arr = np.asarray(X, dtype=np.float64)
            if arr.ndim != 2 or arr.shape[1] != self.n_features_in_:
                raise ModelError(f"X without column names must have shape (n, {self.n_features_in_}) in the "
                                 f"model's feature order, got {arr.shape}; pass a DataFrame instead")
        margin = self.booster_.inplace_predict(arr, predict_type="margin").astype(np.float64)
        p = _apply_calibration(self.calibration_params_, margin)
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any, threshold: float = 0.5) -> np.ndarray:
        """1 where P(win) >= ``threshold`` (the ``filter`` mode's rule), else 0."""
        return (self.predict_proba(X)[:, 1] >= threshold).astype(np.int64)

    def feature_importances(self, importance_type: str = "gain") -> pd.Series:
        """XGBoost's importance per feature (0 for unused ones), largest first."""
        check_is_fitted(self, "booster_")
        score = self.booster_.get_score(importance_type=importance_type)
        values = [float(score.get(f"f{i}", 0.0)) for i in range(self.n_features_in_)]
        s = pd.Series(values, index=self.feature_names, name=importance_type)
        return s.sort_values(ascending=False, kind="stable")

    # ------------------------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike, *, metrics: dict | None = None, overwrite: bool = False) -> Path:
        """Write ``model.json`` + ``metadata.json`` into directory ``path``; return the directory.

        ``metrics`` (default: ``self.metrics_`` if set) are stored in the metadata, e.g. the
        walk-forward result of :func:`~.metrics.cross_validate_walk_forward`.
        """
        check_is_fitted(self, "booster_")
        folder = Path(path)
        if (folder / METADATA_FILE).exists() and not overwrite:
            raise FileExistsError(f"{folder} already holds a model; pass overwrite=True or use save_version()")
        model_file, match = folder / MODEL_FILE, _VERSION_DIR.match(folder.name)
        meta = {
            "format": _FORMAT, "format_version": 1, "model_name": self.model_name,
            "version": int(match.group(1)) if match else None,
            "features": self.feature_names, "n_features": self.n_features_in_,
            "feature_schema": self.feature_schema_,
            "trained_on_start": json_safe(self.trained_on_start_), "trained_on_end": json_safe(self.trained_on_end_),
            "training_samples": int(self.training_samples_), "base_rate": self.base_rate_,
            "init_params": json_safe(self.get_params()), "params": json_safe(self.xgb_params()),
            "metrics": json_safe(metrics if metrics is not None else getattr(self, "metrics_", {}) or {}),
            "calibration": self.calibration_params_,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "xgboost_version": xgb.__version__, "sklearn_version": sklearn.__version__,
            "model_file": MODEL_FILE, "model_sha256": None,
        }
        json.dumps(meta, allow_nan=False)                    # not JSON? fail before writing anything
        folder.mkdir(parents=True, exist_ok=True)
        self.booster_.save_model(str(model_file))
        meta["model_sha256"] = _sha256(model_file)
        meta["metadata_sha256"] = _metadata_digest(meta)
        tmp = folder / (METADATA_FILE + ".tmp")
        tmp.write_text(json.dumps(meta, indent=2, allow_nan=False))
        os.replace(tmp, folder / METADATA_FILE)
        return folder

    def save_version(self, root: str | os.PathLike, *, metrics: dict | None = None) -> Path:
        """Save as the next version under ``root``: ``root/v0001``, ``root/v0002`` ...; return its path.

        Safe when two processes save at once: each version directory is claimed by an atomic mkdir.
        """
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        while True:
            taken = [int(m.group(1)) for p in root.iterdir() if (m := _VERSION_DIR.match(p.name))]
            folder = root / f"v{max(taken, default=0) + 1:04d}"
            try:
                folder.mkdir()
            except FileExistsError:
                continue
            return self.save(folder, metrics=metrics)

    @classmethod
    def load(cls, path: str | os.PathLike, *, version: int | None = None) -> SignalQualityModel:
        """Load a saved model, after checking its sha256.

        ``path`` is a model directory, its ``model.json`` / ``metadata.json``, or a directory of
        versions (``v0001`` ...), from which the latest complete one (or ``version``) is taken.
        """
        folder = _model_dir(Path(path), version)
        meta_file, model_file = folder / METADATA_FILE, folder / MODEL_FILE
        if not meta_file.is_file():
            raise ModelError(f"{meta_file} is missing: a model directory needs {MODEL_FILE} and {METADATA_FILE}")
        try:
            meta = json.loads(meta_file.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise ModelError(f"{meta_file} is not valid JSON ({exc}); the metadata was damaged") from exc
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
            raise ModelError(f"{meta_file} is not a qml-plugin signal-quality model (format {_FORMAT!r} expected)")
        if meta.get("metadata_sha256") != _metadata_digest(meta):
            raise ModelError(f"{meta_file}: metadata sha256 {_metadata_digest(meta)} does not match the recorded "
                             f"{meta.get('metadata_sha256')}; the metadata was edited after saving")
        if not model_file.is_file():
            raise ModelError(f"{model_file} is missing (the metadata in {folder} refers to it)")
        actual = _sha256(model_file)
        if actual != meta["model_sha256"]:
            raise ModelError(f"{model_file}: sha256 {actual} does not match metadata model_sha256 "
                             f"{meta['model_sha256']}; the file was modified after saving, refusing to load it")
        try:
            model = cls(**meta["init_params"])
        except TypeError as exc:
            raise ModelError(f"{meta_file}: init_params do not fit this SignalQualityModel ({exc})") from exc
        booster = xgb.Booster()
        try:
            booster.load_model(str(model_file))
        except xgb.core.XGBoostError as exc:
            raise ModelError(f"{model_file} is not a model XGBoost can read: {exc}") from exc
        if booster.num_features() != meta["n_features"] or len(meta["features"]) != meta["n_features"]:
            raise ModelError(f"{model_file} has {booster.num_features()} features but its metadata lists "
                             f"{len(meta['features'])}")
        booster.set_param({"nthread": model.n_jobs})
        model.booster_, model.classes_ = booster, np.array([0, 1])
        model.feature_names_in_, model.n_features_in_ = np.asarray(meta["features"], dtype=object), meta["n_features"]
        model.training_samples_, model.base_rate_ = meta["training_samples"], meta["base_rate"]
        model.feature_schema_, model.calibration_params_ = meta["feature_schema"], meta["calibration"]
        model.trained_on_start_, model.trained_on_end_ = (
            pd.Timestamp(v) if isinstance(v, str) else v for v in (meta["trained_on_start"], meta["trained_on_end"]))
        model.version_, model.metrics_, model.metadata_ = meta["version"], meta["metrics"], meta
        return model


def _model_dir(path: Path, version: int | None) -> Path:
    if path.is_file():
        return path.parent
    if not path.is_dir():
        raise ModelError(f"no model at {path}: expected a model directory, its {MODEL_FILE}, or a directory "
                         "of versions v0001, v0002 ...")
    if version is None and ((path / METADATA_FILE).exists() or (path / MODEL_FILE).exists()):
        return path
    versions = {int(m.group(1)): p for p in path.iterdir() if (m := _VERSION_DIR.match(p.name)) and p.is_dir()}
    if version is not None:
        if int(version) not in versions:
            raise ModelError(f"version {version} not found in {path}; available: {sorted(versions) or 'none'}")
        return versions[int(version)]
    complete = [v for v, p in versions.items() if (p / METADATA_FILE).is_file()]
    if not complete:
        raise ModelError(f"{path} holds no saved model ({METADATA_FILE} missing and no complete version v0001 ...)")
    return versions[max(complete)]


def _apply_calibration(cal: dict | None, margin: np.ndarray) -> np.ndarray:
    """P(win) from XGBoost's raw margin, through the stored calibrator if any."""
    if cal is None:
        return expit(margin)
    if cal["method"] == "isotonic":
        # Exactly IsotonicRegression(out_of_bounds="clip").predict: linear between thresholds.
        return np.interp(expit(margin), np.asarray(cal["x"], float), np.asarray(cal["y"], float))
    if cal["method"] == "sigmoid":
        return expit(cal["a"] * margin + cal["b"])
    raise ModelError(f"unknown calibration method {cal['method']!r}; expected 'isotonic' or 'sigmoid'")


def _as_frame(X: Any) -> pd.DataFrame:
    if isinstance(X, pd.DataFrame):
        if not X.columns.is_unique:
            raise ValueError(f"X has duplicate column names: {sorted(set(X.columns[X.columns.duplicated()]))}")
        return X.rename(columns=str)
    arr = np.asarray(X)
    if arr.ndim != 2:
        raise ValueError(f"X must be a 2-d table of features, got shape {arr.shape}")
    return pd.DataFrame(arr, columns=[f"x{i}" for i in range(arr.shape[1])])


def _numeric(frame: pd.DataFrame) -> np.ndarray:
    bad = [str(c) for c, dt in frame.dtypes.items() if not (pd.api.types.is_numeric_dtype(dt)
                                                           or pd.api.types.is_bool_dtype(dt))]
    if bad:
        raise ValueError(f"features must be numeric (NaN allowed); non-numeric columns: {bad}. Put detection and "
                         "exit times in the index or pass times=/exit_times=")
    return frame.to_numpy(dtype=np.float64, na_value=np.nan)
