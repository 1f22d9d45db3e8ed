"""The kill switch (``ml.kill_switch``, SPEC §13): the ML filter turns itself off inside a backtest.

Seed 004: "auto-disable ML after 3 consecutive losses, or a drawdown over 10 %". The switch watches
the trades the backtest has **closed so far** and nothing else, so at bar ``t`` it uses only what
was known at ``t``:

* **consecutive losses**: a closed trade with ``pl < 0`` (net of commissions, backtesting.py's
  ``Trade.pl``) adds one to the run of losses; any other closed trade (``pl >= 0``) resets it. The
  switch trips at the closed trade that makes the run ``consecutive_losses`` long.
* **closed-trade drawdown**: the closed-trade equity after ``k`` closed trades is
  ``E_k = cash + sum(pl of the first k closed trades)``: the starting cash plus realized PnL,
  never the PnL of a trade still open. Its peak is ``P_k = max(cash, E_1, ..., E_k)`` and its
  drawdown ``100 * (P_k - E_k) / P_k`` percent. The switch trips at the first closed trade whose
  drawdown **exceeds** ``max_drawdown_pct``.

**Armed from the first scored pattern.** Before the first bar on which a model scored a pattern
(a walk-forward run's first model), every mode is the technical rule and there is no ML to
switch off: the trades closed from that bar on count. Those closed before it enter the closed-trade
equity (and its peak), not the run of losses. That split is by exit bar, not by position in
``closed_trades``: with ``trade_on_close`` a market order filled on a broker step gets the previous bar as
its exit bar and may close after a stop that hit on the current bar, so the list is not in exit-bar order.

Trades are taken in the order backtesting.py closed them (``self.closed_trades``). The check runs
at the start of every ``next()``, before the strategy's own code, so a trade closed during bar
``t`` trips the switch at bar ``t`` and the orders placed at ``t`` already follow the new rule.
Each closed trade is looked at once: no re-scan of past trades in Python.

**Per-bar cost: read ``closed_trades`` only when a trade may have closed.** ``closed_trades`` is
backtesting.py's tuple copy of its list, a copy that grows with the trades closed so far (about
1 us at 100 closed trades, 13 us at 2,800), and backtesting.py exposes no cheaper count (its
private ``_broker`` is not read). But no trade closes without an order executing: a stop-loss or
take-profit is an order of its trade, ``trade.close()`` / ``position.close()`` place one, and a new
order that reverses a position is one; the broker removes each order it executes (the only other
close, a margin call at zero equity, ends the backtest). So the bar hook keeps the strategy's
``orders`` (a tuple of a few) as they stand when ``next()`` returns (:func:`remember`), and at the
next bar, if the very same order objects are still pending and nothing else, no order executed,
no trade closed, and ``closed_trades`` is not read. Any change (a fill, a cancel, a new stop)
falls through to the full check: a false alarm costs one read, a missed close is impossible.
Keeping the orders costs about 0.4 us per bar, so the guard starts once ``GUARD_FROM`` closed trades
have been seen (below that the copy is cheaper: 0.3 us at 118 closed trades, 5-13 us at 2,834).
``benchmarks/bench_kill_switch.py`` times both paths in one run (``KillSwitchState.guard_from``).

Once tripped (``action``):

* ``baseline``: the technical rule trades from then on (ML off; no sizing bands);
* ``halt``: no new orders (orders already placed, and the stops and targets of open trades, stay).

The trip is kept on the strategy, ``stats._strategy.ml_kill_switch`` (None while it has not
tripped): ``{"bar", "time", "reason", "action", "trigger", "closed_trades", "consecutive_losses",
"drawdown_pct", "closed_trade_equity"}``, and a warning says so. The switch is armed only while
the ML filter acts (a model scored the patterns); with ML off there is nothing to switch off.
"""
from __future__ import annotations

import warnings

from backtesting.backtesting import Order

NOT_ARMED = 2**62
"""``armed_from`` while no model has scored a pattern yet (a bar index no backtest reaches)."""

GUARD_FROM = 256
"""Closed trades seen from which the per-bar guard is on (the module docstring: below, reading is cheaper)."""


class KillSwitchState:
    """The running count of losses and the closed-trade equity of one backtest (see the module doc)."""

    guard_from = GUARD_FROM
    """From this many closed trades seen, skip reading ``closed_trades`` while the orders are those
    :func:`remember` kept (``NOT_ARMED``: never; 0: from the start)."""

    def __init__(self, spec, cash: float, *, armed_from: int | None = 0) -> None:
        # the first bar a model scored a pattern on; not yet known: beyond any bar
        self.armed_from = armed_from if armed_from is not None else NOT_ARMED
        self.started = False
        self.consecutive_losses = spec.consecutive_losses
        self.max_drawdown_pct = spec.max_drawdown_pct
        self.action = spec.action
        self.seen = 0               # closed trades already looked at (``closed_trades[:seen]``)
        self.streak = 0
        self.equity = float(cash)
        self.peak = float(cash)
        self.trip: dict | None = None
        self.orders_after: tuple | None = None   # the strategy's orders when its last next() returned
        self.reads = 0                           # bars on which closed_trades was read (the guard let it through)

    def feed(self, pl: float) -> dict | None:
        """Take the next closed trade's net PnL; return the trip (without bar and time) if it trips here."""
        pl = float(pl)
        self.seen += 1
        self.streak = self.streak + 1 if pl < 0 else 0
        self.equity += pl
        self.peak = max(self.peak, self.equity)
        dd = 100.0 * (self.peak - self.equity) / self.peak if self.peak > 0 else 0.0
        reasons, trigger = [], []
        if self.consecutive_losses is not None and self.streak >= self.consecutive_losses:
            reasons.append(f"{self.streak} consecutive losing trades (limit {self.consecutive_losses})")
            trigger.append("consecutive_losses")
        if self.max_drawdown_pct is not None and dd > self.max_drawdown_pct:
            reasons.append(f"closed-trade drawdown {dd:.2f}% > {self.max_drawdown_pct:g}%")
            trigger.append("max_drawdown_pct")
        if not reasons:
            return None
        return {"reason": " and ".join(reasons), "action": self.action, "trigger": "+".join(trigger),
                "closed_trades": self.seen, "consecutive_losses": self.streak, "drawdown_pct": float(dd),
                "closed_trade_equity": self.equity}


def remember(strategy, state: KillSwitchState) -> None:
    """Called by the bar hook when ``next()`` returns, from ``guard_from`` closed trades on: keep the pending
    orders. (Once it is called it is called on every bar: ``seen`` only grows.)"""
    state.orders_after = strategy.orders


def _same_objects(now: tuple, before: tuple) -> bool:
    return len(now) == len(before) and all(a is b for a, b in zip(now, before, strict=True))


# The very same order objects? backtesting.py's Order defines no __eq__, so tuple equality is identity
# (CPython's C-level compare, ~0.05 us); should a version compare orders by value, compare identities.
_unchanged = tuple.__eq__ if Order.__eq__ is object.__eq__ else _same_objects


def check(strategy, state: KillSwitchState, bar: int) -> dict | None:
    """At ``bar``, feed the trades closed since the last call; on a trip return the full record (bar and time added).

    While the pending orders are those :func:`remember` kept (no order executed, so no trade closed),
    ``closed_trades`` is not read (the module docstring)."""
    if bar < state.armed_from:
        return None
    if state.started and state.orders_after is not None and _unchanged(strategy.orders, state.orders_after):
        return None
    state.reads += 1
    closed = strategy.closed_trades
    fresh = closed[state.seen:]
    if not state.started:        # arming: trades closed before it count in the equity, not in the run of losses
        state.started = True
        # closing order is not exit-bar order: with trade_on_close a market order filled on this broker step
        # has the previous bar as exit bar and may close after a stop that hit on this bar; split by exit bar
        before = [t.exit_bar < state.armed_from for t in closed]
        state.equity += float(sum(t.pl for t, b in zip(closed, before, strict=True) if b))
        state.peak = max(state.peak, state.equity)
        fresh = [t for t, b in zip(closed, before, strict=True) if not b]
        state.seen = len(closed) - len(fresh)  # feed() counts the fresh ones on: seen ends at len(closed)
    if not fresh:
        return None
    for trade in fresh:
        trip = state.feed(trade.pl)
        if trip is not None:
            now = strategy._bar_times[bar]
            state.trip = {"bar": bar, "time": now, **trip}
            warnings.warn(f"ml.kill_switch tripped at {now} (bar {bar}): {trip['reason']}; action "
                          f"{state.action}: " + ("the technical rule trades from now on" if state.action == "baseline"
                                                 else "no new orders from now on"), stacklevel=4)
            return state.trip
    return None
