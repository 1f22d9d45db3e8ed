"""``QMLStrategy``: trade detected QML patterns in backtesting.py, with registry and ML filter built in.

    from backtesting import Backtest
    from qml_plugin import load_ohlcv
    from qml_plugin.strategies import QMLStrategy

    bt = Backtest(load_ohlcv("EURUSD_1h", resample="4h"), QMLStrategy, cash=100_000)
    stats = bt.run(swing_n=3, rr=2.0, registry_db="results/experiments.db")
    bt.optimize(swing_n=[2, 3, 5], head_min_atr=[0.3, 0.5])   # every QMLParams field is a parameter

Rules (the same ones :func:`qml_plugin.patterns.label_patterns` and the vectorbt engine follow):

* patterns are detected once in ``init()`` (causal: a pattern exists from its ``detection_bar``);
  their decision (technical rule ``validity_score >= min_score``, or the ``ml:`` mode) is computed
  there too, in one vectorized pass;
* one position at a time: at bar ``t`` a pattern detected at ``t`` is traded only when there is no
  open trade and no pending order; among several, the higher score wins, then the earlier ``p1_bar``;
* a limit order at ``entry`` with ``sl=stop`` and ``tp=target``, cancelled after ``max_wait`` bars;
  a trade still open ``max_hold`` bars after its fill is closed at the next bar's Open;
* patterns whose levels backtesting.py cannot place (target not beyond entry) are never traded;
* ``ml.size_bands`` size each order by its ``ml_confidence``; after ``ml.kill_switch`` trips, the
  patterns detected from then on follow the technical rule (``baseline``) or none (``halt``).

After the run every detected pattern is in the registry with its features, ``ml_confidence``, the
decision and its triple-barrier outcome; traded ones also carry the trade's outcome.
"""
from __future__ import annotations

from functools import cached_property

import pandas as pd
from backtesting import Strategy

from ..comparison import placeable
from ..mixins import MLFilterMixin, PatternRegistryMixin, series_identity
from ..patterns import QMLParams, detect_patterns, label_patterns
from ..tradesim import selection_order

__all__ = ["QMLStrategy"]

_D = QMLParams()


class QMLStrategy(PatternRegistryMixin, MLFilterMixin, Strategy):
    """Trades bullish and bearish QML patterns; every ``QMLParams`` field is a class attribute."""

    swing_n = _D.swing_n
    head_min_atr = _D.head_min_atr
    max_span = _D.max_span
    entry_offset_atr = _D.entry_offset_atr
    stop_buffer_atr = _D.stop_buffer_atr
    target = _D.target
    rr = _D.rr
    max_wait = _D.max_wait
    max_hold = _D.max_hold
    min_score = _D.min_score

    @property
    def params(self) -> QMLParams:
        return QMLParams(**{f: getattr(self, f) for f in QMLParams.fields()})

    def init(self):
        df = self.data.df
        symbol, timeframe = series_identity(self)
        self.patterns = detect_patterns(df, self.params, symbol=symbol, timeframe=timeframe)
        self.pattern_features = None
        self.pattern_regimes = None
        self.feature_schema = None
        needs_features = self.register_patterns or (self.ml_config is not None)
        if needs_features and len(self.patterns):
            from ..features import FeatureExtractor
            from ..features.cache import pattern_features, pattern_regimes

            extractor = FeatureExtractor()
            # memoized across runs on the same bars; indexed by pattern_id, columns = the features
            self.pattern_features = pattern_features(df, self.patterns, extractor)
            self.pattern_regimes = pattern_regimes(df, self.patterns, extractor)
            self.feature_schema = extractor.schema_hash
        self._order = None
        self._order_bar = -1

    @cached_property
    def _by_bar(self) -> dict[int, list[int]]:
        """Per detection bar, the tradable patterns ordered by (score desc, p1_bar asc): first one wins.

        Built on the first ``next()``, from the decisions the mixins computed after ``init()``.
        """
        p, d = self.patterns, self.pattern_decisions
        take = d["take"].to_numpy() & placeable(p)
        order = selection_order(p["detection_bar"].to_numpy(), d["score"].to_numpy(), p["p1_bar"].to_numpy())
        by_bar: dict[int, list[int]] = {}
        for k in order[take[order]]:
            by_bar.setdefault(int(p["detection_bar"].iat[k]), []).append(int(k))
        return by_bar

    def _decisions_changed(self) -> None:
        super()._decisions_changed()
        self.__dict__.pop("_by_bar", None)   # the kill switch tripped: rebuilt from the decisions now in force

    def next(self):
        i = len(self.data) - 1
        if self._order is not None:
            if self._order not in self.orders:  # filled (or cancelled by the broker)
                self._order = None
            elif i >= self._order_bar + self.max_wait:
                self._order.cancel()
                self._order = None
        for trade in self.trades:
            if i - trade.entry_bar >= self.max_hold:
                trade.close()
        if self._order is not None or self.trades or self.orders:
            return
        for k in self._by_bar.get(i, ()):
            row = self.pattern_rows[k]
            place = self.buy if row["direction"] == 1 else self.sell
            order = place(limit=row["entry"], sl=row["stop"], tp=row["target"], tag=row["pattern_id"])
            if order is not None:
                self._order, self._order_bar = order, i
                return

    def _extra_registrations(self) -> dict | None:
        df = self.data.df
        params = self.params
        pats = self.patterns.copy()
        d = self.pattern_decisions
        pats["ml_confidence"] = d["ml_confidence"].to_numpy()
        pats["ml_decision"] = d["decision"].to_numpy()
        if self.pattern_regimes is not None:
            pats["regime_at_detection"] = self.pattern_regimes.to_numpy()
        feats = self.pattern_features if self.pattern_features is not None else pd.DataFrame(index=pats.index)
        # the triple-barrier outcome of every pattern rides along in the same upsert (label_source
        # "triple_barrier", ranked below trades and users); patterns still open at the end have none
        out = label_patterns(df, self.patterns, max_wait=params.max_wait, max_hold=params.max_hold)
        known = out["label"].notna().to_numpy()
        for column in ("label", "pnl_pct", "r_multiple", "exit_time"):
            pats[column] = out[column].where(known).to_numpy()
        return {"patterns": pats, "features": feats}
