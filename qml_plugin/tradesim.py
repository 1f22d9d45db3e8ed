"""Trades without bars: which patterns a one-position strategy trades, and the ONE way a run is scored.

**Selection.** ``QMLStrategy`` (backtesting.py) and the vectorbt engine follow one rule set: a pattern
detected at bar ``t`` is traded only when there is no open trade and no pending order; among patterns
of one bar the higher score wins, then the earlier ``p1_bar``; an unfilled limit order is cancelled at
bar ``t + max_wait`` and a new order may go out on that same bar; after an exit at bar ``x`` a new
order may go out at ``x``. Given the triple-barrier outcomes of every pattern
(:func:`qml_plugin.patterns.label_patterns`), the trades follow without replaying bars:
:func:`select_trades` walks the *patterns* in one cached numba pass.

**Scoring: one definition for every number** (the sweep, ``qml optimize``, the ``qml run`` table, the
random-filter band). A run is judged on its **daily mark-to-market equity**: the equity (cash plus the
open position valued at the close) at the last bar of every calendar day on which the market has bars,
so BTC's weekends count and an equity's do not. From that series, and nothing else:

- ``sharpe`` = mean / standard deviation (ddof 1) of the daily returns, times ``sqrt(days_per_year)``,
  where ``days_per_year`` is the number of such days per calendar year in the data (about 260 for FX
  and stocks' 24x5 / 5-day weeks, 365 for BTC). The first day's return is measured from the starting
  equity. NaN with fewer than two days or a flat equity;
- ``max_drawdown`` = deepest fall (percent, <= 0) of the daily equity below its running peak, the
  starting equity included;
- ``total_return`` (``return_pct`` in the run table) = percent change from the starting equity to the
  last bar's equity;
- ``calmar`` = annualized return / |max drawdown|, annualized return =
  ``(final / start) ** (days_per_year / n_days) - 1`` (the seeds' ``calmar_ratio``); inf for a gain
  without a drawdown, NaN for neither.

Trade statistics come from the trades themselves: ``win_rate`` (% of closed trades with a return > 0),
``profit_factor`` (sum of winning trade returns / |sum of losing ones|; inf without a loss), the
trade return being ``(direction * (exit - entry) - fee * (entry + exit)) / (entry * (1 + fee))``
(backtesting.py's ``ReturnPct`` at commission 0). A trade still open at the end is valued in the
equity, not counted.

The equity is vectorbt's own accounting, written out once (:func:`account_nb`): each trade buys (or
sells short) ``size`` of the equity at its entry price in fractional units, pays ``fee`` of each
order's value, and is closed in full at its exit price. ``vectorbt.Portfolio.from_orders`` with
``size_type="targetpercent"`` gives the same equity to rounding, which
:func:`qml_plugin.vbt.sweep` checks for its top rows. backtesting.py buys whole units, so its own
``Equity`` differs slightly; the table scores every row, backtesting.py's trades included, with this
equity, never with an engine's own statistics.

The kernels are plain ``@njit(cache=True)`` functions on arrays, so compiled code elsewhere (the
sweep's event-level fast path) calls the very same definition.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numba import njit

__all__ = ["select_trades", "trade_selector", "levels_placeable", "trade_metrics", "daily_equity", "Market",
           "equity_stats_nb", "account_nb", "trade_stats_nb", "TABLE_COLUMNS", "FULL_SIZE"]

TABLE_COLUMNS = ["trades", "win_rate", "profit_factor", "return_pct", "sharpe", "calmar", "max_drawdown"]
"""Keys of :func:`trade_metrics`, the columns of the ``qml run`` comparison table."""

FULL_SIZE = 0.9999
"""Fraction of equity per trade without ML sizing (backtesting.py's ``buy()`` default ``size``)."""

_NS_PER_DAY = 86_400 * 10**9


def levels_placeable(direction, entry, stop, target) -> np.ndarray:
    """Levels backtesting.py accepts for an order: stop < entry < target for a long, mirrored for a
    short. Every engine asks this one function, so they never disagree on what can be traded."""
    d = np.asarray(direction, dtype=np.float64)
    entry = np.asarray(entry, dtype=np.float64)
    return ((np.asarray(target, dtype=np.float64) - entry) * d > 0) & ((entry - np.asarray(stop, np.float64)) * d > 0)


@njit(cache=True)
def select_nb(order, t, take, fill_bar, exit_bar, max_wait, big):
    """The one-position walk over patterns in ``order`` (see the module docstring); a boolean mask."""
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


def selection_order(detection_bar, score, p1_bar) -> np.ndarray:
    """Order in which the walk visits patterns: by bar, higher score first, then earlier ``p1_bar``."""
    score = np.asarray(score, float)
    return np.lexsort((np.asarray(p1_bar, np.int64), -np.nan_to_num(score, nan=-np.inf),
                       np.asarray(detection_bar, np.int64)))


def trade_selector(labeled: pd.DataFrame, score=None, max_wait: int = 20) -> Callable[[Any], np.ndarray]:
    """:func:`select_trades` with everything but ``take`` prepared once: ``selector(take) -> mask``.

    For many decisions over the same patterns (the random-filter band's 200 seeds): the bars and
    the per-bar order are built once, and each call is only the numba walk.
    """
    score = labeled["validity_score"].to_numpy(float) if score is None else np.asarray(score, float)
    fill = labeled["fill_bar"].fillna(-1).to_numpy(np.int64)
    exit_ = labeled["exit_bar"].fillna(-1).to_numpy(np.int64)
    t = labeled["detection_bar"].to_numpy(np.int64)
    order = selection_order(t, score, labeled["p1_bar"].to_numpy(np.int64))
    never = np.iinfo(np.int64).max

    def select(take) -> np.ndarray:
        return select_nb(order, t, np.asarray(take, dtype=bool), fill, exit_, int(max_wait), never)

    return select


# ------------------------------------------------------------------------------------------ the kernels
@njit(cache=True)
def account_nb(close, sample, entry_bar, exit_bar, entry_price, exit_price, direction, size, fee, init):
    """Mark-to-market equity at the bars ``sample`` (ascending) of non-overlapping trades in entry order.

    vectorbt's ``targetpercent`` accounting, step for step (same operations, same order): units =
    ``size * direction * equity / entry_price``; a buy pays ``units * price * (1 + fee)`` (capped at
    the cash, as vectorbt's partial fill does), a sell receives ``units * price * (1 - fee)``;
    ``exit_bar < 0`` = still open. Equity = cash + units * close.
    """
    out = np.empty(sample.shape[0])
    cash = init
    pos = 0.0
    k = 0
    held = False
    m = entry_bar.shape[0]
    for s in range(sample.shape[0]):
        b = sample[s]
        while True:
            if held:
                if exit_bar[k] < 0 or exit_bar[k] > b:
                    break
                px = exit_price[k]
                if pos > 0:
                    acq = pos * px
                    cash = cash + (acq - acq * fee)
                else:
                    req = -pos * px
                    cash = cash - (req + req * fee)
                pos = 0.0
                held = False
                k += 1
            else:
                if k >= m or entry_bar[k] > b:
                    break
                p = entry_price[k]
                u = size[k] * direction[k]
                u *= cash
                u /= p
                if u > 0:
                    req = u * p
                    total = req + req * fee
                    if total <= cash * (1 + 1e-9):
                        cash = cash - total
                    else:  # not enough cash for the fee on top: vectorbt fills what the cash buys
                        u = cash / (1 + fee) / p
                        cash = 0.0
                else:
                    acq = -u * p
                    cash = cash + (acq - acq * fee)
                pos = u
                held = True
        out[s] = cash + pos * close[b]
    return out


@njit(cache=True)
def equity_stats_nb(daily, init, days_per_year):
    """THE score of a daily equity: ``(total_return %, sharpe, calmar, max_drawdown %, sr, skew, kurt, n)``.

    ``sr`` is the per-day Sharpe (mean / std, not annualized), ``skew`` and ``kurt`` (not excess:
    3 for a normal) are the daily returns' biased moments, ``n`` the number of daily returns; the
    last four feed the deflated Sharpe ratio.
    """
    n = daily.shape[0]
    nan = np.nan
    if n == 0:
        return 0.0, nan, nan, 0.0, nan, nan, nan, 0
    total = (daily[n - 1] / init - 1.0) * 100.0
    peak = init
    dd = 0.0
    prev = init
    s1 = 0.0
    r = np.empty(n)
    for i in range(n):
        v = daily[i]
        r[i] = v / prev - 1.0
        prev = v
        s1 += r[i]
        if v > peak:
            peak = v
        d = v / peak - 1.0
        if d < dd:
            dd = d
    mean = s1 / n
    m2 = 0.0
    m3 = 0.0
    m4 = 0.0
    for i in range(n):
        x = r[i] - mean
        m2 += x * x
        m3 += x * x * x
        m4 += x * x * x * x
    sharpe = nan
    sr = nan
    skew = nan
    kurt = nan
    if n >= 2 and m2 > 0:
        sd = np.sqrt(m2 / (n - 1))
        sr = mean / sd
        sharpe = sr * np.sqrt(days_per_year)
        v2 = m2 / n
        skew = (m3 / n) / v2 ** 1.5
        kurt = (m4 / n) / (v2 * v2)
    growth = daily[n - 1] / init
    ann = growth ** (days_per_year / n) - 1.0 if growth > 0 else -1.0
    if dd < 0:
        calmar = ann / -dd
    elif ann > 0:
        calmar = np.inf
    else:
        calmar = nan
    return total, sharpe, calmar, dd * 100.0, sr, skew, kurt, n


@njit(cache=True)
def trade_stats_nb(entry_price, exit_price, direction, fee):
    """``(closed trades, win_rate %, profit_factor)`` from trade prices; NaN exit = open, not counted."""
    n = 0
    wins = 0
    gain = 0.0
    loss = 0.0
    for k in range(entry_price.shape[0]):
        px = exit_price[k]
        if np.isnan(px):
            continue
        p = entry_price[k]
        r = (direction[k] * (px - p) - fee * (p + px)) / (p * (1.0 + fee))
        n += 1
        if r > 0:
            wins += 1
            gain += r
        elif r < 0:
            loss -= r
    if n == 0:
        return 0, np.nan, np.nan
    pf = gain / loss if loss > 0 else (np.inf if gain > 0 else np.nan)
    return n, wins / n * 100.0, pf


# ----------------------------------------------------------------------------------- the pandas surface
@dataclass(frozen=True)
class Market:
    """A market's bars as the scorer needs them: closes, the last bar of each calendar day, days per year.

    Build it once per series (``Market.of(ohlcv)``) when scoring many trade lists on it (the
    random-filter band, a sweep); :func:`trade_metrics` also accepts the frame itself.

        >>> idx = pd.date_range("2024-01-01", periods=72, freq="h")        # three days of hourly bars
        >>> m = Market.of(pd.DataFrame({"Close": np.ones(72)}, index=idx))
        >>> m.day_end.tolist(), m.days_per_year
        ([23, 47, 71], 365.25)
    """

    index: pd.DatetimeIndex
    close: np.ndarray
    day_end: np.ndarray
    days_per_year: float

    @classmethod
    def of(cls, ohlcv: pd.DataFrame | Market) -> Market:
        """The :class:`Market` of a frame with a ``Close`` column and a DatetimeIndex (a Market as is)."""
        if isinstance(ohlcv, Market):
            return ohlcv
        index = pd.DatetimeIndex(ohlcv.index)
        wall = index.tz_localize(None) if index.tz is not None else index   # the market's own calendar days
        day = wall.as_unit("ns").asi8 // _NS_PER_DAY
        if len(day) == 0:
            return cls(index, np.empty(0), np.empty(0, np.int64), float("nan"))
        day_end = np.flatnonzero(np.r_[day[1:] != day[:-1], True]).astype(np.int64)
        years = (day[-1] - day[0] + 1) / 365.25
        return cls(index, ohlcv["Close"].to_numpy(np.float64), day_end, float(len(day_end) / years))

    def sample_bars(self, first: int, last: int) -> np.ndarray:
        """The day-end bars within bars ``first .. last``, with ``last`` always the final sample."""
        de = self.day_end
        inner = de[(de >= first) & (de < last)]
        return np.r_[inner, last].astype(np.int64)

    def bar_range(self, start=None, end=None) -> tuple[int, int]:
        """First and last bar inside ``[start, end]`` (timestamps; None = the ends of the data)."""
        n = len(self.index)
        first = 0 if start is None else int(self.index.searchsorted(pd.Timestamp(start), side="left"))
        last = n - 1 if end is None else int(self.index.searchsorted(pd.Timestamp(end), side="right")) - 1
        return first, last


def _trade_arrays(trades: pd.DataFrame, market: Market, size=FULL_SIZE) -> tuple[np.ndarray, ...]:
    """Entry bar, exit bar (-1 open), entry price, exit price (NaN open), direction, size of a trade frame.

    Accepts backtesting.py's ``stats._trades`` (``EntryBar, ExitBar, EntryPrice, ExitPrice, Size``) or
    labeled patterns (``fill_bar, exit_bar, fill_price, exit_price, direction``). ``size`` (one number, or
    one per row of ``trades``) is sorted with the rows, so a row keeps its own size in any row order.
    """
    if "EntryBar" in trades.columns:
        eb, xb = trades["EntryBar"], trades["ExitBar"]
        ep, xp = trades["EntryPrice"], trades["ExitPrice"]
        d = np.sign(trades["Size"].to_numpy(float))
    elif "fill_bar" in trades.columns:
        eb, xb, ep, xp = trades["fill_bar"], trades["exit_bar"], trades["fill_price"], trades["exit_price"]
        d = trades["direction"].to_numpy(float)
    else:
        raise ValueError("trades need EntryBar/ExitBar/EntryPrice/ExitPrice/Size (backtesting.py) or "
                         f"fill_bar/exit_bar/fill_price/exit_price/direction (labeled patterns); got {list(trades)}")
    eb = eb.to_numpy(float)
    xb = xb.to_numpy(float)
    ok = ~np.isnan(eb)
    order = np.argsort(eb[ok], kind="stable")
    sz = np.broadcast_to(np.asarray(size, dtype=float), ok.shape)[ok][order]   # one per row: follows its row
    eb, xb, ep, xp, d = eb[ok][order], xb[ok][order], ep.to_numpy(float)[ok][order], xp.to_numpy(float)[ok][order], \
        d[ok][order]
    if len(eb) and (eb.min() < 0 or eb.max() >= len(market.index)):
        raise ValueError(f"trade bars out of range 0..{len(market.index) - 1}: trades from another frame?")
    if len(eb) > 1 and (eb[1:] < np.where(np.isnan(xb[:-1]), np.inf, xb[:-1])).any():
        raise ValueError("trades overlap: the scorer holds one position at a time (one trade's entry before "
                         "the previous trade's exit)")
    return eb.astype(np.int64), np.where(np.isnan(xb), -1, xb).astype(np.int64), ep, xp, d, sz


def _scored(trades: pd.DataFrame, market: Market, start, end, commission: float, size):
    first, last = market.bar_range(start, end)
    if last < first:
        raise ValueError(f"no bars between start={start} and end={end}")
    eb, xb, ep, xp, d, sz = _trade_arrays(trades, market, size)   # size: one number, or one per row of trades
    keep = (eb >= first) & (eb <= last)
    eb, xb, ep, xp, d, sz = eb[keep], xb[keep], ep[keep], xp[keep], d[keep], np.ascontiguousarray(sz[keep])
    beyond = xb > last                            # exits after the period: still open at its end
    xb, xp = np.where(beyond, -1, xb), np.where(beyond, np.nan, xp)
    sample = market.sample_bars(first, last)
    eq = account_nb(market.close, sample, eb, xb, ep, xp, d, sz, float(commission), 1.0)
    return sample, eq, ep, xp, d


def trade_metrics(trades: pd.DataFrame, ohlcv: pd.DataFrame | Market, *, start=None, end=None,
                  commission: float = 0.0, size: float | np.ndarray = FULL_SIZE) -> dict:
    """The comparison-table row of a trade list, scored on daily mark-to-market equity (module docstring).

    ``trades``: backtesting.py's ``stats._trades`` or labeled patterns (one position at a time, bars
    of ``ohlcv``); ``start`` / ``end`` limit the scored period (trades entered before ``start`` are
    left out, one still open at ``end`` is valued there); ``commission`` is a fraction of each
    order's value; ``size`` the fraction of equity each trade takes (one number, or one per row of
    ``trades``, e.g. sizing bands).

        >>> idx = pd.date_range("2024-01-01", periods=48, freq="h")
        >>> bars = pd.DataFrame({"Close": np.r_[np.full(24, 100.0), np.full(24, 110.0)]}, index=idx)
        >>> t = pd.DataFrame({"EntryBar": [2], "ExitBar": [30], "EntryPrice": [100.0], "ExitPrice": [110.0],
        ...                   "Size": [1.0]})
        >>> m = trade_metrics(t, bars, size=1.0)
        >>> m["trades"], m["win_rate"], round(m["return_pct"], 6), m["max_drawdown"]
        (1, 100.0, 10.0, 0.0)
    """
    market = Market.of(ohlcv)
    _, eq, ep, xp, d = _scored(trades, market, start, end, commission, size)
    total, sharpe, calmar, dd, *_ = equity_stats_nb(eq, 1.0, market.days_per_year)
    n, win, pf = trade_stats_nb(ep, xp, d, float(commission))
    return dict(trades=int(n), win_rate=float(win), profit_factor=float(pf), return_pct=float(total),
                sharpe=float(sharpe), calmar=float(calmar), max_drawdown=float(dd))


def daily_equity(trades: pd.DataFrame, ohlcv: pd.DataFrame | Market, *, start=None, end=None,
                 commission: float = 0.0, size: float | np.ndarray = FULL_SIZE) -> pd.Series:
    """The daily mark-to-market equity (1.0 at the start) that :func:`trade_metrics` scores, by day-end time."""
    market = Market.of(ohlcv)
    sample, eq, *_ = _scored(trades, market, start, end, commission, size)
    return pd.Series(eq, index=market.index[sample], name="equity")
