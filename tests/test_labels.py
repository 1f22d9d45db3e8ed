"""Triple-barrier outcomes agree with backtesting.py's own fills and exits, trade by trade."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from backtesting import Backtest, Strategy
from conftest import make_ohlcv, random_walk, zigzag
from hypothesis import given, settings
from hypothesis import strategies as st

from qml_plugin import load_ohlcv
from qml_plugin.errors import ConfigError, DataError
from qml_plugin.patterns import QMLParams, atr14, detect_patterns, label_patterns
from qml_plugin.patterns.labels import OUTCOME_COLUMNS


class OnePattern(Strategy):
    """Trades exactly one pattern: limit entry at bar t, SL/TP bracket, cancel after max_wait,
    close at market after max_hold bars in the trade."""

    pattern = None
    max_wait = 20
    max_hold = 100

    def init(self):
        self.order = None

    def next(self):
        p, i = self.pattern, len(self.data) - 1
        if i == p["t"]:
            place = self.buy if p["direction"] == 1 else self.sell
            self.order = place(size=1, limit=p["entry"], sl=p["stop"], tp=p["target"])
        elif self.order is not None and not self.trades and i >= p["t"] + self.max_wait:
            if self.order in self.orders:
                self.order.cancel()
            self.order = None
        for trade in self.trades:
            if i - trade.entry_bar >= self.max_hold:
                trade.close()


def backtest_one(df, row, max_wait=20, max_hold=100):
    """Run the pattern alone in backtesting.py on a window starting a few bars before detection."""
    lo = max(0, int(row.detection_bar) - 5)
    hi = min(len(df), int(row.detection_bar) + max_wait + max_hold + 5)
    win = df.iloc[lo:hi]
    pat = {"t": int(row.detection_bar) - lo, "direction": int(row.direction),
           "entry": row.entry, "stop": row.stop, "target": row.target}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bt = Backtest(win, OnePattern, cash=1e12, commission=0.0, trade_on_close=False)
        stats = bt.run(pattern=pat, max_wait=max_wait, max_hold=max_hold)
    return stats._trades, lo


@pytest.mark.parametrize("name,resample,params", [
    ("EURUSD_1h", "4h", QMLParams()),
    ("BTCUSD_1h", None, QMLParams(swing_n=2, target="rr", rr=1.5)),
    ("SPY_1d", None, QMLParams(entry_offset_atr=0.2, max_hold=15)),
])
def test_label_patterns_matches_backtesting_py_trade_by_trade(name, resample, params):
    df = load_ohlcv(name, resample=resample)
    pats = detect_patterns(df, params)
    valid = pats[(pats.target - pats.entry) * pats.direction > 0]  # backtesting.py needs SL < entry < TP
    lab = label_patterns(df, valid)           # horizons: the detection params the patterns carry
    sample = lab.iloc[np.linspace(0, len(lab) - 1, 40).astype(int)]
    checked = {"filled": 0, "expired": 0, "timeout": 0}
    for _, row in sample.iterrows():
        trades, lo = backtest_one(df, row, params.max_wait, params.max_hold)
        if row.status == "expired":
            assert trades.empty
            checked["expired"] += 1
            continue
        if np.isnan(row.exit_price):  # still open where the window ends: backtesting.py has no trade either
            assert trades.empty
            continue
        assert len(trades) == 1, row
        t = trades.iloc[0]
        assert t.EntryBar + lo == row.fill_bar
        assert t.EntryPrice == pytest.approx(row.fill_price, rel=1e-12)
        assert t.ExitBar + lo == row.exit_bar
        assert t.ExitPrice == pytest.approx(row.exit_price, rel=1e-12)
        assert t.ReturnPct * 100 == pytest.approx(row.pnl_pct, rel=1e-9, abs=1e-12)
        checked["filled"] += 1
        checked["timeout"] += row.exit_reason == "timeout"
    assert checked["filled"] >= 5 and checked["expired"] >= 5


# BULL from test_patterns: bullish QML at t=41, entry 94.5, stop ~91.13, target 100.5
BULL = [(0, 100), (19, 100), (24, 95), (28, 99), (33, 92), (45, 104), (50, 103)]


def _one(df):
    return detect_patterns(df, QMLParams(swing_n=2))


def test_limit_entry_fills_at_the_open_when_the_market_gaps_through_it():
    df = zigzag(BULL + [(60, 93.9), (70, 100)])  # falls back through the 94.5 QML level
    p = _one(df).iloc[:1]
    o = df["Open"].to_numpy().copy()
    lab = label_patterns(df, p)
    f = int(lab.fill_bar.iloc[0])
    assert df["Low"].iloc[f] <= 94.5 < df["Low"].iloc[f - 1]
    assert lab.fill_price.iloc[0] == min(o[f], 94.5)
    gap = df.copy()
    gap.iloc[f, gap.columns.get_loc("Open")] = 94.0  # opens below the entry: filled at the open
    gap.iloc[f, gap.columns.get_loc("High")] = max(gap["High"].iloc[f], 94.0)
    gap.iloc[f, gap.columns.get_loc("Low")] = min(gap["Low"].iloc[f], 94.0)
    assert label_patterns(gap, p).fill_price.iloc[0] == 94.0


def test_a_bar_touching_stop_and_target_exits_at_the_stop():
    df = zigzag(BULL + [(60, 94.0), (66, 94.0)])
    p = _one(df).iloc[:1]
    lab = label_patterns(df, p)
    f = int(lab.fill_bar.iloc[0])
    wide = df.copy()
    wide.iloc[f + 1, wide.columns.get_loc("High")] = 120.0
    wide.iloc[f + 1, wide.columns.get_loc("Low")] = 80.0
    out = label_patterns(wide, p).iloc[0]
    assert (out.exit_bar, out.exit_reason) == (f + 1, "stop")
    assert out.exit_price == min(wide["Open"].iloc[f + 1], p.stop.iloc[0])
    assert out.label == 0 and out.r_multiple < 0


def test_stop_and_target_are_not_checked_in_the_fill_bar():
    df = zigzag(BULL + [(60, 94.0), (66, 94.0)])
    p = _one(df).iloc[:1]
    f = int(label_patterns(df, p).fill_bar.iloc[0])
    wide = df.copy()
    wide.iloc[f, wide.columns.get_loc("Low")] = 80.0  # the fill bar itself crosses the stop
    out = label_patterns(wide, p).iloc[0]
    assert out.fill_bar == f and np.isnan(out.exit_bar)  # not stopped in its own fill bar: still open


def test_unfilled_order_expires_and_data_ending_early_gives_an_open_outcome():
    df = zigzag(BULL + [(60, 103)])  # never comes back to 94.5
    out = label_patterns(df, _one(df)).iloc[0]
    assert out.status == "expired" and np.isnan(out.label) and np.isnan(out.fill_bar)
    df = zigzag(BULL + [(60, 94.0), (66, 94.2)])  # fills, then the data ends inside the trade
    out = label_patterns(df, _one(df)).iloc[0]
    assert out.status == "filled" and np.isnan(out.exit_price) and np.isnan(out.label)
    assert pd.isna(out.exit_reason) and pd.isna(out.exit_time)


def test_timeout_exits_at_the_next_open_after_max_hold():
    df = zigzag(BULL + [(60, 94.0), (200, 94.2)])
    out = label_patterns(df, _one(df), max_hold=10).iloc[0]
    assert out.exit_reason == "timeout" and out.exit_bar == out.fill_bar + 11
    assert out.exit_price == df["Open"].iloc[int(out.exit_bar)]


def test_outcome_columns_and_bad_arguments():
    df = random_walk(2000, seed=3)
    lab = label_patterns(df, detect_patterns(df))
    assert set(OUTCOME_COLUMNS) <= set(lab.columns)
    closed = lab.dropna(subset=["label"])
    assert set(closed["exit_reason"]) <= {"stop", "target", "timeout"}
    assert ((closed.r_multiple > 0) == (closed.label == 1)).all()
    with pytest.raises(ConfigError, match="max_wait=0 is not valid; allowed: an integer >= 1"):
        label_patterns(df, detect_patterns(df), max_wait=0)
    with pytest.raises(DataError, match=r"patterns lack columns \['entry'"):
        label_patterns(df, detect_patterns(df).drop(columns="entry"))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), cut=st.floats(0.2, 1.0))
def test_outcomes_known_at_c_do_not_change_when_the_future_arrives(seed, cut):
    df = random_walk(800, seed)
    c = int(cut * (len(df) - 1))
    full = label_patterns(df, detect_patterns(df))
    part = label_patterns(df.iloc[: c + 1], detect_patterns(df.iloc[: c + 1]))
    done = part["exit_bar"] <= c
    cols = ["pattern_id", "fill_bar", "fill_price", "exit_bar", "exit_price", "exit_reason", "label"]
    pd.testing.assert_frame_equal(part.loc[done, cols], full.loc[part.index[done], cols])


def test_make_ohlcv_helper_is_valid():
    from qml_plugin import validate_ohlcv

    validate_ohlcv(make_ohlcv([2, 3], [1, 1], [1.5, 2]))


_RW = random_walk(3000, seed=11, vol=0.004)


@st.composite
def qml_params(draw):
    target = draw(st.sampled_from(["swing", "rr"]))
    return QMLParams(swing_n=draw(st.integers(1, 5)), head_min_atr=draw(st.floats(0.0, 1.5)),
                     max_span=draw(st.integers(10, 150)), entry_offset_atr=draw(st.floats(0.0, 0.5)),
                     stop_buffer_atr=draw(st.floats(0.0, 1.0)), target=target, rr=draw(st.floats(0.5, 4.0)),
                     max_wait=draw(st.integers(1, 30)), max_hold=draw(st.integers(1, 60)))


@settings(max_examples=40, deadline=None)
@given(params=qml_params())
def test_outcomes_agree_with_the_params_the_patterns_were_detected_with(params):
    df = _RW
    pats = detect_patterns(df, params)
    lab = label_patterns(df, pats)
    pd.testing.assert_frame_equal(lab, label_patterns(df, pats, max_wait=params.max_wait,
                                                       max_hold=params.max_hold))
    if lab.empty:
        return
    t, d = lab["detection_bar"].to_numpy(), lab["direction"].to_numpy()
    low, high = df["Low"].to_numpy(), df["High"].to_numpy()
    filled = (lab["status"] == "filled").to_numpy()
    fill = lab["fill_bar"].to_numpy()
    # max_wait: a fill comes within max_wait bars, and an expired order never touched its entry in them
    assert ((fill[filled] - t[filled] >= 1) & (fill[filled] - t[filled] <= params.max_wait)).all()
    for k in np.flatnonzero(~filled):
        window = slice(t[k] + 1, t[k] + params.max_wait + 1)
        touched = (low[window] <= lab["entry"].iat[k]) if d[k] == 1 else (high[window] >= lab["entry"].iat[k])
        assert not touched.any(), lab.iloc[k]
    # max_hold: stop / target inside max_hold bars after the fill, else the timeout at the next bar's Open
    closed = lab[lab["exit_bar"].notna()]
    held = closed["exit_bar"] - closed["fill_bar"]
    timeout = closed["exit_reason"] == "timeout"
    assert (held[timeout] == params.max_hold + 1).all() and held[~timeout].between(1, params.max_hold).all()
    # the levels the outcome is judged on come from entry_offset_atr / stop_buffer_atr / target / rr
    atr = atr14(df).to_numpy()[t]
    np.testing.assert_allclose(lab["entry"], lab["p1_price"] + d * params.entry_offset_atr * atr, rtol=1e-12)
    np.testing.assert_allclose(lab["stop"], lab["p3_price"] - d * params.stop_buffer_atr * atr, rtol=1e-12)
    if params.target == "rr":
        hit = closed[closed["exit_reason"] == "target"]
        assert (hit["r_multiple"] >= params.rr * (1 - 1e-9)).all()        # filled at or better than entry
    # stop_first marks exactly the stop exits
    assert ((closed["stop_first"] == 1) == (closed["exit_reason"] == "stop")).all()
    assert lab.loc[lab["exit_bar"].isna(), "stop_first"].isna().all()
