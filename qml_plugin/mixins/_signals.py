"""The plumbing both mixins share: hooks on ``init()`` / ``next()``, one ``buy``/``sell``, the order record.

* **Hooks.** Every ``init()`` and ``next()`` a subclass defines is wrapped on the class (never with
  a closure on the instance, so strategies stay picklable for ``Backtest.optimize``). The mixins'
  own set-up runs when the outermost ``init()`` returns, after the user's code, whether or not it
  called ``super().init()``; the last ``next()`` triggers ``_on_last_bar`` once.
* **Orders.** ``buy()`` / ``sell()`` keep backtesting.py's signature, resolve the signal to a
  pattern row, ask the ML hook, and go out through ``super().buy()`` / ``super().sell()`` so
  other mixins in the MRO still run. A user's own tag is kept; an order without one is tagged
  with its ``pattern_id``.
* **Which trade is for which pattern.** backtesting.py copies an order's tag onto the trade it
  opens, and opens trades in the order it fills orders. So at each bar the mixin matches the
  trades that appeared since the last bar to its filled orders (same tag object, same side, in
  placement order): :meth:`_SignalMixin.trade_pattern_ids` is aligned with ``closed_trades``
  (and so with ``stats._trades``) whatever tags the strategy used.
"""
from __future__ import annotations

import functools
import hashlib
import warnings
from functools import cached_property

import numpy as np
import pandas as pd
from backtesting import Strategy

from . import _kill, _plot

_FULL_EQUITY = Strategy.buy.__kwdefaults__["size"]  # backtesting.py's own default size, so results match


class _SignalMixin(Strategy):
    """Shared by both mixins; not used on its own."""

    symbol = None
    timeframe = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name, wrap in (("init", _hooked_init), ("next", _hooked_next)):
            fn = cls.__dict__.get(name) or getattr(cls, name, None)
            if fn is not None and not getattr(fn, "_qml_wrapped", False) \
                    and not getattr(fn, "__isabstractmethod__", False):
                setattr(cls, name, wrap(fn))

    def init(self):
        super().init()

    # ---- set-up, once per run, after the user's init() -------------------------------------------
    def _qml_setup(self) -> None:
        self._qml_ready = True
        self._prepare()
        self._declare_overlays()

    def _prepare(self) -> None:
        """Cooperative: each mixin calls ``super()._prepare()`` first, then prepares its own state."""
        df = self.data.df
        self._n_bars = len(df)
        self._bar_times = df.index          # the full index, once: self.data.index slices it on every call
        self._symbol, self._timeframe = series_identity(self)
        self._signals: list[dict] = []
        pats = getattr(self, "patterns", None)
        self._pattern_index = {} if pats is None else {pid: i for i, pid in enumerate(pats["pattern_id"])}
        self._pending: list[tuple] = []          # (order, pattern_id) placed, not yet seen filled
        self._seen_trades: set[int] = set()      # id() of every trade already matched (or not ours)
        self._n_closed_seen = 0
        self._trade_pid: dict[int, str] = {}     # id(trade) -> pattern_id
        self._entry_pid: dict[tuple, str] = {}   # (entry bar, entry price, side, id(tag)) -> pattern_id
        self._placed: list[tuple] = []           # (order, pattern_id, bar placed): every order that went out
        self._order_trade: dict[int, object] = {}   # id(order) -> the trade it opened
        self._order_end: dict[int, int] = {}     # id(order) -> last bar it was pending (unfilled orders)

    def _declare_overlays(self) -> None:
        """Cooperative, like ``_prepare``: the indicators ``bt.plot()`` draws (see ``_plot``)."""
        self._levels = _plot.declare_levels(self)

    @cached_property
    def pattern_rows(self) -> list[dict]:
        """``self.patterns`` as plain dicts (built once, on the first order): O(1) row access per order."""
        return self.patterns.to_dict("records")

    # ---- hooks, overridden by the mixins ---------------------------------------------------------
    def _ml_decide(self, row: dict, direction: int) -> dict:
        return {"take": True, "ml_confidence": np.nan, "score": row.get("validity_score", np.nan),
                "decision": "pass", "ml_decision": "take", "acting": False}

    def _decisions_changed(self) -> None:
        """Called when the decisions in force change mid-run (the kill switch tripped): drop any cache of them."""

    def _on_last_bar(self) -> None:
        if self._levels is not None:
            self._fill_levels()

    def _fill_levels(self) -> None:
        """Each traded pattern's levels from its detection bar until its order (then its trade) ended."""
        self._match_new_trades()
        last = len(self.data) - 1
        spans = []
        for order, pid, _bar in self._placed:
            k = self._pattern_index.get(pid)
            if k is None:
                continue
            trade = self._order_trade.get(id(order))
            if trade is not None:
                end = trade.exit_bar if trade.exit_bar is not None else last
            else:
                end = self._order_end.get(id(order), last)
            spans.append((k, int(self.pattern_rows[k]["detection_bar"]), end))
        _plot.fill_levels(self._levels, self.patterns, spans)

    # ---- orders ----------------------------------------------------------------------------------
    def buy(self, *, size=_FULL_EQUITY, limit=None, stop=None, sl=None, tp=None, tag=None):
        return self._signal(1, size, limit, stop, sl, tp, tag)

    def sell(self, *, size=_FULL_EQUITY, limit=None, stop=None, sl=None, tp=None, tag=None):
        return self._signal(-1, size, limit, stop, sl, tp, tag)

    def _signal(self, direction, size, limit, stop, sl, tp, tag):
        row, own_tag = self._resolve_pattern(tag, direction)
        verdict = self._ml_decide(row, direction)
        if not verdict["take"]:
            self._signals.append({"row": row, **verdict})
            return None
        if verdict.get("size") is not None:
            size = verdict["size"]
        band = verdict.get("band_size")
        if band is not None and band == band and band != 1.0:   # sizing bands (NaN: none)
            size = scaled_size(size, band)
        place = super().buy if direction == 1 else super().sell
        order = place(size=size, limit=limit, stop=stop, sl=sl, tp=tp,
                      tag=row["pattern_id"] if own_tag is None else own_tag)
        self._signals.append({"row": row, **verdict})
        self._pending.append((order, row["pattern_id"]))
        self._placed.append((order, row["pattern_id"], len(self.data) - 1))
        return order

    def _resolve_pattern(self, tag, direction: int) -> tuple[dict, object]:
        """``(pattern row, the user's own tag or None)`` for an order with this ``tag``."""
        pats = getattr(self, "patterns", None)
        own_tag = None
        if isinstance(tag, (dict, pd.Series)):
            row = dict(tag)
        elif isinstance(tag, str) and tag in self._pattern_index:
            row = dict(self.pattern_rows[self._pattern_index[tag]])
        else:
            own_tag = tag
            row = {}
            if pats is not None and len(pats):
                i = len(self.data) - 1
                here = pats[(pats["detection_bar"] == i) & (pats["direction"] == direction)]
                row = here.iloc[0].to_dict() if len(here) else {}
        if "detection_time" not in row:
            now = self._bar_times[len(self.data) - 1]
            row["detection_time"] = now if isinstance(now, (pd.Timestamp, np.datetime64)) else None
        row.setdefault("detection_bar", len(self.data) - 1)
        row.setdefault("direction", direction)
        row.setdefault("pattern_type", f"{type(self).__name__}_{'long' if direction == 1 else 'short'}")
        row.setdefault("symbol", self._symbol)
        row.setdefault("timeframe", self._timeframe)
        if not row.get("pattern_id"):
            when = row["detection_time"]
            when = pd.Timestamp(when) if when is not None else f"bar {row['detection_bar']}"
            key = f"{row['symbol']}|{row['timeframe']}|{row['pattern_type']}|{when}"
            row["pattern_id"] = hashlib.sha256(key.encode()).hexdigest()[:16]
        return row, own_tag

    # ---- the order record ------------------------------------------------------------------------
    def _match_new_trades(self) -> None:
        """Pair trades opened since the last call with the orders this mixin placed (see module doc)."""
        closed = self.closed_trades
        fresh = [t for t in (*self.trades, *closed[self._n_closed_seen:]) if id(t) not in self._seen_trades]
        self._n_closed_seen = len(closed)
        live = self.orders
        filled = [p for p in self._pending if not any(o is p[0] for o in live)]
        self._pending = [p for p in self._pending if any(o is p[0] for o in live)]
        for order, _ in filled:
            self._order_end[id(order)] = len(self.data) - 2
        for trade in sorted(fresh, key=lambda t: t.entry_bar):
            self._seen_trades.add(id(trade))
            for k, (order, pid) in enumerate(filled):
                if order.tag is trade.tag and np.sign(order.size) == np.sign(trade.size):
                    self._trade_pid[id(trade)] = pid
                    self._entry_pid[_entry_key(trade)] = pid
                    self._order_trade[id(order)] = trade
                    del filled[k]
                    break

    def trade_pattern_ids(self) -> list[str | None]:
        """The ``pattern_id`` each closed trade was for (None: not placed through the mixins).

        Aligned with ``self.closed_trades``, hence with the rows of ``stats._trades``. A trade closed
        in part is recorded by backtesting.py as a copy of the open one (same entry bar, price, side
        and tag), so a closed trade the record has not met is looked up by those.
        """
        self._match_new_trades()
        return [self._trade_pid.get(id(t)) or self._entry_pid.get(_entry_key(t)) for t in self.closed_trades]


def scaled_size(size: float, fraction: float) -> float:
    """An order ``size`` (backtesting.py's meaning) scaled by a sizing band's ``fraction`` in (0, 1].

    A fraction of equity (``0 < size < 1``, the default ~1.0 included) is multiplied; a whole number
    of units (``size >= 1``) is multiplied and rounded down, to at least 1 unit.

        >>> scaled_size(0.8, 0.5), scaled_size(10, 0.5), scaled_size(3, 0.5), scaled_size(1, 0.25)
        (0.4, 5, 1, 1)
    """
    if 0 < abs(size) < 1:
        return size * fraction
    return int(max(1, np.floor(abs(size) * fraction)))


def _entry_key(trade) -> tuple:
    return trade.entry_bar, trade.entry_price, trade.size > 0, id(trade.tag)


def _hooked_init(user_init):
    @functools.wraps(user_init)
    def init(self):
        depth = self.__dict__.get("_qml_init_depth", 0)
        self._qml_init_depth = depth + 1
        try:
            user_init(self)
        finally:
            self._qml_init_depth = depth
        if depth == 0 and not self.__dict__.get("_qml_ready"):
            self._qml_setup()

    init._qml_wrapped = True
    return init


def _hooked_next(user_next):
    @functools.wraps(user_next)
    def next(self):
        state = self.__dict__                 # per bar: plain dict access, no attribute machinery
        if state.get("_qml_in_next"):         # a super().next() chain: only the outermost call acts
            return user_next(self)
        if self._pending:
            self._match_new_trades()
        n = len(self.data)                    # bars so far: the current bar is n - 1
        kill = state.get("_qml_kill")
        if kill is not None and n > kill.armed_from:   # the kill switch, armed: trades closed so far only
            self._kill_switch_check(n - 1)
        state["_qml_in_next"] = True
        try:
            user_next(self)
        finally:
            state["_qml_in_next"] = False
        if kill is not None and kill.seen >= kill.guard_from:   # the orders as next() left them (_kill: cost)
            _kill.remember(self, kill)
        if n == self._n_bars:
            self._on_last_bar()

    next._qml_wrapped = True
    return next


_SignalMixin.init = _hooked_init(_SignalMixin.init)


def series_identity(strategy) -> tuple[str, str | None]:
    """``(symbol, timeframe)`` of the strategy's data: class settings first, then ``df.attrs``.

    ``Backtest.optimize`` workers receive the frame without its ``attrs``, so pass ``symbol`` and
    ``timeframe`` there (``bt.optimize(..., symbol=["EURUSD"], timeframe=["4h"])``): both are part
    of ``pattern_id``. Falls back to ``"UNKNOWN"`` with a warning (once per run: the answer is kept
    on the strategy instance).
    """
    known = strategy.__dict__.get("_series_identity")
    if known is not None:
        return known
    attrs = strategy.data.df.attrs
    symbol = strategy.symbol or attrs.get("symbol")
    if not symbol:
        if getattr(strategy, "register_patterns", False):
            warnings.warn("the data has no symbol (df.attrs['symbol'] or the strategy's `symbol`); registering "
                          "its patterns under 'UNKNOWN'", stacklevel=3)
        symbol = "UNKNOWN"
    strategy._series_identity = (symbol, strategy.timeframe or attrs.get("timeframe"))
    return strategy._series_identity
