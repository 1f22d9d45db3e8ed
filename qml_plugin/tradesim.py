"""Which labeled patterns a one-position-at-a-time strategy trades, and the table metrics of a run.

``QMLStrategy`` (backtesting.py) and the vectorbt engine follow one rule set: a pattern detected
at bar ``t`` is traded only when there is no open trade and no pending order; among patterns of one
bar the higher score wins, then the earlier ``p1_bar``; an unfilled limit order is cancelled at
bar ``t + max_wait`` and a new order may go out on that same bar; after an exit at bar ``x`` a
new order may go out at ``x``. Given the triple-barrier outcomes of every pattern
(:func:`qml_plugin.patterns.label_patterns`), the trades therefore follow without replaying bars:
:func:`select_trades` walks the *patterns* (not the bars) in one cached numba pass.

This is what makes an honest random-filter band cheap: 200 random subsets with the ML filter's pass
rate take about 0.5 s on EURUSD_1h's 1,909 patterns (the selection itself is the small part; most
is the metrics' calendar work), and a test checks that the selection equals backtesting.py's own trades.

:func:`trade_metrics` turns a list of trades into the comparison-table row (trades, win rate,
profit factor, return %, Sharpe, max drawdown) the same way for every row of the table, whether the
trades came from backtesting.py or from here. Return and drawdown compound each trade's return on
the whole equity (the strategy's default ``size``); Sharpe is the annualized mean / std of daily
closed-trade equity returns (sqrt(252)).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from numba import njit

__all__ = ["select_trades", "trade_selector", "trade_metrics", "equity_from_trades", "levels_placeable",
           "TABLE_COLUMNS"]

TABLE_COLUMNS = ["trades", "win_rate", "profit_factor", "return_pct", "sharpe", "max_drawdown"]


def levels_placeable(direction, entry, stop, target) -> np.ndarray:
    """Levels backtesting.py accepts for an order: stop < entry < target for a long, mirrored for a
    short. Every engine asks this one function, so they never disagree on what can be traded."""
    d = np.asarray(direction, dtype=np.float64)
    entry = np.asarray(entry, dtype=np.float64)
    return ((np.asarray(target, dtype=np.float64) - entry) * d > 0) & ((entry - np.asarray(stop, np.float64)) * d > 0)


@njit(cache=True)
def _select(order, t, take, fill_bar, exit_bar, max_wait, big):
    chosen = np.zeros(t.shape[0], np.bool_)
    free_from = 0
    for k in order:
        if not take[k] or t[k] < free_from:
            continue
        chosen[k] = True
        if fill_bar[k] >= 0:
            free_from = exit_bar[k] if exit_bar[k] >= 0 else big
        else:
            free_from = t[k] + max_wait
    return chosen


def select_trades(labeled: pd.DataFrame, take, score=None, max_wait: int = 20) -> np.ndarray:
    """Boolean mask of the patterns a one-position strategy places an order for.

    ``labeled`` is :func:`label_patterns` output; ``take`` the per-pattern decision (already
    including "levels are placeable"); ``score`` ranks patterns of the same bar (default
    ``validity_score``). Orders that expire are in the mask too; trades are the filled ones.
    """
    return trade_selector(labeled, score, max_wait)(take)


def trade_selector(labeled: pd.DataFrame, score=None, max_wait: int = 20) -> Callable[[Any], np.ndarray]:
    """:func:`select_trades` with everything but ``take`` prepared once: ``selector(take) -> mask``.

    For many decisions over the same patterns (the random-filter band's 200 seeds): the bars and
    the per-bar order are built once, and each call is only the numba walk.
    """
    score = labeled["validity_score"].to_numpy(float) if score is None else np.asarray(score, float)
    fill = labeled["fill_bar"].fillna(-1).to_numpy(np.int64)
    exit_ = labeled["exit_bar"].fillna(-1).to_numpy(np.int64)
    t = labeled["detection_bar"].to_numpy(np.int64)
    order = np.lexsort((labeled["p1_bar"].to_numpy(np.int64), -np.nan_to_num(score, nan=-np.inf), t))
    never = np.iinfo(np.int64).max

    def select(take) -> np.ndarray:
        return _select(order, t, np.asarray(take, dtype=bool), fill, exit_, int(max_wait), never)

    return select


def trade_metrics(return_pct, exit_times, start=None, end=None) -> dict:
    """Table metrics of closed trades: ``return_pct`` in percent (1.5 = +1.5 %), with their exit times."""
    r = np.asarray(return_pct, dtype=float) / 100.0
    times = pd.DatetimeIndex(exit_times)
    ok = ~np.isnan(r)
    r, times = r[ok], times[ok]
    n = len(r)
    if n == 0:
        return dict(trades=0, win_rate=np.nan, profit_factor=np.nan, return_pct=0.0, sharpe=np.nan,
                    max_drawdown=0.0)
    order = np.argsort(times.as_unit("ns").asi8, kind="stable")
    r, times = r[order], times[order]
    equity = np.cumprod(1.0 + r)
    gains, losses = r[r > 0].sum(), -r[r < 0].sum()
    peak = np.maximum.accumulate(np.r_[1.0, equity])
    dd = (np.r_[1.0, equity] / peak - 1.0).min()
    daily = pd.Series(equity, index=times).groupby(times.normalize()).last()
    lo = pd.Timestamp(start).normalize() if start is not None else daily.index[0]
    hi = pd.Timestamp(end).normalize() if end is not None else daily.index[-1]
    days = pd.date_range(min(lo, daily.index[0]), max(hi, daily.index[-1]), freq="B")
    curve = daily.reindex(days.union(daily.index)).ffill().fillna(1.0)
    rets = curve.pct_change().dropna()
    sd = rets.std()
    sharpe = float(rets.mean() / sd * np.sqrt(252)) if sd > 0 else np.nan
    return dict(trades=int(n), win_rate=float((r > 0).mean() * 100), profit_factor=float(gains / losses) if losses > 0
                else np.inf if gains > 0 else np.nan, return_pct=float((equity[-1] - 1) * 100), sharpe=sharpe,
                max_drawdown=float(dd * 100))


def equity_from_trades(return_pct, exit_times) -> pd.Series:
    """Closed-trade equity curve (1.0 at start) from trade returns in percent and their exit times."""
    r = np.asarray(return_pct, float) / 100.0
    t = pd.DatetimeIndex(exit_times)
    order = np.argsort(t.as_unit("ns").asi8, kind="stable")
    return pd.Series(np.cumprod(1.0 + r[order]), index=t[order])
