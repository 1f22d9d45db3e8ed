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
    With ``trade_on_close=True`` it is not: on one broker step a stop-loss fills first (exit bar = the current
    bar; it is first in the queue) and a new market order placed the bar before, which closes the other open
    trade (no hedging), after it (exit bar = the *previous* bar: it fills at the previous close). Arming on that bar must still count each closed trade
    exactly once: the closed-trade equity equals cash + the sum of every closed trade's PnL, and the stopped-out
    trade (closed on the armed bar) counts in the run of losses."""
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
