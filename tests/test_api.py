"""The calls a new user writes first fit together unchanged (issue 11): detect -> label -> extract ->
register -> fit, with no column dropped by hand anywhere."""
from __future__ import annotations

import numpy as np
import pytest

from qml_plugin import load_ohlcv
from qml_plugin.features import FeatureExtractor
from qml_plugin.ml import SignalQualityModel
from qml_plugin.patterns import detect_patterns, label_patterns
from qml_plugin.registry import PatternRegistry


@pytest.fixture(scope="module")
def first_calls():
    df = load_ohlcv("EURUSD_1h").iloc[:12_000]
    pats = detect_patterns(df)
    fe = FeatureExtractor()
    return df, pats, fe, fe.extract(df, pats)


def test_register_patterns_takes_extract_unchanged_and_stores_the_regime(first_calls, tmp_path):
    df, pats, fe, X = first_calls
    with PatternRegistry(tmp_path / "r.db") as reg:
        ids = reg.register_patterns(pats.assign(regime_at_detection=fe.regimes(df, pats).to_numpy()), X)
        assert ids == pats["pattern_id"].tolist()
        stored = reg.get_features(ids[3])
        assert list(stored) == fe.feature_names
        np.testing.assert_allclose(list(stored.values()), X.iloc[3].to_numpy(), rtol=1e-6, equal_nan=True)
        assert reg.get_pattern(ids[3])["regime_at_detection"] == fe.regimes(df, pats).iloc[3]


def test_register_pattern_takes_one_row_of_each(first_calls, tmp_path):
    df, pats, fe, X = first_calls
    with PatternRegistry(tmp_path / "r.db") as reg:
        pid = reg.register_pattern(pats.iloc[0], X.iloc[0])
        assert pid == pats["pattern_id"].iloc[0] and list(reg.get_features(pid)) == fe.feature_names


def test_fit_takes_extract_unchanged(first_calls):
    df, pats, fe, X = first_calls
    lab = label_patterns(df, pats)
    known = lab["label"].notna().to_numpy()
    model = SignalQualityModel(n_estimators=30, calibration=None).fit(
        X[known], lab["label"][known].astype(int).to_numpy(), detection_times=lab["detection_time"][known],
        exit_times=lab["exit_time"][known])
    assert model.feature_names == fe.feature_names
    assert model.predict_proba(X).shape == (len(X), 2)
