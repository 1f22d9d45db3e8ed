"""The registry's newer promises: UTC instants, the three heads' targets, the prediction log (SPEC §5, §7, §13).

Every test here runs on each backend of the ``reg`` fixture (see ``conftest.py``).
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from qml_plugin.errors import RegistryError
from qml_plugin.registry import PERFORMANCE_COLUMNS

FEATURES = ["ctx_a", "ctx_b", "geo_c"]


def patterns(n, **cols):
    det = pd.date_range("2021-03-01", periods=n, freq="1h")
    df = pd.DataFrame({"pattern_id": [f"p{i}" for i in range(n)], "symbol": "AAPL", "timeframe": "1h",
                       "pattern_type": "bullish_qml", "direction": 1, "detection_time": det})
    return df.assign(**cols)


def features(n, seed=0):
    return pd.DataFrame(np.random.default_rng(seed).normal(size=(n, len(FEATURES))), columns=FEATURES)


# -- UTC instants and the three heads' targets -----------------------------------------------------
def test_known_instants_are_stored_in_utc_and_come_back_tz_aware(reg):
    p = patterns(2)
    # New York bars: 09:30 local is 14:30 UTC in March 2021 (EDT from 14 March: take 1 March, EST = UTC-5)
    p["known_at_utc"] = pd.DatetimeIndex(["2021-03-01 10:30", "2021-03-01 11:30"]).tz_localize("America/New_York")
    reg.register_patterns(p, features(2))
    reg.record_outcomes(pd.DataFrame({"pattern_id": ["p0", "p1"], "label": [1.0, 0.0], "r_multiple": [2.0, -1.0],
                                      "exit_reason": ["target", "stop"],
                                      "exit_known_at_utc": pd.Timestamp("2021-03-02 16:00")}))   # naive = UTC
    assert reg.get_pattern("p0")["known_at_utc"] == "2021-03-01T15:30:00"
    X, t = reg.get_training_data(min_labels=2, targets=True)
    assert list(t.columns[:4]) == ["label", "r_multiple", "stop_first", "exit_known_at_utc"]
    assert t.index.equals(X.index)
    assert t["known_at_utc"].tolist() == [pd.Timestamp("2021-03-01 15:30", tz="UTC"),
                                          pd.Timestamp("2021-03-01 16:30", tz="UTC")]
    assert (t["exit_known_at_utc"] == pd.Timestamp("2021-03-02 16:00", tz="UTC")).all()
    assert t["stop_first"].tolist() == [0.0, 1.0] and t["r_multiple"].tolist() == [2.0, -1.0]
    assert t["label"].tolist() == [1, 0] and t["label"].dtype == np.int64


def test_a_user_label_sets_the_label_only_and_the_heads_keep_the_patterns_own_outcome(reg):
    reg.register_patterns(patterns(3, label=[1.0, 0.0, np.nan], r_multiple=[2.0, -1.0, np.nan],
                                   exit_reason=["target", "stop", None]), features(3))
    reg.label_pattern("p0", "loss")            # the trade won by the barrier, the user calls it a loss
    reg.label_pattern("p2", "win")             # never filled: no outcome of its own
    _, y = reg.get_training_data(min_labels=3)
    _, t = reg.get_training_data(min_labels=3, targets=True)
    assert y.tolist() == t["label"].tolist() == [0, 0, 1]
    assert t["r_multiple"].tolist()[:2] == [2.0, -1.0] and np.isnan(t["r_multiple"].iloc[2])
    assert t["stop_first"].tolist()[:2] == [0.0, 1.0] and np.isnan(t["stop_first"].iloc[2])
    assert t["exit_known_at_utc"].isna().all()                          # not recorded: NaT, never guessed


def test_stop_first_follows_the_label_ranking_and_an_explicit_column_wins(reg):
    reg.register_patterns(patterns(2, label=[0.0, 1.0], r_multiple=[-1.0, 1.0], exit_reason=["stop", "timeout"]),
                          features(2))
    reg.record_outcomes(pd.DataFrame({"pattern_id": ["p0"], "label": [1.0], "r_multiple": [0.4],
                                      "exit_reason": ["timeout"], "label_source": "trade"}))
    reg.record_outcomes(pd.DataFrame({"pattern_id": ["p0", "p1"], "label": [0.0, 1.0], "stop_first": [1.0, 1.0]}))
    assert reg.get_pattern("p0")["stop_first"] == 0          # the trade outranks the later barrier outcome
    assert reg.get_pattern("p1")["stop_first"] == 1          # same rank: the newer explicit value replaces
    with pytest.raises(RegistryError, match=r"'stop_first' has values \[2\]"):
        reg.record_outcomes(pd.DataFrame({"pattern_id": ["p1"], "label": [1.0], "stop_first": [2.0]}))


# -- the prediction log ----------------------------------------------------------------------------
def log_frame(rows):
    return pd.DataFrame(rows, columns=["pattern_id", "model_id", "mode", "predicted_at", "ml_confidence",
                                       "decision"])


def planted_log(reg):
    """Six patterns with known outcomes, two model versions, seven + two scoring events (see the test)."""
    reg.register_patterns(patterns(6), features(6))
    reg.record_outcomes(pd.DataFrame({"pattern_id": ["p0", "p1", "p2", "p3"], "label": [1.0, 0.0, 1.0, 0.0],
                                      "r_multiple": [2.0, -1.0, 1.5, -1.0]}))
    reg.label_pattern("p5", "win")                                  # resolved, but with no R of its own
    reg.add_model_version("sq", version=1, status="production")
    reg.add_model_version("sq", version=2, status="shadow")
    t1, t2 = "2021-04-01 00:00", "2021-04-02 00:00"
    reg.log_predictions(log_frame([
        ("p0", "sq-v1", "filter", t1, 0.8, "take"), ("p1", "sq-v1", "filter", t1, 0.6, "take"),
        ("p2", "sq-v1", "filter", t1, 0.4, "skip"), ("p3", "sq-v1", "filter", t1, 0.3, "skip"),
        ("p4", "sq-v1", "filter", t1, 0.7, "take"), ("p5", "sq-v1", "filter", t1, 0.5, "reduce_size"),
        ("p0", "sq-v1", "score_enhancement", t2, 0.35, "skip")]), run_id="wf-1")
    reg.log_predictions(log_frame([("p0", "sq-v2", "filter", t2, 0.9, "take"),
                                   ("p1", "sq-v2", "filter", t2, 0.2, "skip")]), run_id="wf-1")


def test_prediction_performance_matches_a_hand_computation(reg):
    planted_log(reg)
    perf = reg.prediction_performance("sq")
    assert tuple(perf.columns) == PERFORMANCE_COLUMNS and perf["model_id"].tolist() == ["sq-v1", "sq-v2"]
    v1 = perf.iloc[0].to_dict()
    # resolved distinct patterns, newest confidence each: p0 .35 (win), p1 .6 (loss), p2 .4 (win), p3 .3 (loss),
    # p5 .5 (win). Pairs win > loss: .35>.3, .4>.3, .5>.3 -> 3 of 6.
    assert (v1["predictions"], v1["patterns"], v1["resolved"]) == (7, 6, 6)
    assert v1["auc"] == pytest.approx(3 / 6)
    assert v1["brier"] == pytest.approx((0.65 ** 2 + 0.6 ** 2 + 0.6 ** 2 + 0.3 ** 2 + 0.5 ** 2) / 5)
    # taken: p0 take, p1 take, p4 take (unresolved), p5 reduce_size; skipped: p2, p3, p0 (score_enhancement)
    assert (v1["taken"], v1["skipped"]) == (4, 3)
    assert v1["win_rate_taken"] == pytest.approx(2 / 3) and v1["win_rate_skipped"] == pytest.approx(2 / 3)
    assert v1["mean_r_taken"] == pytest.approx((2.0 - 1.0) / 2)                 # p5 has no R
    assert v1["mean_r_skipped"] == pytest.approx((1.5 - 1.0 + 2.0) / 3)
    assert (v1["model_name"], v1["version"], v1["status"]) == ("sq", 1, "production")
    v2 = perf.iloc[1]
    assert (v2["predictions"], v2["auc"], v2["status"]) == (2, 1.0, "shadow")
    assert v2["brier"] == pytest.approx((0.1 ** 2 + 0.2 ** 2) / 2)
    assert (v2["win_rate_taken"], v2["mean_r_taken"], v2["mean_r_skipped"]) == (1.0, 2.0, -1.0)


def test_prediction_performance_filters_by_time_and_follows_relabels(reg):
    planted_log(reg)
    late = reg.prediction_performance("sq", since="2021-04-01 12:00")
    assert late.set_index("model_id")["predictions"].to_dict() == {"sq-v1": 1, "sq-v2": 2}
    assert reg.prediction_performance("other").empty
    reg.label_pattern("p4", "loss")                                  # p4 resolves later: it joins
    assert reg.prediction_performance("sq").iloc[0]["resolved"] == 7


def test_logging_the_same_event_twice_is_one_row_with_the_newest_values(reg):
    planted_log(reg)
    reg.log_predictions(log_frame([("p0", "sq-v1", "filter", "2021-04-03", 0.55, "skip")]), run_id="wf-1")
    got = reg.get_predictions(pattern_id="p0", model_id="sq-v1")
    assert len(got) == 2 and got.set_index("mode").loc["filter", "ml_confidence"] == 0.55
    reg.log_predictions(log_frame([("p0", "sq-v1", "filter", "2021-04-03", 0.55, "skip")]))   # no run: run_id ''
    assert sorted(reg.get_predictions(pattern_id="p0", model_id="sq-v1")["run_id"]) == ["", "wf-1", "wf-1"]


def test_shadow_predictions_never_act_and_acting_ones_are_refused(reg):
    planted_log(reg)
    got = reg.get_predictions(model_id="sq-v2")
    assert got["acting"].tolist() == [False, False]
    assert reg.get_predictions(model_id="sq-v1")["acting"].all()
    with pytest.raises(RegistryError, match=r"'sq-v2' is canary or shadow.*acting=False"):
        reg.log_predictions(log_frame([("p2", "sq-v2", "filter", "2021-04-03", 0.5, "take")]), acting=True)


def test_the_log_keeps_the_five_largest_contributions_largest_first(reg):
    reg.register_patterns(patterns(2), features(2))
    names = [f"f{i}" for i in range(8)]
    contrib = pd.DataFrame([[0.1, -0.9, 0.3, 0.05, -0.4, 0.2, 0.6, -0.01], [0.0] * 7 + [0.7]], columns=names)
    contrib["bias"] = 5.0                                            # never a feature contribution
    frame = log_frame([("p0", "m", "filter", "2021-04-01", 0.7, "take"), ("p1", "m", "filter", "2021-04-01", 0.4,
                                                                           "skip")])
    assert reg.log_predictions(frame, contributions=contrib) == 2
    got = reg.get_predictions().set_index("pattern_id")["contributions"]
    assert list(got["p0"].items()) == [("f1", -0.9), ("f6", 0.6), ("f4", -0.4), ("f2", 0.3), ("f5", 0.2)]
    assert next(iter(got["p1"])) == "f7"
    reg.log_predictions(frame.assign(contributions=[{"a": 1.0}, json.dumps({"b": -2.0, "c": 0.5})]))
    got = reg.get_predictions().set_index("pattern_id")["contributions"]
    assert got["p0"] == {"a": 1.0} and list(got["p1"]) == ["b", "c"]


@pytest.mark.parametrize("change, message", [
    ({"decision": "maybe"}, r"decision 'maybe' is not one of 'take', 'skip', 'reduce_size'"),
    ({"model_id": None}, r"model_id is required: predictions for patterns \['p0'\]"),
    ({"mode": " "}, r"mode is required"),
])
def test_bad_prediction_rows_are_refused_naming_the_value_and_nothing_is_written(reg, change, message):
    frame = log_frame([("p0", "m", "filter", "2021-04-01", 0.7, "take")])
    for k, v in change.items():
        frame[k] = v
    with pytest.raises(RegistryError, match=message):
        reg.log_predictions(frame)
    assert reg.get_predictions().empty
