"""The verdict's trade-level return, Sharpe and drawdown (SPEC §11), checked against hand computations.

Each dataset's curve is THE scored equity (daily mark-to-market, :mod:`qml_plugin.tradesim`) stamped on UTC
days; a market's curve is the equal-weight mean of its datasets', the pooled row's the equal-weight mean of
the markets'. The hand computations below are plain Python loops over a few dozen bars.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from qml_plugin.comparison import holm_seeds, utc_daily_equity
from qml_plugin.job.verdict import trade_rows
from qml_plugin.tradesim import FULL_SIZE


def _bars(start: str, periods: int, freq: str, tz: str, closes, hours=None) -> pd.DataFrame:
    idx = pd.date_range(start, periods=periods, freq=freq)
    if hours is not None:                                    # a stock's session: only these hours of each day
        idx = pd.DatetimeIndex([t for t in pd.date_range(start, periods=periods * 24, freq="h") if t.hour in hours])
        idx = idx[:periods]
    c = np.asarray(closes, float)
    df = pd.DataFrame({"Open": c, "High": c * 1.01, "Low": c * 0.99, "Close": c, "Volume": 0.0}, index=idx)
    df.attrs.update(tz=tz, timeframe=freq)
    return df


def _hand_equity(close, day_of_bar, fill, exit_, paid, exit_px, d, fee):
    """vectorbt's targetpercent accounting of one trade, marked at each day's last bar, in a plain loop: a
    long buys FULL_SIZE of the equity, or what the cash buys once the commission is added on top."""
    cash, units, out = 1.0, 0.0, []
    for b in range(len(close)):
        if b == fill:
            units = FULL_SIZE * d * cash / paid
            if d > 0 and units * paid * (1 + fee) > cash:
                units = cash / (1 + fee) / paid
            cash -= units * paid + abs(units) * paid * fee
        if b == exit_:
            cash += units * exit_px - abs(units) * exit_px * fee
            units = 0.0
        if b == len(close) - 1 or day_of_bar[b + 1] != day_of_bar[b]:
            out.append(cash + units * close[b])
    return out


def _stats(v: list[float], days_per_year: float):
    r = [v[i] / v[i - 1] - 1 for i in range(1, len(v))]
    mean = sum(r) / len(r)
    sd = math.sqrt(sum((x - mean) ** 2 for x in r) / (len(r) - 1))
    peak, dd = v[0], 0.0
    for x in v:
        peak = max(peak, x)
        dd = min(dd, x / peak - 1)
    return (v[-1] / v[0] - 1) * 100, mean / sd * math.sqrt(days_per_year), dd * 100


RNG = np.random.default_rng(4)
EQ = _bars("2024-01-08 09:00", 21, "1h", "America/New_York", 50 * np.exp(np.cumsum(RNG.normal(0, .01, 21))),
           hours=range(9, 16))                                      # 3 sessions of 7 bars, 14:00-21:00 UTC
FX1 = _bars("2024-01-08", 72, "1h", "UTC", 1.1 * np.exp(np.cumsum(RNG.normal(0, .002, 72))))
FX4 = _bars("2024-01-08", 18, "4h", "UTC", 1.1 * np.exp(np.cumsum(RNG.normal(0, .004, 18))))
# (dataset, market, frame, fill bar, exit bar (-1 open), fill price as paid, exit price, direction, commission)
TRADES = [("EQ_1h", "EQ", EQ, 1, 12, EQ["Close"].iloc[1] * 1.001, EQ["Close"].iloc[12], 1, 0.0005),
          ("FX_1h", "FX", FX1, 5, 60, FX1["Close"].iloc[5] * (1 - 0.0002), FX1["Close"].iloc[60], -1, 0.0),
          ("FX_4h", "FX", FX4, 3, -1, FX4["Close"].iloc[3], np.nan, 1, 0.0001)]


def _curve(ds, frame, fill, exit_, paid, exit_px, d, fee):
    t = pd.DataFrame({"fill_bar": [fill], "exit_bar": [exit_ if exit_ >= 0 else np.nan], "fill_price": [paid],
                      "exit_price": [exit_px], "direction": [d]})
    return utc_daily_equity(t, frame, commission=fee)


def test_utc_daily_equity_is_the_hand_computed_mark_to_market_on_utc_days():
    for ds, _, frame, fill, exit_, paid, exit_px, d, fee in TRADES:
        eq = _curve(ds, frame, fill, exit_, paid, exit_px, d, fee)
        days = frame.index.normalize()
        hand = _hand_equity(frame["Close"].to_numpy(), days, fill, exit_, paid, exit_px, d, fee)
        assert eq.tolist() == pytest.approx([1.0, *hand], rel=1e-12), ds
        assert str(eq.index.tz) == "UTC"
        assert list(eq.index[1:].normalize()) == list(pd.DatetimeIndex(days.unique()).tz_localize("UTC"))
        assert eq.index[0] == pd.Timestamp("2024-01-07 23:59:59.999999999", tz="UTC")   # the day before
    eq = _curve(*TRADES[0][:1], *TRADES[0][2:])
    assert eq.index[1] == pd.Timestamp("2024-01-08 20:00", tz="UTC")        # 15:00 EST, the session's last bar


def test_pooled_trade_rows_score_the_equal_weight_portfolio_of_market_curves_by_hand():
    curves, trades, pats = {}, [], []
    for k, (ds, market, frame, fill, exit_, paid, exit_px, d, fee) in enumerate(TRADES):
        curves[ds] = _curve(ds, frame, fill, exit_, paid, exit_px, d, fee)
        entry = pd.Timestamp(frame.index[fill]).tz_localize(frame.attrs["tz"]).tz_convert("UTC")
        trades.append({"scheme": "pooled", "mode": "baseline", "dataset": ds, "market": market,
                       "entry_time_utc": entry, "r_net": [1.5, -1.0, 0.5][k]})
        pats.append({"scheme": "pooled", "dataset": ds, "market": market, "known_at_utc": entry, "r_net": 0.0,
                     "placeable": True, "technical": True, "detection_bar": fill, "p1_bar": 0, "fill_bar": fill,
                     "exit_bar": exit_, "validity_score": 0.6})
    equity = pd.concat([pd.DataFrame({"scheme": "pooled", "mode": "baseline", "dataset": ds, "market": m,
                                      "time_utc": curves[ds].index, "equity": curves[ds].to_numpy()})
                        for ds, m, *_ in TRADES], ignore_index=True)
    rows = trade_rows(pd.DataFrame(pats), pd.DataFrame(trades), equity, seeds=10, n_boot=0).set_index("market")
    # by hand: every curve has the same 4 UTC days (the opening day and 3 sessions)
    v = {ds: curves[ds].to_numpy() for ds in curves}
    fx = [(a + b) / 2 for a, b in zip(v["FX_1h"], v["FX_4h"])]
    pooled = [(a + b) / 2 for a, b in zip(v["EQ_1h"], fx)]
    per_year = 4 / (4 / 365.25)
    for market, hand in (("all", pooled), ("FX", fx), ("EQ", list(v["EQ_1h"]))):
        total, sharpe, dd = _stats(hand, per_year)
        got = rows.loc[market, ["total_return", "sharpe", "max_drawdown"]].to_numpy(float)
        assert np.isfinite(got).all(), market
        assert got == pytest.approx([total, sharpe, dd], rel=1e-9), market
    assert rows.loc["all", "n"] == 3 and rows.loc["all", "mean_r"] == pytest.approx(1 / 3)


def test_holm_seeds_let_the_best_of_m_rows_pass_holm():
    for m in (1, 7, 15, 23, 40):
        s = holm_seeds(m)
        assert 10 / (s + 1) * m <= 0.05 + 1e-12 < 10 / s * m      # the smallest such count


def test_the_table_text_says_what_p_random_resolves_and_whether_holm_can_pass():
    from test_verdict import _inputs

    from qml_plugin.job.verdict import verdict_table
    from qml_plugin.job.verdict_text import holm_families, resolution_note

    pats = _inputs(1, skill=0.0, schemes=("pooled", "per_market"))
    few = verdict_table(pats, primary_mode="filter", seeds=100, n_boot=0)
    assert holm_families(few) == {"pooled": 7, "per_market": 6}        # 2 schemes x 4 modes - the primary
    note = resolution_note(few)
    assert "0.0099 at the pattern level (100 random filters per row)" in note
    assert "(7 rows) passes its best row at 0.05 only when its p_random <= 0.0071, which 100 random filters " \
           "cannot show" in note and "it needs at least 139" in note
    assert "(6 rows) passes its best row at 0.05 only when its p_random <= 0.0083" in note    # 6 / 101 > 0.05
    assert "it needs at least 119" in note
    enough = verdict_table(pats, primary_mode="filter", seeds=holm_seeds(7), n_boot=0)
    assert "at most 9 of 1,399 random filters" in resolution_note(enough) and "cannot" not in resolution_note(enough)


def test_a_mode_that_made_no_trade_keeps_its_trade_rows():
    from test_verdict import _inputs

    from qml_plugin.job.verdict import verdict_table

    pats, trades, equity = _inputs(4, skill=0.0, trades=True)
    pats["taken_filter"] = False                                     # the filter kept nothing ...
    trades, equity = trades[trades["mode"] != "filter"], equity[equity["mode"] != "filter"]
    table = verdict_table(pats, trades=trades, equity=equity, primary_mode="replace", seeds=50, trade_seeds=50,
                          n_boot=0)
    rows = table[(table["level"] == "trade") & (table["mode"] == "filter")]
    assert len(rows) == 1 + pats["market"].nunique() and (rows["n"] == 0).all()    # ... and still has its rows
    assert rows["p_random"].isna().all()
