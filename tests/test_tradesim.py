"""The one scoring definition (tradesim): daily mark-to-market equity, Sharpe, drawdown, calmar."""
from __future__ import annotations

import math
import statistics

import numpy as np
import pandas as pd
import pytest
import vectorbt as vbt

from qml_plugin import load_ohlcv
from qml_plugin.tradesim import Market, account_nb, daily_equity, trade_metrics


def four_days() -> pd.DataFrame:
    """Bars at 00/06/12/18h on Mon 1, Tue 2, Wed 3 and Mon 8 January 2024 (no bars Thu-Sun)."""
    days = ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-08"]
    idx = pd.DatetimeIndex([pd.Timestamp(d) + pd.Timedelta(hours=h) for d in days for h in (0, 6, 12, 18)])
    close = [100, 100, 100, 99,     100, 102, 104, 105,     104, 105, 107, 108,     108, 108, 108, 108]
    return pd.DataFrame({"Close": np.asarray(close, float)}, index=idx)


# long 2 -> 6 (100 -> 104, open over Monday's close of 99), short 8 -> 10 (104 -> 107, a loss)
TRADES = pd.DataFrame({"EntryBar": [2, 8], "ExitBar": [6, 10], "EntryPrice": [100.0, 104.0],
                       "ExitPrice": [104.0, 107.0], "Size": [1.0, -1.0]})


def test_market_days_are_the_calendar_days_with_bars_and_their_count_per_year():
    m = Market.of(four_days())
    assert m.day_end.tolist() == [3, 7, 11, 15]
    assert m.days_per_year == pytest.approx(4 / (8 / 365.25))   # 4 days with bars over 8 calendar days


def test_sharpe_drawdown_and_calmar_match_a_hand_computation_on_daily_mark_to_market_equity():
    bars = four_days()
    # by hand, whole equity per trade (size 1): Monday ends holding 0.01 units at 99 -> 0.99 (marked to
    # market; closed-trade equity would still say 1.0); Tuesday flat after +4 % -> 1.04; Wednesday the
    # short lost 3/104 of 1.04 -> 1.01; the next Monday flat -> 1.01.
    daily = [0.99, 1.04, 1.01, 1.01]
    rets = [daily[0] / 1.0 - 1] + [b / a - 1 for a, b in zip(daily, daily[1:])]
    days_per_year = 4 / (8 / 365.25)
    sharpe = statistics.mean(rets) / statistics.stdev(rets) * math.sqrt(days_per_year)
    max_dd = min(-0.01, 1.01 / 1.04 - 1)                      # running peak 1.0 then 1.04
    annual = 1.01 ** (days_per_year / 4) - 1
    m = trade_metrics(TRADES, bars, size=1.0)
    assert daily_equity(TRADES, bars, size=1.0).tolist() == pytest.approx(daily, rel=1e-12)
    assert m["sharpe"] == pytest.approx(sharpe, rel=1e-12)
    assert m["sharpe"] == pytest.approx(1.161714, rel=1e-6)    # the same number, written out
    assert m["max_drawdown"] == pytest.approx(max_dd * 100, rel=1e-12)
    assert m["calmar"] == pytest.approx(annual / -max_dd, rel=1e-12)
    assert m["return_pct"] == pytest.approx(1.0, rel=1e-12)
    assert m["trades"] == 2 and m["win_rate"] == 50.0
    assert m["profit_factor"] == pytest.approx(0.04 / (3 / 104), rel=1e-12)


def test_the_scored_period_leaves_out_earlier_trades_and_values_a_trade_open_at_its_end():
    bars = four_days()
    later = trade_metrics(TRADES, bars, start="2024-01-02", size=1.0)
    assert later["trades"] == 1 and later["return_pct"] == pytest.approx(-300 / 104)
    cut = trade_metrics(TRADES, bars, end="2024-01-03 06:00", size=1.0)  # the short is open at 105
    assert cut["trades"] == 1
    assert cut["return_pct"] == pytest.approx((1.04 * (1 - 1 / 104) - 1) * 100)


def test_no_trades_gives_a_flat_equity_and_undefined_ratios():
    m = trade_metrics(TRADES.iloc[:0], four_days())
    assert m["trades"] == 0 and m["return_pct"] == 0.0 and m["max_drawdown"] == 0.0
    assert np.isnan(m["sharpe"]) and np.isnan(m["calmar"]) and np.isnan(m["win_rate"])


def test_overlapping_trades_are_refused_with_a_message():
    bad = TRADES.assign(EntryBar=[2, 5])
    with pytest.raises(ValueError, match="trades overlap"):
        trade_metrics(bad, four_days())


def test_labeled_pattern_rows_score_like_backtesting_py_trades():
    lab = pd.DataFrame({"fill_bar": [2.0, 8.0], "exit_bar": [6.0, 10.0], "fill_price": [100.0, 104.0],
                        "exit_price": [104.0, 107.0], "direction": [1, -1]})
    assert trade_metrics(lab, four_days()) == trade_metrics(TRADES, four_days())


@pytest.mark.parametrize("commission", [0.0, 0.001])
def test_equity_is_vectorbts_own_targetpercent_accounting(commission):
    """Random non-overlapping trades on real bars: account_nb equals Portfolio.from_orders' value."""
    df = load_ohlcv("BTCUSD_1h").iloc[:6000]
    rng = np.random.default_rng(7)
    bars = np.sort(rng.choice(np.arange(1, len(df) - 1), 80, replace=False))
    entry, exit_ = bars[0::2], bars[1::2]
    o = df["Open"].to_numpy()
    d = rng.choice([-1.0, 1.0], len(entry))
    size = np.full((len(df),), np.nan)
    price = np.full((len(df),), np.inf)
    size[entry], size[exit_] = d * 0.9999, 0.0
    price[entry], price[exit_] = o[entry], o[exit_]
    pf = vbt.Portfolio.from_orders(df["Close"], size, size_type="targetpercent", price=price, direction="both",
                                   fees=commission, init_cash=1.0, freq="1h")
    m = Market.of(df)
    ours = account_nb(m.close, m.day_end, entry.astype(np.int64), exit_.astype(np.int64), o[entry], o[exit_], d,
                      np.full(len(entry), 0.9999), commission, 1.0)
    np.testing.assert_allclose(ours, pf.value().to_numpy()[m.day_end], rtol=1e-11)
