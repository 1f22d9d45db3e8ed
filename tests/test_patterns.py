"""Swings and QML detection: hand-built series with the expected bars written out, plus invariants."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import make_ohlcv, random_walk, reference_atr14, zigzag
from hypothesis import given, settings
from hypothesis import strategies as st

from qml_plugin.patterns import QMLParams, atr14, detect_patterns, swing_points

# A bullish QML with swing_n=2: P1 low at bar 24 (94.5), P2 high at bar 28 (99.5), head P3 low at
# bar 33 (91.5, confirmed at 35). The rally closes above 99.5 first at bar 41 (mid 100).
BULL = [(0, 100), (19, 100), (24, 95), (28, 99), (33, 92), (45, 104), (50, 103)]
N2 = QMLParams(swing_n=2)


def mirror(pivots):
    return [(b, 200 - p) for b, p in pivots]


def test_atr14_is_wilders_recursion():
    df = random_walk(300, seed=1)
    np.testing.assert_allclose(atr14(df).to_numpy(), reference_atr14(df), rtol=1e-12, equal_nan=True)
    assert atr14(df).iloc[:13].isna().all() and not np.isnan(atr14(df).iloc[13])


def test_swings_of_a_zigzag_are_its_pivots():
    sw = swing_points(zigzag(BULL), n=2)
    assert sw["bar"].tolist() == [24, 28, 33, 45]
    assert sw["kind"].tolist() == ["low", "high", "low", "high"]
    assert sw["price"].tolist() == [94.5, 99.5, 91.5, 104.5]
    assert sw["confirmed_bar"].tolist() == [26, 30, 35, 47]
    assert sw["replaced_at_bar"].isna().all()


def test_a_more_extreme_swing_of_the_same_kind_replaces_the_last_one():
    # low at 24, a bounce too small to be a high? no: a high at 27, then... use two lows in a row:
    # lows at 24 (94.5) and 30 (93.5) with the bar 27 peak flattened so it is no swing high.
    df = zigzag([(0, 100), (19, 100), (24, 95), (27, 96), (30, 94), (36, 99), (40, 98)])
    h = df["High"].to_numpy().copy()
    h[25:30] = 96.0  # flat top: equal highs are never a swing high (strict on the left)
    df["High"] = np.maximum(h, df[["Open", "Close"]].max(axis=1))
    sw = swing_points(df, n=2)
    assert sw["bar"].tolist()[:2] == [24, 30]
    assert sw["kind"].tolist()[:2] == ["low", "low"]
    assert sw["replaced_at_bar"].iloc[0] == 32  # confirmed bar of the replacing low
    assert np.isnan(sw["replaced_at_bar"].iloc[1])


def test_outside_bar_adds_the_alternating_kind_first():
    # last swing is a high (bar 12, then a flat top): the outside bar 20 adds a low, then a high
    df = zigzag([(0, 100), (9, 100), (12, 103), (30, 103)])
    df.iloc[20, df.columns.get_loc("High")] = 110.0
    df.iloc[20, df.columns.get_loc("Low")] = 90.0
    sw = swing_points(df, n=2)
    assert list(zip(sw["bar"], sw["kind"], sw["price"])) == [(12, "high", 103.5), (20, "low", 90.0),
                                                             (20, "high", 110.0)]
    # last swing is a low (bar 15): the outside bar adds a high, then a low
    df = zigzag([(0, 100), (9, 100), (12, 103), (15, 100), (30, 100)])
    df.iloc[20, df.columns.get_loc("High")] = 110.0
    df.iloc[20, df.columns.get_loc("Low")] = 90.0
    sw = swing_points(df, n=2)
    assert list(zip(sw["bar"], sw["kind"])) == [(12, "high"), (15, "low"), (20, "high"), (20, "low")]


def test_outside_bar_on_an_empty_sequence_adds_the_high_first():
    df = zigzag([(0, 100), (30, 100)])
    df.iloc[20, df.columns.get_loc("High")] = 110.0
    df.iloc[20, df.columns.get_loc("Low")] = 90.0
    sw = swing_points(df, n=2)
    assert list(zip(sw["bar"], sw["kind"])) == [(20, "high"), (20, "low")]


def test_bullish_qml_is_detected_at_the_break_with_its_levels():
    df = zigzag(BULL)
    p = detect_patterns(df, N2)
    assert len(p) == 1
    r = p.iloc[0]
    atr = reference_atr14(df)[41]
    assert (r.pattern_type, r.direction, r.detection_bar, r.break_bar) == ("bullish_qml", 1, 41, 41)
    assert (r.p1_bar, r.p1_price, r.p2_bar, r.p2_price, r.p3_bar, r.p3_price) == (24, 94.5, 28, 99.5, 33, 91.5)
    assert r.detection_time == df.index[41]
    assert r.entry == 94.5
    assert r.stop == pytest.approx(91.5 - 0.25 * atr, rel=1e-12)
    assert r.target == 100.5  # highest High over bars 33..41
    assert r.rr == pytest.approx((100.5 - 94.5) / (94.5 - r.stop), rel=1e-12)
    assert 0 <= r.validity_score <= 1


def test_bearish_qml_mirrors_the_bullish_one():
    df = zigzag(mirror(BULL))
    p = detect_patterns(df, N2)
    assert len(p) == 1
    r = p.iloc[0]
    atr = reference_atr14(df)[41]
    assert (r.pattern_type, r.direction, r.detection_bar) == ("bearish_qml", -1, 41)
    assert (r.p1_bar, r.p1_price, r.p2_bar, r.p2_price, r.p3_bar, r.p3_price) == (24, 105.5, 28, 100.5, 33, 108.5)
    assert r.stop == pytest.approx(108.5 + 0.25 * atr, rel=1e-12)
    assert r.target == 99.5  # lowest Low over bars 33..41


def test_rr_target_and_entry_offset_move_the_levels():
    df = zigzag(BULL)
    atr = reference_atr14(df)[41]
    r = detect_patterns(df, QMLParams(swing_n=2, target="rr", rr=3.0, entry_offset_atr=0.1)).iloc[0]
    assert r.entry == pytest.approx(94.5 + 0.1 * atr, rel=1e-12)
    assert r.target == pytest.approx(r.entry + 3.0 * (r.entry - r.stop), rel=1e-12)
    assert r.rr == pytest.approx(3.0, rel=1e-12)


def test_pattern_is_not_detected_when_head_is_exceeded():
    # the BULL rally, but bar 37 wicks down to 91.0, below the head (91.5), before the break at 41
    df = zigzag(BULL)
    df.iloc[37, df.columns.get_loc("Low")] = 91.0
    p = detect_patterns(df, N2)
    assert 33 not in p["p3_bar"].tolist()
    # the wick is a deeper swing low that replaces the head: a pattern of its own, same P1 and P2
    assert p[["p1_bar", "p2_bar", "p3_bar", "detection_bar"]].values.tolist() == [[24, 28, 37, 41]]


def test_pattern_is_not_detected_when_the_span_is_too_long():
    df = zigzag(BULL)  # t - P1.bar = 41 - 24 = 17
    assert len(detect_patterns(df, N2.replace(max_span=17))) == 1
    assert len(detect_patterns(df, N2.replace(max_span=16))) == 0


def test_pattern_needs_p2_above_p1_above_p3():
    higher_low = [(0, 100), (19, 100), (24, 95), (28, 99), (33, 96), (45, 104), (50, 103)]
    assert detect_patterns(zigzag(higher_low), N2).empty
    p2_below_p1 = [(0, 100), (19, 100), (24, 95), (26, 94.8), (33, 92), (45, 104), (50, 103)]
    df = zigzag(p2_below_p1)
    assert (swing_points(df, n=2)["kind"].tolist()[:1] == ["low"])
    assert not ((detect_patterns(df, N2)["p1_bar"] == 24) & (detect_patterns(df, N2)["p3_bar"] == 33)).any()


def test_head_must_be_deep_enough_in_atr():
    df = zigzag(BULL)
    ratio = (94.5 - 91.5) / reference_atr14(df)[33]  # head depth in ATR14 at the head's bar
    assert len(detect_patterns(df, N2.replace(head_min_atr=ratio * (1 - 1e-9)))) == 1
    assert len(detect_patterns(df, N2.replace(head_min_atr=ratio * (1 + 1e-9)))) == 0


def test_head_where_atr_is_undefined_is_rejected():
    # the same shape shifted left so the head sits at bar 12, before ATR14 exists
    df = zigzag([(0, 100), (3, 100), (5, 95), (8, 99), (12, 92), (24, 104), (30, 103)])
    assert swing_points(df, n=2)["bar"].tolist()[:3] == [5, 8, 12]
    assert detect_patterns(df, N2).empty


def test_break_before_the_head_is_confirmed_detects_at_the_confirmation_bar():
    # swing_n=3: the head at bar 33 is confirmed at 36, but the steep rally closes above P2 at 35
    df = zigzag([(0, 100), (19, 100), (24, 95), (28, 99), (33, 92), (35, 102), (36, 103), (45, 104),
                 (50, 103)])
    p = detect_patterns(df, QMLParams(swing_n=3))
    assert len(p) == 1
    r = p.iloc[0]
    assert (r.break_bar, r.detection_bar, r.p3_bar) == (35, 36, 33)
    assert r.target == df["High"].iloc[33:37].max()


def test_pattern_id_is_deterministic_and_depends_on_symbol_and_params():
    df = zigzag(BULL)
    a = detect_patterns(df, N2)["pattern_id"].iloc[0]
    assert detect_patterns(df.copy(), N2)["pattern_id"].iloc[0] == a
    assert detect_patterns(df, N2, symbol="OTHER")["pattern_id"].iloc[0] != a
    assert detect_patterns(df, N2.replace(stop_buffer_atr=0.3))["pattern_id"].iloc[0] != a
    assert detect_patterns(df, N2.replace(min_score=0.9))["pattern_id"].iloc[0] == a


def test_bad_params_name_the_field_and_what_is_allowed():
    with pytest.raises(ValueError, match=r"QMLParams.target='fib' is not valid; allowed: 'swing' or 'rr'"):
        QMLParams(target="fib")
    with pytest.raises(ValueError, match=r"swing_n=0 .* integer >= 1"):
        QMLParams(swing_n=0)


def test_shipped_data_gives_patterns_of_both_kinds_with_about_half_passing_min_score(eurusd_4h):
    p = detect_patterns(eurusd_4h)
    assert set(p["pattern_type"]) == {"bullish_qml", "bearish_qml"}
    assert p["pattern_id"].is_unique
    assert p["detection_bar"].is_monotonic_increasing
    assert 0.3 < (p["validity_score"] >= 0.5).mean() < 0.7
    long, short = p[p.direction == 1], p[p.direction == -1]
    assert (long.p2_price > long.p1_price).all() and (long.p1_price > long.p3_price).all()
    assert (short.p2_price < short.p1_price).all() and (short.p1_price < short.p3_price).all()
    assert (p.detection_bar >= p.break_bar).all() and (p.detection_bar - p.p1_bar <= 100).all()


# ---------------------------------------------------------------- causality (hypothesis)

frames = st.builds(lambda n, seed, vol: random_walk(n, seed, vol=vol),
                   st.integers(60, 500), st.integers(0, 2**32 - 1), st.sampled_from([0.002, 0.01, 0.03]))


@settings(max_examples=60, deadline=None)
@given(df=frames, cut=st.floats(0, 1), n=st.integers(1, 5))
def test_swings_known_at_c_do_not_change_when_the_future_arrives(df, cut, n):
    c = int(cut * (len(df) - 1))
    full, part = swing_points(df, n=n), swing_points(df.iloc[: c + 1], n=n)
    known = full[full.confirmed_bar <= c].reset_index(drop=True)
    pd.testing.assert_frame_equal(part.drop(columns="replaced_at_bar"), known.drop(columns="replaced_at_bar"))
    rep_full = known["replaced_at_bar"].where(known["replaced_at_bar"] <= c)
    pd.testing.assert_series_equal(part["replaced_at_bar"], rep_full)


@settings(max_examples=60, deadline=None)
@given(df=frames, cut=st.floats(0, 1), n=st.integers(1, 5), head=st.sampled_from([0.0, 0.5, 1.0]),
       target=st.sampled_from(["swing", "rr"]))
def test_patterns_known_at_c_do_not_change_when_the_future_arrives(df, cut, n, head, target):
    c = int(cut * (len(df) - 1))
    params = QMLParams(swing_n=n, head_min_atr=head, target=target, max_span=60)
    full = detect_patterns(df, params)
    part = detect_patterns(df.iloc[: c + 1], params)
    known = full[full.detection_bar <= c].reset_index(drop=True)
    pd.testing.assert_frame_equal(part, known)


def test_detection_is_deterministic_on_real_data(eurusd_4h):
    pd.testing.assert_frame_equal(detect_patterns(eurusd_4h), detect_patterns(eurusd_4h.copy()))


def test_flat_and_tiny_frames_give_no_patterns():
    assert detect_patterns(make_ohlcv([1.0] * 5, [1.0] * 5, [1.0] * 5)).empty
    assert swing_points(make_ohlcv([1.0], [1.0], [1.0])).empty


def test_pattern_id_does_not_depend_on_numpy_or_python_number_types():
    df = zigzag(BULL)
    a = detect_patterns(df, QMLParams(swing_n=2, head_min_atr=0.5))["pattern_id"].iloc[0]
    b = detect_patterns(df, QMLParams(swing_n=np.int64(2), head_min_atr=np.float64(0.5)))["pattern_id"].iloc[0]
    assert a == b
