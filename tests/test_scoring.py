"""Scoring with saved models: three heads per pattern, the out-of-sample guard on one clock, and no
silent "out-of-sample" run from a folder of versions that were all trained over the backtest."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qml_plugin.config import MLConfig
from qml_plugin.errors import ModelError
from qml_plugin.ml import SignalQualityModel
from qml_plugin.ml.guard import admissible_model
from qml_plugin.scoring import score_patterns


def _model(end: str, seed: int = 0, tz=None) -> SignalQualityModel:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"ctx_a": rng.normal(size=300), "geo_b": rng.normal(size=300)})
    r = np.where(rng.random(300) < 0.5, 2.0, -1.0)
    y = pd.DataFrame({"label": (r > 0).astype(int), "r_multiple": r, "stop_first": (r < 0).astype(int)})
    exits = pd.date_range(end=end, periods=300, freq="D", tz=tz)
    return SignalQualityModel(n_estimators=10, calibration=None).fit(X, y, detection_times=exits - pd.Timedelta("2D"),
                                                                     exit_times=exits)


def _patterns(start: str, n: int = 20):
    rng = np.random.default_rng(1)
    ids = [f"p{i}" for i in range(n)]
    pats = pd.DataFrame({"pattern_id": ids, "detection_time": pd.date_range(start, periods=n, freq="7D"),
                         "validity_score": 0.6})
    feats = pd.DataFrame({"ctx_a": rng.normal(size=n), "geo_b": rng.normal(size=n)}, index=pd.Index(ids))
    return pats, feats


@pytest.fixture(scope="module")
def versions_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("versions") / "signal_quality"
    for k, end in enumerate(("2011-06-30", "2012-06-30")):
        _model(end, seed=k).save_version(root)
    return root


def test_a_folder_whose_versions_were_all_trained_over_the_backtest_is_refused(versions_folder):
    pats, feats = _patterns("2010-01-01")                        # all detected before either model's end
    ml = MLConfig(enabled=True, model_path=str(versions_folder))
    with pytest.raises(ModelError, match=r"none of the 2 model versions .* may score any pattern .*overlaps"):
        score_patterns(ml, pd.DataFrame(), pats, feats)
    allowed = score_patterns(MLConfig(enabled=True, model_path=str(versions_folder), allow_in_sample=True),
                             pd.DataFrame(), pats, feats)
    assert allowed.status == "IN-SAMPLE" and allowed.confidence.notna().all()
    latest = SignalQualityModel.load(versions_folder)               # the latest version scores everything
    np.testing.assert_allclose(allowed.confidence.to_numpy(), latest.predict_proba(feats)[:, 1])


def test_a_walk_forward_folder_scores_the_later_patterns_with_three_heads(versions_folder):
    pats, feats = _patterns("2012-03-01")                        # straddles the second model's end
    scorer = score_patterns(MLConfig(enabled=True, model_path=str(versions_folder)), pd.DataFrame(), pats, feats)
    assert scorer.status == "out-of-sample" and 0 < scorer.scored_share <= 1
    after_first = (pats["detection_time"] > pd.Timestamp("2011-06-30")).to_numpy()
    assert scorer.confidence.notna().to_numpy().tolist() == after_first.tolist()
    for head in (scorer.expected_r, scorer.stop_risk):
        assert head.index.equals(scorer.confidence.index) and head.notna().equals(scorer.confidence.notna())
    assert scorer.stop_risk.dropna().between(0, 1).all()


def test_the_guard_compares_utc_instants_and_refuses_to_mix_them_with_naive_stamps():
    # a New York equity label closing 16:00 local = 21:00 UTC, an FX pattern known 18:00 UTC the same day:
    # naive stamps (16:00 < 18:00) would let the label train the model that scores the pattern
    label_known_utc = pd.Timestamp("2020-03-02 21:00", tz="UTC")
    fx_known_utc = pd.DatetimeIndex([pd.Timestamp("2020-03-02 18:00", tz="UTC")])
    assert admissible_model(fx_known_utc, [label_known_utc]).tolist() == [-1]
    assert admissible_model(fx_known_utc.tz_localize(None), [pd.Timestamp("2020-03-02 16:00")]).tolist() == [0]
    # a daily label known at its day's close against an hourly detection earlier that day
    daily_close = pd.Timestamp("2020-03-03 00:00", tz="UTC")
    hourly = pd.DatetimeIndex(["2020-03-02 15:00", "2020-03-03 01:00"], tz="UTC")
    assert admissible_model(hourly, [daily_close]).tolist() == [-1, 0]
    with pytest.raises(ModelError, match="cannot compare tz-aware detection times with naive model training ends"):
        admissible_model(hourly, [pd.Timestamp("2020-03-01")])
    # another zone is the same instant: compared in UTC
    assert admissible_model(hourly.tz_convert("America/New_York"), [daily_close]).tolist() == [-1, 0]


def test_patterns_carrying_known_at_utc_are_guarded_by_it(tmp_path):
    model = _model("2012-06-30 12:00", tz="UTC")
    folder = model.save(tmp_path / "m")
    pats, feats = _patterns("2012-06-30")
    pats["detection_time"] = pd.Timestamp("2012-06-30 18:00")      # naive, in the market's own clock
    pats["known_at_utc"] = pd.date_range("2012-06-30 12:00", periods=len(pats), freq="h", tz="UTC")
    scorer = score_patterns(MLConfig(enabled=True, model_path=str(folder), allow_in_sample=False),
                            pd.DataFrame(), pats.iloc[1:], feats.iloc[1:])
    assert scorer.status == "out-of-sample" and scorer.confidence.notna().all()
    with pytest.raises(ModelError, match="cannot score the pattern detected at 2012-06-30 12:00:00\\+00:00 "
                                         "\\(by known_at_utc\\)"):
        score_patterns(MLConfig(enabled=True, model_path=str(folder)), pd.DataFrame(), pats, feats)
