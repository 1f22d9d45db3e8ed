"""The signal-quality model: honest walk-forward skill, calibration, JSON persistence, feature contract."""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.calibration import calibration_curve
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import KFold

from qml_plugin.errors import InsufficientDataError, ModelError
from qml_plugin.ml import (
    PurgedWalkForward,
    SignalQualityModel,
    calibration_table,
    check_features,
    cross_validate_walk_forward,
    evaluate,
)
from qml_plugin.ml.calibrator import apply_calibration as _apply_calibration

FAST = {"n_estimators": 150, "max_depth": 3, "n_jobs": 1, "calibration": None}   # calibration: its own tests
ML_DIR = Path(__file__).resolve().parent.parent / "qml_plugin" / "ml"


def _dataset(n=3000, n_features=20, signal=2.0, seed=0):
    """Features N(0, 1), label ~ Bernoulli(sigmoid(signal * x0)); one pattern every 6 hours.

    Each label is known 1..40 bars (6h) after detection; some features are NaN, as in real data.
    """
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, n_features)), columns=[f"ctx_f{i}" for i in range(n_features)])
    p_true = 1.0 / (1.0 + np.exp(-signal * X["ctx_f0"].to_numpy()))
    y = (rng.random(n) < p_true).astype(int)
    X.loc[rng.random(n) < 0.05, "ctx_f5"] = np.nan
    times = pd.date_range("2012-01-02", periods=n, freq="6h")
    exits = times + pd.to_timedelta(rng.integers(1, 41, n) * 6, unit="h")
    return X, y, p_true, times, exits


@pytest.fixture(scope="module")
def planted():
    return _dataset()


@pytest.fixture(scope="module")
def fitted(planted):
    X, y, _, times, exits = planted
    return SignalQualityModel(**FAST).fit(X, y, detection_times=times, exit_times=exits, feature_schema="schema-A")


# ------------------------------------------------------------------------------------ honest skill
def test_walk_forward_auc_on_a_planted_signal_comes_within_005_of_the_ceiling(planted):
    X, y, p_true, times, exits = planted
    cv = cross_validate_walk_forward(SignalQualityModel(**FAST), X, y, detection_times=times, exit_times=exits,
                                     splitter=PurgedWalkForward(4, embargo="2D"))
    ceiling = roc_auc_score(cv["y_true"], p_true[cv["test_idx"]])
    assert len(cv["proba"]) == len(cv["test_idx"]) == len(np.unique(cv["test_idx"])) == 2400
    assert cv["metrics"]["auc"] > ceiling - 0.05, (cv["metrics"]["auc"], ceiling)
    assert [f["fold"] for f in cv["folds"]] == [0, 1, 2, 3]
    assert all(f["train_end"] < f["test_start"] for f in cv["folds"])


def test_walk_forward_auc_without_signal_is_chance():
    X, _, _, times, exits = _dataset(seed=1)
    y = np.random.default_rng(2).integers(0, 2, len(X))          # independent of every feature
    cv = cross_validate_walk_forward(lambda: SignalQualityModel(**FAST), X, y, detection_times=times, exit_times=exits,
                                     splitter=PurgedWalkForward(4, embargo="2D"))
    assert abs(cv["metrics"]["auc"] - 0.5) < 0.06


def test_cross_validation_refuses_a_shuffled_or_k_fold_splitter(planted):
    X, y, _, times, exits = planted
    with pytest.raises(ValueError, match="trains on rows detected after its test block"):
        cross_validate_walk_forward(SignalQualityModel(**FAST), X, y, detection_times=times, exit_times=exits,
                                    splitter=KFold(3, shuffle=False))


def test_no_shuffled_split_and_no_pickle_in_the_model_layer():
    for path in ML_DIR.glob("*.py"):
        text = path.read_text()
        for banned in ("shuffle=True", "train_test_split", "ShuffleSplit", "import pickle", "import joblib",
                       "cloudpickle"):
            assert banned not in text, f"{path.name} contains {banned!r}"


# --------------------------------------------------------------------------------- fitted model
def test_fit_records_the_training_period_and_the_feature_order(fitted, planted):
    X, y, _, times, exits = planted
    assert fitted.feature_names == list(X.columns)
    assert fitted.trained_on_start_ == times.min() and fitted.trained_on_end_ == exits.max()
    assert fitted.training_samples_ == len(X) and fitted.base_rate_ == pytest.approx(y.mean())
    assert fitted.feature_schema_ == "schema-A"
    assert fitted.feature_importances().index[0] == "ctx_f0"


def test_predict_proba_picks_columns_by_name_and_ignores_extra_ones(fitted, planted):
    X = planted[0].iloc[:200]
    p = fitted.predict_proba(X)
    assert p.shape == (200, 2) and np.allclose(p.sum(axis=1), 1.0)
    shuffled = X[X.columns[::-1]].assign(extra_feature=1.0)
    np.testing.assert_array_equal(fitted.predict_proba(shuffled), p)


def test_predict_proba_names_the_missing_features(fitted, planted):
    X = planted[0].drop(columns=["ctx_f3", "ctx_f7"])
    with pytest.raises(ModelError, match=r"lacks 2 feature\(s\).*ctx_f3, ctx_f7"):
        fitted.predict_proba(X)


def test_same_seed_gives_the_same_model_and_clone_keeps_the_params(planted, fitted):
    X, y, _, times, exits = planted
    again = clone(fitted).fit(X, y, detection_times=times, exit_times=exits)
    assert again.get_params() == fitted.get_params()
    np.testing.assert_array_equal(again.predict_proba(X), fitted.predict_proba(X))


def test_single_class_labels_are_insufficient_data(planted):
    X = planted[0].iloc[:50]
    with pytest.raises(InsufficientDataError, match="both wins"):
        SignalQualityModel(**FAST).fit(X, np.ones(50))
    with pytest.raises(ValueError, match="without NaN"):
        SignalQualityModel(**FAST).fit(X, np.r_[np.nan, np.ones(49)])


# ---------------------------------------------------------------------------------- persistence
def test_save_load_roundtrip_predicts_the_same_and_writes_the_metadata(fitted, planted, tmp_path):
    X = planted[0]
    folder = fitted.save(tmp_path / "m", metrics={"auc": 0.8, "brier": float("nan")})
    assert sorted(p.name for p in folder.iterdir()) == ["metadata.json", "model.json"]
    meta = json.loads((folder / "metadata.json").read_text())
    for key in ("model_name", "version", "features", "feature_schema", "trained_on_start", "trained_on_end",
                "training_samples", "params", "metrics", "calibration", "created_at", "xgboost_version",
                "model_sha256"):
        assert key in meta
    assert meta["features"] == fitted.feature_names and meta["metrics"] == {"auc": 0.8, "brier": None}
    loaded = SignalQualityModel.load(folder)
    assert np.max(np.abs(loaded.predict_proba(X) - fitted.predict_proba(X))) <= 1e-12
    assert loaded.trained_on_end_ == fitted.trained_on_end_ and loaded.feature_schema_ == "schema-A"
    with pytest.raises(FileExistsError):
        fitted.save(folder)


def test_versions_are_numbered_and_load_takes_the_latest_or_the_one_asked(fitted, tmp_path):
    root = tmp_path / "models" / "signal_quality"
    assert fitted.save_version(root).name == "v0001"
    assert fitted.save_version(root).name == "v0002"
    assert SignalQualityModel.load(root).version_ == 2
    assert SignalQualityModel.load(root, version=1).version_ == 1
    assert SignalQualityModel.load(root / "v0001" / "model.json").version_ == 1
    with pytest.raises(ModelError, match=r"version 7 not found .* available: \[1, 2\]"):
        SignalQualityModel.load(root, version=7)


@pytest.mark.parametrize("tamper", ["edit a number", "flip a byte"])
def test_a_tampered_model_file_is_refused_naming_both_sha256(fitted, tmp_path, tamper):
    folder = fitted.save(tmp_path / "m")
    model_file = folder / "model.json"
    raw = model_file.read_bytes()
    if tamper == "edit a number":
        m = re.search(rb"\d\.\d{3}", raw)
        digit = raw[m.start() + 2:m.start() + 3]
        raw = raw[:m.start() + 2] + (b"7" if digit != b"7" else b"3") + raw[m.start() + 3:]
    else:
        raw = raw[:100] + bytes([raw[100] ^ 0x01]) + raw[101:]
    model_file.write_bytes(raw)
    recorded = json.loads((folder / "metadata.json").read_text())["model_sha256"]
    with pytest.raises(ModelError, match="sha256") as info:
        SignalQualityModel.load(folder)
    assert "model.json" in str(info.value) and recorded in str(info.value)


def test_edited_metadata_or_a_missing_file_is_refused(fitted, tmp_path):
    folder = fitted.save(tmp_path / "m")
    meta_file = folder / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta["trained_on_end"] = "2001-01-01T00:00:00"                 # pretend it is older: must not load
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="metadata sha256"):
        SignalQualityModel.load(folder)
    meta_file.unlink()
    with pytest.raises(ModelError, match="metadata.json is missing"):
        SignalQualityModel.load(folder)
    with pytest.raises(ModelError, match="no model at"):
        SignalQualityModel.load(tmp_path / "nowhere")


# ----------------------------------------------------------------------------- feature contract
def test_check_features_lists_missing_ignores_extra_and_warns_on_another_schema(fitted):
    names = fitted.feature_names
    with pytest.raises(ModelError, match="ctx_f19"):
        check_features(fitted, names[:-1] + ["geo_new"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_features(fitted, names[::-1] + ["geo_new"], schema_hash="schema-A") == names
    with pytest.warns(UserWarning, match="schema hash 'schema-B' differs"):
        check_features(fitted, names, schema_hash="schema-B")


# ----------------------------------------------------------------------------------- calibration
@pytest.mark.parametrize("method", ["isotonic", "sigmoid"])
def test_calibrated_model_roundtrips_through_json(planted, tmp_path, method):
    X, y, _, times, exits = planted
    model = SignalQualityModel(**(FAST | {"calibration": method}), calibration_cv=3, embargo="2D")
    model.fit(X, y, detection_times=times, exit_times=exits)
    assert model.calibration_params_["method"] == method and model.calibration_params_["n_samples"] > 1000
    p = model.predict_proba(X)[:, 1]
    assert ((p >= 0) & (p <= 1)).all() and roc_auc_score(y, p) > 0.8
    assert abs(p.mean() - y.mean()) < 0.03
    loaded = SignalQualityModel.load(model.save(tmp_path / method))
    assert np.max(np.abs(loaded.predict_proba(X)[:, 1] - p)) <= 1e-12


def test_stored_calibrators_reproduce_scikit_learns_predictions():
    rng = np.random.default_rng(3)
    margin = rng.normal(size=500)
    y = (rng.random(500) < 1 / (1 + np.exp(-1.5 * margin))).astype(int)
    p_raw = 1 / (1 + np.exp(-margin))
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(p_raw, y)
    stored = {"method": "isotonic", "x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()}
    new = rng.normal(scale=2, size=300)
    np.testing.assert_allclose(_apply_calibration(stored, new), iso.predict(1 / (1 + np.exp(-new))), atol=1e-12)
    platt = LogisticRegression(C=np.inf).fit(margin[:, None], y)
    stored = {"method": "sigmoid", "a": float(platt.coef_[0, 0]), "b": float(platt.intercept_[0])}
    np.testing.assert_allclose(_apply_calibration(stored, new), platt.predict_proba(new[:, None])[:, 1], atol=1e-12)


# -------------------------------------------------------------------------------------- metrics
def test_evaluate_reports_ranking_decision_and_probability_metrics():
    m = evaluate([0, 0, 1, 1], np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8]]))
    assert m["auc"] == 1.0 and m["n"] == 4 and m["base_rate"] == 0.5
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == 1.0 and m["f1"] == pytest.approx(0.8)
    assert m["brier"] == pytest.approx((0.01 + 0.36 + 0.09 + 0.04) / 4) and m["pass_rate"] == 0.75
    single = evaluate([1, 1, 1], [0.2, 0.6, 0.9])
    assert np.isnan(single["auc"]) and single["base_rate"] == 1.0
    json.dumps(single)


def test_calibration_table_matches_scikit_learns_calibration_curve():
    rng = np.random.default_rng(4)
    p = rng.random(1000)
    y = (rng.random(1000) < p).astype(int)
    rows = calibration_table(y, p, n_bins=5, strategy="uniform")
    observed, predicted = calibration_curve(y, p, n_bins=5, strategy="uniform")
    np.testing.assert_allclose([r["observed_rate"] for r in rows], observed)
    np.testing.assert_allclose([r["mean_predicted"] for r in rows], predicted)
    quantile = calibration_table(y, p, n_bins=10)
    assert len(quantile) == 10 and sum(r["n"] for r in quantile) == 1000
