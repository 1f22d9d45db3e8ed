"""Review of session 5's merged changes: each test demonstrates one defect found (and, where fixed, guards the fix).

Real backtesting.py runs on small synthetic bars (a few hundred, built so the event under test happens on a
known bar); no mocks.
"""
from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pandas as pd
from backtesting import Backtest, Strategy

from qml_plugin.mixins import _kill


def _flat_bars(n: int, dip_at: int) -> pd.DataFrame:
    """Flat bars at 100 (range 99.5-100.5), one bar whose low dips to 90 at ``dip_at``."""
    idx = pd.date_range("2021-01-04", periods=n, freq="h")
    df = pd.DataFrame({"Open": 100.0, "High": 100.5, "Low": 99.5, "Close": 100.0, "Volume": 1.0}, index=idx)
    df.iloc[dip_at, df.columns.get_loc("Low")] = 90.0
    return df


def test_kill_switch_arming_counts_each_trade_once_when_closing_order_differs_from_exit_bars():
    """Arming (``_kill.check``'s first call) splits ``closed_trades`` into "closed before the first scored
    bar" (equity only) and "closed from it on" (fed one by one), assuming the list is in exit-bar order.
    With ``trade_on_close=True`` it is not: on one broker step a stop-loss fills first (exit bar = the
    current bar; it is first in the queue) and a new market order placed the bar before, which closes the
    other open trade (no hedging), after it (exit bar = the *previous* bar: it fills at the previous close).
    Arming on that bar must still count each closed trade exactly once: the closed-trade equity equals
    cash + the sum of every closed trade's PnL, and the stopped-out trade (closed on the armed bar) counts
    in the run of losses."""
    armed = 20
    records = {}

    class TwoTrades(Strategy):
        def init(self):
            spec = SimpleNamespace(consecutive_losses=1, max_drawdown_pct=None, action="halt")
            self.kill = _kill.KillSwitchState(spec, 1_000_000.0, armed_from=armed)
            self._bar_times = self.data.index
            self.placed = False

        def next(self):
            bar = len(self.data) - 1
            if bar >= armed:
                trip = _kill.check(self, self.kill, bar)
                if bar == armed:
                    records["trip"] = trip
                    records["closed"] = [(t.exit_bar, t.pl) for t in self.closed_trades]
                    records["equity"] = self.kill.equity
                    records["fed"] = self.kill.seen
            if bar == 5:
                self.buy(size=10, sl=95.0)         # T1: stopped out by the dip at bar `armed`
            elif bar == 6:
                self.buy(size=10)                  # T2: no stop
            elif bar == armed - 1:
                self.sell(size=10)                 # closes T2 (FIFO, T1 stopped first) at this bar's close

    df = _flat_bars(40, dip_at=armed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Backtest(df, TwoTrades, cash=1_000_000, trade_on_close=True).run()
    closed = records["closed"]
    # the setting this test needs: both trades closed on the broker step of bar `armed`, stop first
    assert [b for b, _ in closed] == [armed, armed - 1], closed
    want = 1_000_000.0 + sum(pl for _, pl in closed)
    assert abs(records["equity"] - want) < 1e-6, (records["equity"], want, closed)
    assert records["fed"] == len(closed)
    # T1, stopped out at a loss on the first armed bar, is a losing trade closed after arming: with
    # consecutive_losses = 1 the switch trips there (T2, closed the bar before, enters the equity only)
    assert records["trip"] is not None and records["trip"]["bar"] == armed, records["trip"]


class _RandomOrders(Strategy):
    """Random market / limit / stop orders with stops and targets, partial and full closes, cancels and moved
    stops; at every bar the kill switch's check runs first (its guard on from the first closed trade) and the
    test records any bar where the trades it has counted differ from backtesting.py's ``closed_trades``."""

    seed = 0
    misses: list = []

    def init(self):
        self.rng = np.random.default_rng(self.seed)
        spec = SimpleNamespace(consecutive_losses=None, max_drawdown_pct=None, action="halt")
        self.kill = _kill.KillSwitchState(spec, 1_000_000.0, armed_from=0)
        self.kill.guard_from = 0
        self._bar_times = self.data.index

    def next(self):
        bar = len(self.data) - 1
        _kill.check(self, self.kill, bar)
        if self.kill.seen != len(self.closed_trades):
            self.misses.append((bar, self.kill.seen, len(self.closed_trades)))
            self.kill.seen = len(self.closed_trades)
        r, c = self.rng.random(), self.data.Close[-1]
        size = float(self.rng.choice([0.1, 0.3, 5, 20]))
        if r < 0.15:
            self.buy(size=size, sl=c * 0.99 if r < 0.07 else None, tp=c * 1.01 if r > 0.1 else None)
        elif r < 0.30:
            self.sell(size=size, sl=c * 1.01 if r < 0.22 else None, tp=c * 0.99 if r > 0.25 else None)
        elif r < 0.38:
            self.buy(size=5, limit=c * 0.998, sl=c * 0.99)
        elif r < 0.46:
            self.sell(size=5, stop=c * 0.998, tp=c * 0.99)
        elif r < 0.52 and self.trades:
            self.trades[int(self.rng.integers(len(self.trades)))].close(0.5 if r < 0.49 else 1.0)
        elif r < 0.55:
            self.position.close()
        elif r < 0.60 and self.orders:
            self.orders[int(self.rng.integers(len(self.orders)))].cancel()
        elif r < 0.65 and self.trades:
            t = self.trades[0]
            t.sl = c * (0.995 if t.is_long else 1.005)
        _kill.remember(self, self.kill)


def test_the_kill_switch_guard_sees_every_close_under_every_backtest_option():
    """``_kill``'s per-bar guard skips ``closed_trades`` while the pending orders are the very ones ``next()``
    left. backtesting.py closes a trade only when an order executes (stop, target, ``close()``, a reversing or
    FIFO-closing order, ``exclusive_orders``' closes) or at a margin call (which ends the run) or at
    ``finalize_trades`` (after the last ``next()``). Random orders under each combination of ``hedging``,
    ``exclusive_orders`` and ``trade_on_close``, with 20x leverage (margin calls happen): no close is missed."""
    rng = np.random.default_rng(0)
    n = 400
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[close[0], close[:-1]] * (1 + rng.normal(0, 0.002, n))
    df = pd.DataFrame({"Open": open_, "Close": close, "Volume": 1.0,
                       "High": np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.004, n))),
                       "Low": np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.004, n)))},
                      index=pd.date_range("2020-01-01", periods=n, freq="h"))
    closed = 0
    _RandomOrders.misses = []
    for seed, hedging, exclusive, on_close in ((s, h, e, t) for s in (0,) for h in (False, True)
                                               for e in (False, True) for t in (False, True)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stats = Backtest(df, _RandomOrders, cash=1_000_000, hedging=hedging, exclusive_orders=exclusive,
                             trade_on_close=on_close, margin=0.05, finalize_trades=True).run(seed=seed)
        closed += len(stats._trades)
    assert closed > 1000 and _RandomOrders.misses == []
