"""The three heads of SignalQualityModel (SPEC §7): P(win), expected R, P(stop first); calibration;
persistence (one file per head); explanations that add up to the margin."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from qml_plugin.errors import ModelError
from qml_plugin.ml import SignalQualityModel, expected_calibration_error

FAST = {"n_estimators": 120, "max_depth": 3, "n_jobs": 1}


def _planted(n=3000, seed=0):
    """x0 drives P(win), x1 drives the payoff: a win pays 1 + 3 * (x1 > 0) R, a loss costs 1 R.

    A loss is a stop hit first with probability 0.8 (else a losing timeout); every 97th win is a
    +40 R outlier (the fat right tail the expected-R head must not chase).
    """
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 8)), columns=[f"ctx_f{i}" for i in range(8)])
    p_win = 1 / (1 + np.exp(-1.5 * X["ctx_f0"].to_numpy()))
    win = rng.random(n) < p_win
    payoff = 1.0 + 3.0 * (X["ctx_f1"].to_numpy() > 0)
    r = np.where(win, payoff, -1.0)
    r[np.flatnonzero(win)[::97]] = 40.0
    stop_first = np.where(win, 0.0, (rng.random(n) < 0.8).astype(float))
    times = pd.date_range("2015-01-01", periods=n, freq="8h", tz="UTC")
    exits = times + pd.to_timedelta(rng.integers(1, 30, n) * 8, unit="h")
    targets = pd.DataFrame({"label": win.astype(int), "r_multiple": r, "stop_first": stop_first})
    return X, targets, p_win, payoff, times, exits


@pytest.fixture(scope="module")
def planted():
    return _planted()


@pytest.fixture(scope="module")
def three_heads(planted):
    X, targets, _, _, times, exits = planted
    train = slice(0, 2000)
    return SignalQualityModel(**FAST).fit(X[train], targets[train], detection_times=times[train],
                                          exit_times=exits[train])


def test_targets_frame_trains_three_heads_that_each_learn_their_own_target(three_heads, planted):
    X, targets, p_win, payoff, _, _ = planted
    test = slice(2000, None)
    assert three_heads.heads_ == ["confidence", "expected_r", "stop_risk"]
    conf = three_heads.predict_proba(X[test])[:, 1]
    exp_r = three_heads.predict_expected_r(X[test])
    risk = three_heads.predict_stop_risk(X[test])
    assert roc_auc_score(targets["label"][test], conf) > 0.75
    # the payoff feature drives expected R, not P(win): high-payoff patterns expect more R at equal x0
    assert np.corrcoef(exp_r, payoff[test])[0, 1] > 0.4
    assert abs(np.corrcoef(conf, payoff[test])[0, 1]) < 0.15
    assert ((risk >= 0) & (risk <= 1)).all() and roc_auc_score(targets["stop_first"][test], risk) > 0.7
    lo, hi = three_heads.r_clip_
    assert hi < 40.0 and exp_r.max() <= hi + 1e-6            # winsorized: the +40 R outliers are clipped


def test_a_label_array_trains_the_confidence_head_and_the_others_say_why_they_are_missing(planted):
    X, targets, _, _, times, exits = planted
    model = SignalQualityModel(**FAST).fit(X[:800], targets["label"][:800].to_numpy(), detection_times=times[:800],
                                           exit_times=exits[:800])
    assert model.heads_ == ["confidence"] and model.predict_proba(X[:5]).shape == (5, 2)
    for ask in (model.predict_expected_r, model.predict_stop_risk):
        with pytest.raises(ModelError, match=r"no (expected_r|stop_risk) head: it was trained on labels only.*"
                                             r"r_multiple"):
            ask(X[:5])


def test_calibration_is_fitted_on_out_of_fold_predictions_of_the_training_window(three_heads, planted):
    X, targets, _, _, times, exits = planted
    cal = three_heads.calibrations_
    assert cal["confidence"]["method"] == "sigmoid" and cal["stop_risk"]["method"] == "sigmoid"
    assert 1000 < cal["confidence"]["n_samples"] < 2000          # the later folds of the 2000 training rows only
    # an over-fitting booster is over-confident out of sample; its calibrated twin is not
    greedy = {"n_estimators": 80, "max_depth": 6, "learning_rate": 0.3, "min_child_weight": 1.0, "n_jobs": 1}
    fits = {c: SignalQualityModel(calibration=c, **greedy).fit(X[:2000], targets["label"][:2000],
                                                               detection_times=times[:2000], exit_times=exits[:2000])
            for c in (None, "isotonic", "sigmoid")}
    y_test = targets["label"][2000:]
    ece = {c: expected_calibration_error(y_test, m.predict_proba(X[2000:])[:, 1]) for c, m in fits.items()}
    assert ece["isotonic"] < 0.6 * ece[None] and ece["sigmoid"] < 0.6 * ece[None], ece
    p = {c: m.predict_proba(X[2000:])[:, 1] for c, m in fits.items()}           # Platt keeps the ranking
    assert roc_auc_score(y_test, p["sigmoid"]) == pytest.approx(roc_auc_score(y_test, p[None]), abs=1e-12)


def test_a_share_calibration_cv_fits_the_map_on_a_purged_hold_out_at_the_end_of_the_window(planted):
    X, targets, _, _, times, exits = planted
    t, e, y = times[:2000], exits[:2000], targets["label"][:2000]
    model = SignalQualityModel(calibration_cv=0.2, **FAST).fit(X[:2000], y, detection_times=t, exit_times=e)
    cal = model.calibration_params_
    assert cal["n_samples"] == 400                               # the last 20 % of the 2000 training rows
    # the same map rebuilt by hand: a booster on the rows whose labels were known before the hold-out began
    before = np.flatnonzero((np.arange(2000) < 1600) & (e < t[1600]))
    assert 1500 < len(before) < 1600                             # purged: rows exiting inside the hold-out left out
    booster = SignalQualityModel(calibration=None, **FAST).fit(X.iloc[before], y.iloc[before],
                                                               detection_times=t[before], exit_times=e[before])
    platt = LogisticRegression(C=np.inf).fit(booster.decision_function(X.iloc[1600:2000])[:, None], y[1600:2000])
    assert cal["a"] == pytest.approx(platt.coef_[0, 0], rel=1e-6)
    assert cal["b"] == pytest.approx(platt.intercept_[0], rel=1e-6, abs=1e-9)
    with pytest.raises(ValueError, match="calibration_cv must be a share in"):
        SignalQualityModel(calibration_cv=1.5, **FAST).fit(X[:200], y[:200], detection_times=t[:200],
                                                           exit_times=e[:200])


def test_three_heads_roundtrip_through_one_json_file_each(three_heads, planted, tmp_path):
    X = planted[0]
    folder = three_heads.save(tmp_path / "m")
    assert sorted(p.name for p in folder.iterdir()) == ["expected_r.json", "metadata.json", "model.json",
                                                        "stop_risk.json"]
    meta = json.loads((folder / "metadata.json").read_text())
    assert set(meta["heads"]) == {"confidence", "expected_r", "stop_risk"}
    assert all(len(h["sha256"]) == 64 for h in meta["heads"].values())
    loaded = SignalQualityModel.load(folder)
    for name in ("predict_proba", "predict_expected_r", "predict_stop_risk"):
        np.testing.assert_allclose(getattr(loaded, name)(X), getattr(three_heads, name)(X), rtol=0, atol=1e-12)
    assert loaded.r_clip_ == three_heads.r_clip_ and loaded.trained_on_end_ == three_heads.trained_on_end_


def _resign(folder, meta):
    from qml_plugin.ml.persist import _metadata_digest

    meta["metadata_sha256"] = _metadata_digest(meta)
    (folder / "metadata.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("key", ["features", "heads", "init_params", "trained_on_end"])
def test_metadata_missing_a_key_is_a_model_error_naming_it(three_heads, tmp_path, key):
    folder = three_heads.save(tmp_path / "m")
    meta = json.loads((folder / "metadata.json").read_text())
    del meta[key]
    _resign(folder, meta)
    with pytest.raises(ModelError, match=f"lacks the key\\(s\\) \\['{key}'\\]"):
        SignalQualityModel.load(folder)


@pytest.mark.parametrize("garbage", [b"\x00\x01 not a model", b'{"learner": 3}', b""])
def test_a_garbage_head_file_with_a_matching_sha256_is_a_model_error(three_heads, tmp_path, garbage):
    import hashlib

    folder = three_heads.save(tmp_path / "m")
    (folder / "expected_r.json").write_bytes(garbage)
    meta = json.loads((folder / "metadata.json").read_text())
    meta["heads"]["expected_r"]["sha256"] = hashlib.sha256(garbage).hexdigest()
    _resign(folder, meta)
    with pytest.raises(ModelError, match="expected_r.json is not a model XGBoost can read"):
        SignalQualityModel.load(folder)


def test_a_model_error_on_load_lets_on_model_error_baseline_trade_unfiltered(three_heads, planted, tmp_path):
    from qml_plugin.config import MLConfig
    from qml_plugin.scoring import score_or_baseline

    folder = three_heads.save(tmp_path / "m")
    meta = json.loads((folder / "metadata.json").read_text())
    del meta["n_features"]
    _resign(folder, meta)
    ml = MLConfig(enabled=True, model_path=str(folder), on_model_error="baseline")
    with pytest.warns(UserWarning, match="ML filter off, trading unfiltered"):
        scorer, status = score_or_baseline(ml, pd.DataFrame(), None, None)
    assert scorer is None and status.startswith("baseline:") and "n_features" in status


@pytest.mark.parametrize("head", ["confidence", "expected_r", "stop_risk"])
def test_explain_gives_one_column_per_feature_plus_bias_summing_to_the_margin(three_heads, planted, head):
    X = planted[0].iloc[:300]
    contrib = three_heads.explain(X, head=head)
    assert list(contrib.columns) == [*three_heads.feature_names, "bias"] and contrib.index.equals(X.index)
    margin = three_heads.decision_function(X, head=head)
    np.testing.assert_allclose(contrib.sum(axis=1).to_numpy(), margin, rtol=0, atol=1e-6)
    import xgboost as xgb  # XGBoost's own float32 contributions, before the bias
    raw = three_heads.boosters_[head].predict(xgb.DMatrix(X[three_heads.feature_names].to_numpy()),
                                              pred_contribs=True)
    np.testing.assert_allclose(raw[:, :-1], contrib.to_numpy()[:, :-1], rtol=0, atol=0)   # features untouched
    assert np.abs(raw[:, -1] - contrib["bias"].to_numpy()).max() < 1e-4                 # only rounding moved
    top = set(contrib.abs().mean().drop("bias").nlargest(2).index)
    assert top == {"ctx_f0", "ctx_f1"} if head == "expected_r" else "ctx_f0" in top


def test_a_calibrator_with_too_few_out_of_fold_rows_is_skipped_with_a_warning(planted):
    X, targets, _, _, times, exits = planted
    with pytest.warns(UserWarning, match="confidence head left uncalibrated"):
        model = SignalQualityModel(**FAST).fit(X[:60], targets["label"][:60], detection_times=times[:60],
                                               exit_times=exits[:60])
    assert model.calibration_params_ is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SignalQualityModel(calibration=None, **FAST).fit(X[:60], targets["label"][:60], detection_times=times[:60],
                                                         exit_times=exits[:60])
