"""The three ML modes, the out-of-sample guard and the trade selection, engine-free."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import random_walk

from qml_plugin.errors import ConfigError
from qml_plugin.filter import admissible_model, decide, random_filter_mask, size_fraction
from qml_plugin.patterns import detect_patterns, label_patterns
from qml_plugin.tradesim import select_trades

V = np.array([0.2, 0.4, 0.6, 0.8, 0.6])  # validity_score
C = np.array([0.9, 0.2, 0.2, 0.9, np.nan])  # ml_confidence (last one: no admissible model)


def test_without_ml_the_technical_rule_decides():
    take, score = decide(V, C, mode=None, min_score=0.5)
    assert take.tolist() == [False, False, True, True, True] and np.allclose(score, V)


def test_filter_can_only_remove_trades():
    take, _ = decide(V, C, mode="filter", min_score=0.5, confidence_threshold=0.5)
    assert take.tolist() == [False, False, False, True, True]
    base, _ = decide(V, C, mode=None)
    assert not (take & ~base).any()


def test_score_enhancement_blends_and_can_add_back_a_weak_pattern_the_model_likes():
    take, score = decide(V, C, mode="score_enhancement", min_score=0.5, ml_weight=0.5)
    assert np.allclose(score[:4], 0.5 * V[:4] + 0.5 * C[:4])
    assert take.tolist() == [True, False, False, True, True]  # 0.2 technical + 0.9 ML = 0.55 passes


def test_replace_ignores_the_technical_score():
    take, score = decide(V, C, mode="replace", confidence_threshold=0.5)
    assert take.tolist() == [True, False, False, True, True] and np.allclose(score[:4], C[:4])


def test_unscored_patterns_fall_back_to_the_technical_rule_in_every_mode():
    for mode in ("filter", "score_enhancement", "replace"):
        take, score = decide(V, np.full(5, np.nan), mode=mode)
        assert take.tolist() == (V >= 0.5).tolist() and np.allclose(score, V)


def test_unknown_mode_is_a_config_error():
    with pytest.raises(ConfigError, match="prediction_mode = 'magic' is not allowed; allowed: filter"):
        decide(V, C, mode="magic")


def test_size_by_score_is_a_fraction_of_equity_in_0_1():
    s = size_fraction([-1.0, 0.0, 0.5, 1.0, np.nan])
    assert ((s > 0) & (s < 1)).all() and s[2] == 0.5


def test_out_of_sample_guard_picks_the_latest_model_trained_before_each_pattern():
    ends = pd.to_datetime(["2010-01-01", "2012-01-01", "2011-01-01"])
    det = pd.to_datetime(["2009-06-01", "2010-01-01", "2010-06-01", "2011-06-01", "2013-01-01"])
    assert admissible_model(det, ends).tolist() == [-1, -1, 0, 2, 1]
    # with a 10-day embargo, a pattern 5 days after the training end may not be scored by that model
    det = pd.to_datetime(["2010-01-06", "2010-01-20"])
    assert admissible_model(det, ends, embargo=pd.Timedelta(days=10)).tolist() == [-1, 0]
    assert admissible_model(det, []).tolist() == [-1, -1]


def test_a_row_scored_at_run_time_obeys_the_same_embargo_as_the_batch():
    from qml_plugin.ml.model import SignalQualityModel
    from qml_plugin.scoring import Scorer

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"f": rng.normal(size=200)})
    times = pd.date_range("2010-01-01", periods=200, freq="D")
    model = SignalQualityModel(n_estimators=5).fit(X, (X["f"] > 0).astype(int), detection_times=times, exit_times=times)
    end = model.trained_on_end_
    row = {"detection_time": end + pd.Timedelta(days=5), "f": 1.0}
    assert np.isfinite(Scorer(pd.Series(dtype=float), "out-of-sample", [model]).score_row(row))
    embargoed = Scorer(pd.Series(dtype=float), "out-of-sample", [model], pd.Timedelta(days=10))
    assert np.isnan(embargoed.score_row(row))                       # 5 days after training < 10-day embargo
    assert np.isfinite(embargoed.score_row({**row, "detection_time": end + pd.Timedelta(days=11)}))


def test_random_filter_keeps_the_same_pass_rate_among_candidates():
    cand = np.array([True] * 80 + [False] * 20)
    masks = [random_filter_mask(cand, 0.25, seed) for seed in range(5)]
    assert all(m.sum() == 20 and not (m & ~cand).any() for m in masks)
    assert len({m.tobytes() for m in masks}) == 5


def _labeled(rows):
    """A label_patterns-like frame from (detection_bar, p1_bar, validity_score, fill_bar, exit_bar) rows."""
    t, p1, v, fill, exit_ = (np.array(c, float) for c in zip(*rows))
    return pd.DataFrame({"detection_bar": t.astype(int), "p1_bar": p1.astype(int), "validity_score": v,
                         "fill_bar": fill, "exit_bar": exit_})


def test_trade_selection_waits_for_the_trade_to_exit_or_the_order_to_expire():
    lab = _labeled([
        (10, 1, 0.6, 12, 30),          # A: filled at 12, exits at 30            -> traded
        (20, 2, 0.9, 21, 25),          # B: while A is open                       -> skipped
        (30, 3, 0.6, np.nan, np.nan),  # C: on A's exit bar; never fills, expires at 30 + 20
        (45, 4, 0.6, 46, 60),          # D: while C's order is pending            -> skipped
        (50, 5, 0.6, 52, np.nan),      # E: as C expires; filled, still open at the end
        (70, 6, 0.6, 71, 80),          # F: E never exits                          -> skipped
    ])
    assert select_trades(lab, np.ones(6, bool), max_wait=20).tolist() == [True, False, True, False, True, False]
    assert select_trades(lab, np.array([True, True, False, True, True, True]), max_wait=20).tolist() == \
        [True, False, False, True, False, True]     # without C: D is free (A exited at 30), blocks E, exits by F


def test_two_patterns_on_one_bar_the_higher_score_wins_then_the_earlier_p1():
    lab = _labeled([(10, 3, 0.6, 11, 20), (10, 2, 0.8, 11, 20), (30, 5, 0.7, 31, 40), (30, 4, 0.7, 31, 40)])
    assert select_trades(lab, np.ones(4, bool)).tolist() == [False, True, False, True]


def test_trade_selection_is_one_position_at_a_time():
    df = random_walk(3000, seed=7)
    lab = label_patterns(df, detect_patterns(df))
    chosen = select_trades(lab, np.ones(len(lab), bool))
    assert 20 <= chosen.sum() < len(lab)                    # it trades, and the rule binds
    busy_until = -1
    for _, r in lab[chosen].iterrows():
        assert r.detection_bar >= busy_until
        busy_until = r.exit_bar if r.status == "filled" else r.detection_bar + 20
        if np.isnan(busy_until):
            busy_until = np.inf
    # and every skipped pattern was really blocked: by a chosen one on its bar, or by a live order / trade
    starts = lab.loc[chosen, "detection_bar"].to_numpy()
    ends = np.where(lab.loc[chosen, "status"] == "filled", lab.loc[chosen, "exit_bar"].fillna(np.inf),
                    lab.loc[chosen, "detection_bar"] + 20)
    for b in lab.loc[~chosen, "detection_bar"]:
        assert b in starts or ((starts < b) & (b < ends)).any()


def test_guard_compares_times_of_different_resolutions_correctly():
    # pandas keeps us and ns resolutions apart; a model trained up to 2012 must not score 2010
    det = pd.DatetimeIndex(pd.to_datetime(["2010-06-01", "2013-06-01"])).as_unit("us")
    ends = [pd.Timestamp("2012-01-01").as_unit("ns")]
    for embargo in (None, pd.Timedelta(0), pd.Timedelta("1h")):
        assert admissible_model(det, ends, embargo=embargo).tolist() == [-1, 0]
    assert admissible_model(det.as_unit("s"), [pd.Timestamp("2012-01-01").as_unit("ms")]).tolist() == [-1, 0]


def test_pattern_ids_do_not_depend_on_the_index_resolution():
    df = random_walk(1500, seed=11)
    coarse = df.copy()
    coarse.index = coarse.index.as_unit("s")
    assert detect_patterns(df)["pattern_id"].tolist() == detect_patterns(coarse)["pattern_id"].tolist()
