"""The sweep's event-level fast path: a combination's trades and score from its patterns' events.

A QML sweep's work is events (a few thousand patterns, their fills and exits), not bars times
combinations. For one combination this module

1. finds the patterns once per distinct ``(swing_n, head_min_atr, max_span)``
   (:func:`~qml_plugin.patterns.qml.detect_structure`) and prices them once per distinct set of
   level fields (:func:`~qml_plugin.patterns.qml.pattern_levels`, ``entry_offset_atr``,
   ``stop_buffer_atr``, ``target``, ``rr``);
2. decides per pattern with :func:`qml_plugin.filter.decide` (the technical rule, or the ML mode);
3. walks the patterns in one ``@njit(cache=True)`` kernel, the one-position rule of
   :mod:`qml_plugin.tradesim` (higher score, then earlier ``p1_bar``; nothing new while an order or a
   trade is live), computing each visited pattern's fill and exit with the project's one copy of the
   fill rules (:data:`qml_plugin.patterns.labels.outcome_one`: limit live ``t+1 .. t+max_wait``, no SL/TP in the
   fill bar, SL before TP on one bar, timeout at the next open after ``max_hold``) only when the walk
   reaches it;
4. values the trades at each day's last bar with vectorbt's accounting and scores them with THE
   definition (:func:`qml_plugin.tradesim.account_nb`, :func:`~qml_plugin.tradesim.equity_stats_nb`,
   :func:`~qml_plugin.tradesim.trade_stats_nb`), in the same kernel.

Nothing here is the engine of record: :func:`qml_plugin.vbt.sweep` re-simulates its best rows through
``vectorbt.Portfolio`` (:func:`qml_plugin.vbt.engine.verify`) and raises when they differ.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from numba import njit

from .. import tradesim as ts
from ..config import MLConfig
from ..filter import decide, refuse_unsupported, size_fraction
from ..patterns import QMLParams
from ..patterns.labels import outcome_one
from ..patterns.qml import detect_structure, pattern_levels
from ..tradesim import FULL_SIZE, Market, levels_placeable, selection_order

NOT_HONOURED = dict(engine="the vectorbt engine (qml sweep, qml optimize, qml_plugin.vbt)",
                    why="its kernels trade one size per combination and cannot stop mid-run on the trades closed "
                        "so far")
"""How the vectorbt side refuses ``ml.size_bands`` / ``ml.kill_switch``: ``refuse_unsupported(ml, **NOT_HONOURED)``."""

__all__ = ["EventBook", "FAST_METRICS", "simulate_nb"]

FAST_METRICS = ["n_trades", "win_rate", "profit_factor", "total_return", "sharpe", "calmar", "max_drawdown",
                "sr", "skew", "kurtosis", "n_days"]
"""Columns of :meth:`EventBook.run`'s metric matrix; the last four feed the deflated Sharpe ratio."""


@njit(cache=True)
def simulate_nb(open_, high, low, close, sample, order, t, d, entry, stop, target, take, size, max_wait, max_hold,
                fee, init, days_per_year):
    """One combination: the one-position walk with lazy outcomes, daily equity, then the score.

    Returns ``(metrics[11], entry_bar, exit_bar, entry_price, exit_price, direction, daily_equity)``.
    """
    m = t.shape[0]
    eb = np.empty(m, np.int64)
    xb = np.empty(m, np.int64)
    ep = np.empty(m)
    xp = np.empty(m)
    dirs = np.empty(m)
    sz = np.empty(m)
    n = 0
    free_from = 0
    never = np.int64(1) << 62
    for i in range(order.shape[0]):
        k = order[i]
        if not take[k] or t[k] < free_from:
            continue
        f, fp, x, xpx, _why = outcome_one(open_, high, low, t[k], d[k], entry[k], stop[k], target[k], max_wait,
                                          max_hold)
        if f >= 0:
            eb[n] = f
            xb[n] = x
            ep[n] = fp
            xp[n] = xpx
            dirs[n] = d[k]
            sz[n] = size[k]
            n += 1
            free_from = x if x >= 0 else never
        else:
            free_from = t[k] + max_wait
    eb, xb, ep, xp, dirs, sz = eb[:n], xb[:n], ep[:n], xp[:n], dirs[:n], sz[:n]
    daily = ts.account_nb(close, sample, eb, xb, ep, xp, dirs, sz, fee, init)
    total, sharpe, calmar, dd, sr, skew, kurt, n_days = ts.equity_stats_nb(daily, init, days_per_year)
    n_tr, win, pf = ts.trade_stats_nb(ep, xp, dirs, fee)
    out = np.array([n_tr, win, pf, total, sharpe, calmar, dd, sr, skew, kurt, n_days], dtype=np.float64)
    return out, eb, xb, ep, xp, dirs, daily


class EventBook:
    """Patterns of one series, priced and decided per combination, simulated from their events.

    ``ml`` (an enabled :class:`~qml_plugin.config.MLConfig`) scores the patterns through
    :class:`~qml_plugin.vbt.engine.PatternBook` (one feature extraction and one guarded model pass
    for all combinations, :meth:`prepare`); ML off, the technical rule decides. ``start`` scores
    only the period from that time: patterns are still detected on every bar (the earlier ones are
    the warm-up, causal), but only those detected from ``start`` on are traded, and the daily
    equity starts there (``qml optimize``'s validation and holdout periods). ``registry_db`` goes to the
    :class:`~qml_plugin.vbt.engine.PatternBook` (its version statuses); ``ml_book`` is one already
    made (the sweep's driver keeps its scoring events for the prediction log).
    """

    def __init__(self, ohlcv: pd.DataFrame, ml: MLConfig | None = None, *, start=None,
                 scores: tuple[dict, str] | None = None, registry_db: str | None = None, ml_book=None) -> None:
        self.ohlcv = ohlcv
        self.ml = ml or MLConfig()
        refuse_unsupported(self.ml, **NOT_HONOURED)
        self._ohlc = tuple(ohlcv[k].to_numpy(np.float64) for k in ("Open", "High", "Low", "Close"))
        self.market = Market.of(ohlcv)
        self.first_bar = self.market.bar_range(start)[0] if start is not None else 0
        self.sample = self.market.sample_bars(self.first_bar, len(ohlcv) - 1)
        self._structure: dict[tuple, dict] = {}
        self._levels: dict[tuple, tuple] = {}
        self._er: dict[tuple, np.ndarray | None] = {}       # expected_r per level key (expected_value mode)
        self._ml_book = None
        self._scores = scores[0] if scores is not None else None
        self.ml_status = scores[1] if scores is not None else "off"
        if self.ml.enabled and scores is None:
            from .engine import PatternBook

            self._ml_book = ml_book if ml_book is not None else PatternBook(ohlcv, self.ml, registry_db=registry_db)

    @staticmethod
    def structure_key(p: QMLParams) -> tuple:
        return (int(p.swing_n), float(p.head_min_atr), int(p.max_span))

    @staticmethod
    def level_key(p: QMLParams) -> tuple:
        return (*EventBook.structure_key(p), float(p.entry_offset_atr), float(p.stop_buffer_atr), p.target,
                float(p.rr) if p.target == "rr" else None)

    def prepare(self, grid: Sequence[QMLParams]) -> None:
        """Score every pattern of ``grid`` with the ML model at once (a no-op with ML off)."""
        if self._ml_book is not None:
            self._ml_book.score(grid)
            self.ml_status = self._ml_book.ml_status

    def scores(self, grid: Sequence[QMLParams]) -> tuple[dict, str]:
        """``({detection key: (confidence, expected_r)}, ml_status)`` of ``grid``: a work unit's ``scores=``.

        The driver scores once (XGBoost never runs in a worker: a forked worker must not start
        OpenMP threads its parent already used, and one model pass serves every unit).
        """
        from .engine import PatternBook

        self.prepare(grid)
        keys = {PatternBook.detection_key(p): p for p in grid}
        book = self._ml_book
        return ({k: (book.confidence(p), book.expected_r(p)) for k, p in keys.items()} if book is not None else {},
                self.ml_status)

    def levels(self, p: QMLParams) -> tuple:
        """``(arrays, placeable, confidence, mode, order, size)`` of ``p``'s patterns, cached per level key.

        Detection runs once per structure key; the walk's order (by bar, score, ``p1_bar``) and the
        sizes depend on the levels and the ML scores, never on ``min_score``, ``max_wait`` or ``max_hold``.
        """
        key = self.level_key(p)
        if key not in self._levels:
            skey = self.structure_key(p)
            if skey not in self._structure:
                self._structure = {skey: detect_structure(*self._ohlc[1:], p)}   # one structure at a time
                self._levels, self._er = {}, {}
            arr = pattern_levels(self._structure[skey], p)
            ok = levels_placeable(arr["direction"], arr["entry"], arr["stop"], arr["target"])
            ok &= arr["detection_bar"] >= self.first_bar
            mode, conf = None, np.nan
            c = er = None
            if self._scores is not None and self.ml.enabled:
                from .engine import PatternBook

                c, er = self._scores[PatternBook.detection_key(p)]
            elif self._ml_book is not None:
                self.prepare([p])
                c, er = self._ml_book.confidence(p), self._ml_book.expected_r(p)
            if c is not None:
                mode, conf = self.ml.prediction_mode, c
            er = er if mode is not None else None     # expected_value decides on it (NaN: the technical rule)
            _, score = decide(arr["validity_score"], conf, mode=mode, ml_weight=self.ml.ml_weight,
                              confidence_threshold=self.ml.confidence_threshold, expected_r=er,
                              min_expected_r=self.ml.min_expected_r)
            order = selection_order(arr["detection_bar"], score, arr["p1_bar"])
            size = size_fraction(score) if (self.ml.size_by_score and mode is not None) else \
                np.full(len(score), FULL_SIZE)
            if len(self._levels) > 64:                                          # bounded memory on big grids
                self._levels.clear()
                self._er.clear()
            self._levels[key] = (arr, ok, conf, mode, order, size)
            self._er[key] = er
        return self._levels[key]

    def simulate(self, p: QMLParams, *, commission: float = 0.0, cash: float = 100_000.0) -> tuple:
        """``simulate_nb``'s output for ``p``: the metric vector, the trades and the daily equity."""
        arr, ok, conf, mode, order, size = self.levels(p)
        er = self._er[self.level_key(p)]
        take, _ = decide(arr["validity_score"], conf, mode=mode, min_score=float(p.min_score),
                         ml_weight=self.ml.ml_weight, confidence_threshold=self.ml.confidence_threshold,
                         expected_r=er, min_expected_r=self.ml.min_expected_r)
        o, h, l, c = self._ohlc
        return simulate_nb(o, h, l, c, self.sample, order, arr["detection_bar"], arr["direction"],
                           arr["entry"], arr["stop"], arr["target"], take & ok, size, int(p.max_wait),
                           int(p.max_hold), float(commission), float(cash), self.market.days_per_year)

    def run(self, grid: Sequence[QMLParams], *, commission: float = 0.0, cash: float = 100_000.0,
            ) -> tuple[np.ndarray, np.ndarray]:
        """Metric matrix (combinations x :data:`FAST_METRICS`) and daily returns (days x combinations)."""
        self.prepare(grid)
        metrics = np.empty((len(grid), len(FAST_METRICS)))
        returns = np.empty((len(self.sample), len(grid)))
        for j, p in enumerate(grid):
            out, *_, daily = self.simulate(p, commission=commission, cash=cash)
            metrics[j] = out
            returns[:, j] = daily / np.r_[cash, daily[:-1]] - 1.0
        return metrics, returns
