"""backtesting.py integration: register every signal, and filter it with the ML model.

Two mixins for any :class:`backtesting.Strategy`, QML or not::

    class MyStrategy(PatternRegistryMixin, MLFilterMixin, Strategy):
        def init(self):
            super().init()                      # required: the mixins precompute here
            ...
        def next(self):
            if signal:
                self.buy(sl=..., tp=..., tag={"pattern_type": "my_setup", "validity_score": 0.7})

``buy()`` / ``sell()`` keep backtesting.py's signature. Before an order goes out, the signal it is
for is resolved to a *pattern row*: the ``tag`` itself when it is a row (dict / Series) or a known
``pattern_id``, else the pattern the strategy detected at the current bar in the order's direction
(``self.patterns``, if the strategy has one). Then:

* :class:`MLFilterMixin` applies the ``ml:`` mode (:func:`qml_plugin.filter.decide`) and skips
  (returns None), sizes or passes the order. Scores of the strategy's own patterns are computed in
  ``init()`` in one batch; a row given at run time is scored when its order is placed (one call
  per order, never per bar). A row without the model's features is a :class:`ConfigError`.
* :class:`PatternRegistryMixin` keeps the pattern, its features, its ``ml_confidence`` and the
  decision in memory, tags the order with the ``pattern_id`` (so ``stats._trades["Tag"]`` joins
  trades to patterns) and writes everything in one transaction after the last bar, together with
  the outcomes of trades closed so far (``label_source="trade"``). Trades that backtesting.py
  closes after the last ``next()`` get theirs from :func:`record_run`. Under backtesting.py's
  ``FractionalBacktest`` prices are stored unscaled (in the instrument's own units).

Settings are class attributes, so ``Backtest.run(**kw)`` and ``optimize`` can set them per run.
"""
from __future__ import annotations

import functools
import hashlib
import warnings
from functools import cached_property

import numpy as np
import pandas as pd
from backtesting import Strategy

from .config import MLConfig, parse_ml_block
from .errors import ConfigError
from .filter import decide, size_fraction
from .scoring import score_or_baseline

__all__ = ["PatternRegistryMixin", "MLFilterMixin", "record_run"]

_FEATURE_PREFIXES = ("ctx_", "geo_", "temp_", "vol_", "mom_", "volu_", "regime_")
_FULL_EQUITY = Strategy.buy.__kwdefaults__["size"]  # backtesting.py's own default size, so results match


class _SignalMixin(Strategy):
    """Shared plumbing: one ``buy``/``sell`` that resolves the pattern, asks the hooks, places the order."""

    symbol = None
    timeframe = None

    def init(self):
        super().init()
        df = self.data.df
        self._n_bars = len(df)
        self._symbol, self._timeframe = series_identity(self)
        self._signals: list[dict] = []
        pats = getattr(self, "patterns", None)
        self._pattern_index = {} if pats is None else {pid: i for i, pid in enumerate(pats["pattern_id"])}
        self._next_depth = 0

    def __init_subclass__(cls, **kwargs):
        """Wrap every ``next()`` a subclass defines so the last bar triggers ``_on_last_bar`` once.

        Done on the class (not with a closure on the instance) so strategies stay picklable for
        ``Backtest.optimize``; a depth counter makes ``super().next()`` chains flush only after the
        outermost ``next()`` has placed its orders.
        """
        super().__init_subclass__(**kwargs)
        user_next = cls.__dict__.get("next") or getattr(cls, "next", None)  # own, or inherited from the user's base
        if (user_next is not None and not getattr(user_next, "_qml_wrapped", False)
                and not getattr(user_next, "__isabstractmethod__", False)):
            cls.next = _flushing(user_next)

    @cached_property
    def pattern_rows(self) -> list[dict]:
        """``self.patterns`` as plain dicts (built once, on the first order): O(1) row access per order."""
        return self.patterns.to_dict("records")

    # hooks, overridden by the mixins
    def _ml_decide(self, row: dict, direction: int) -> dict:
        return {"take": True, "ml_confidence": np.nan, "score": row.get("validity_score", np.nan),
                "decision": "pass"}

    def _on_last_bar(self) -> None:
        pass

    def buy(self, *, size=_FULL_EQUITY, limit=None, stop=None, sl=None, tp=None, tag=None):
        return self._signal(1, size, limit, stop, sl, tp, tag)

    def sell(self, *, size=_FULL_EQUITY, limit=None, stop=None, sl=None, tp=None, tag=None):
        return self._signal(-1, size, limit, stop, sl, tp, tag)

    def _signal(self, direction, size, limit, stop, sl, tp, tag):
        if not hasattr(self, "_signals"):
            raise ConfigError(f"{type(self).__name__}.init() must call super().init() so the qml mixins "
                              "(PatternRegistryMixin, MLFilterMixin) can precompute before the first order")
        row = self._resolve_pattern(tag, direction)
        verdict = self._ml_decide(row, direction)
        self._signals.append({"row": row, **verdict})
        if not verdict["take"]:
            return None
        if verdict.get("size") is not None:
            size = verdict["size"]
        place = Strategy.buy if direction == 1 else Strategy.sell
        return place(self, size=size, limit=limit, stop=stop, sl=sl, tp=tp, tag=row["pattern_id"])

    def _resolve_pattern(self, tag, direction: int) -> dict:
        pats = getattr(self, "patterns", None)
        if isinstance(tag, (dict, pd.Series)):
            row = dict(tag)
        elif tag is not None and str(tag) in self._pattern_index:
            row = dict(self.pattern_rows[self._pattern_index[str(tag)]])
        elif pats is not None and len(pats):
            i = len(self.data) - 1
            here = pats[(pats["detection_bar"] == i) & (pats["direction"] == direction)]
            row = here.iloc[0].to_dict() if len(here) else {}
        else:
            row = {}
        if "detection_time" not in row:
            row["detection_time"] = self.data.index[-1]
        row.setdefault("detection_bar", len(self.data) - 1)
        row.setdefault("direction", direction)
        row.setdefault("pattern_type", f"{type(self).__name__}_{'long' if direction == 1 else 'short'}")
        row.setdefault("symbol", self._symbol)
        row.setdefault("timeframe", self._timeframe)
        if not row.get("pattern_id"):
            key = f"{row['symbol']}|{row['timeframe']}|{row['pattern_type']}|{pd.Timestamp(row['detection_time'])}"
            row["pattern_id"] = hashlib.sha256(key.encode()).hexdigest()[:16]
        return row


def _flushing(user_next):
    @functools.wraps(user_next)
    def next(self):
        self._next_depth = getattr(self, "_next_depth", 0) + 1
        try:
            user_next(self)
        finally:
            self._next_depth -= 1
        if self._next_depth == 0 and hasattr(self, "_n_bars") and len(self.data) == self._n_bars:
            self._on_last_bar()

    next._qml_wrapped = True
    return next


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
        warnings.warn("the data has no symbol (df.attrs['symbol'] or the strategy's `symbol`); registering "
                      "its patterns under 'UNKNOWN'", stacklevel=3)
        symbol = "UNKNOWN"
    strategy._series_identity = (symbol, strategy.timeframe or attrs.get("timeframe"))
    return strategy._series_identity


class MLFilterMixin(_SignalMixin):
    """Applies the ``ml:`` block (SPEC §7) to every ``buy()``/``sell()``; ``ml_config=None`` = off.

    After ``init()``, ``self.pattern_decisions`` holds, for each row of ``self.patterns`` (if the
    strategy has them), ``take``, ``score``, ``ml_confidence`` and ``decision``, computed in one pass.
    """

    ml_config = None  # a path to a YAML file holding the ml: block, or that block as a YAML string

    def init(self):
        super().init()
        self._ml = parse_ml_block(self.ml_config) if self.ml_config else MLConfig()
        self._ml_scorer = None
        self._ml_status = "off"
        pats = getattr(self, "patterns", None)
        if self._ml.enabled:
            self._ml_scorer, self._ml_status = score_or_baseline(
                self._ml, self.data.df, pats, getattr(self, "pattern_features", None),
                registry_db=getattr(self, "registry_db", None))
        if pats is not None:
            conf = (self._ml_scorer.confidence.reindex(pats["pattern_id"]).to_numpy()
                    if self._ml_scorer is not None else np.full(len(pats), np.nan))
            take, score = decide(pats["validity_score"].to_numpy(), conf, mode=self._mode,
                                 min_score=float(getattr(self, "min_score", 0.5)), ml_weight=self._ml.ml_weight,
                                 confidence_threshold=self._ml.confidence_threshold)
            label = np.where(take, "pass", "skip")
            self.pattern_decisions = pd.DataFrame(
                {"take": take, "score": score, "ml_confidence": conf,
                 "decision": [f"{x}:{self._mode or 'technical'}" for x in label]}, index=pats.index)
            self._decision_rows = self.pattern_decisions.to_dict("records")  # O(1) lookups per order

    @property
    def _mode(self) -> str | None:
        return self._ml.prediction_mode if self._ml_scorer is not None else None

    @property
    def ml_status(self) -> str:
        """``off``, ``out-of-sample``, ``IN-SAMPLE`` or ``baseline: <why>``: shown in every output."""
        return self._ml_status

    def _ml_decide(self, row: dict, direction: int) -> dict:
        pid = row["pattern_id"]
        if pid in self._pattern_index and hasattr(self, "_decision_rows"):
            out = dict(self._decision_rows[self._pattern_index[pid]])
        elif self._mode is None:
            return super()._ml_decide(row, direction)
        else:
            conf = self._score_row(row)
            v = row.get("validity_score")
            min_score = float(getattr(self, "min_score", 0.5))
            if v is None or pd.isna(v):  # a signal without a technical score: the technical rule passes it
                v = max(min_score, 0.0)
            take, score = decide([v], [conf], mode=self._mode, min_score=min_score, ml_weight=self._ml.ml_weight,
                                 confidence_threshold=self._ml.confidence_threshold)
            out = {"take": bool(take[0]), "ml_confidence": conf, "score": float(score[0]),
                   "decision": f"{'pass' if take[0] else 'skip'}:{self._mode}"}
        if self._ml.size_by_score and out["take"] and self._mode is not None:
            out["size"] = float(size_fraction([out["score"]])[0])
        return out

    def _score_row(self, row: dict) -> float:
        feats = {k: v for k, v in row.items() if str(k).startswith(_FEATURE_PREFIXES)}
        if not feats:
            raise ConfigError(
                f"signal {row['pattern_id']!r} at {row['detection_time']} has no features for the ML filter: "
                f"pass a tag row with the model's feature columns ({', '.join(_FEATURE_PREFIXES)}...)")
        return float(self._ml_scorer.score_row(row))


class PatternRegistryMixin(_SignalMixin):
    """Registers every signal with its features before the order goes out; writes once, after the last bar."""

    register_patterns = True
    registry_db = "results/experiments.db"

    def init(self):
        super().init()
        self._run_id = f"{type(self).__name__}-{pd.Timestamp.now(tz='UTC'):%Y%m%dT%H%M%S%f}"
        self._price_unit = _fractional_unit()

    @cached_property
    def _market_features(self) -> pd.DataFrame:
        from .features.cache import market_features

        return market_features(self.data.df)  # memoized per series: optimize reruns reuse it

    def _signal_features(self, row: dict) -> dict:
        feats = getattr(self, "pattern_features", None)
        pid = row["pattern_id"]
        if feats is not None and pid in feats.index:
            return feats.loc[pid].drop(labels=["regime_at_detection"], errors="ignore").to_dict()
        own = {k: v for k, v in row.items() if str(k).startswith(_FEATURE_PREFIXES)}
        bar = int(row["detection_bar"])
        return {**self._market_features.iloc[bar].to_dict(), **own}

    def _on_last_bar(self) -> None:
        super()._on_last_bar()
        if not self.register_patterns:
            return
        from .registry import PatternRegistry

        extra = self._extra_registrations()
        known = set(extra["patterns"]["pattern_id"]) if extra is not None else set()
        rows, feats, conf, decisions = [], [], [], []
        for s in self._signals:
            if s["row"]["pattern_id"] in known:  # registered in bulk below, with its features and decision
                continue
            rows.append(s["row"])
            feats.append(self._signal_features(s["row"]))
            conf.append(s["ml_confidence"])
            decisions.append(s["decision"])
        with PatternRegistry(self.registry_db) as reg:
            if extra is not None:
                reg.register_patterns(self._unscaled(extra["patterns"]), extra["features"], run_id=self._run_id,
                                      feature_schema=getattr(self, "feature_schema", None))
            if rows:
                pats = pd.DataFrame(rows)
                pats["ml_decision"] = decisions
                reg.register_patterns(self._unscaled(pats), pd.DataFrame(feats), ml_confidence=np.asarray(conf, float),
                                      run_id=self._run_id)
            trades = _trade_outcomes(self.closed_trades)
            if len(trades):
                reg.record_outcomes(trades)

    def _unscaled(self, pats: pd.DataFrame) -> pd.DataFrame:
        """Prices back in the instrument's own units when a FractionalBacktest scaled them."""
        if self._price_unit == 1.0:
            return pats
        pats = pats.copy()
        cols = [c for c in _PRICE_COLUMNS if c in pats.columns]
        pats[cols] = pats[cols] / self._price_unit
        return pats

    def _extra_registrations(self) -> dict | None:
        """Patterns to register besides the signals: ``{"patterns": frame, "features": frame}``.

        QMLStrategy returns every detected pattern; outcome columns in the patterns frame
        (``label``, ``pnl_pct``, ``r_multiple``, ``exit_time``) are stored by the same upsert as
        triple-barrier outcomes (see :meth:`PatternRegistry.register_patterns`).
        """
        return None


_PRICE_COLUMNS = ("p1_price", "p2_price", "p3_price", "entry", "stop", "target", "atr", "fill_price", "exit_price")


def _fractional_unit() -> float:
    """The ``fractional_unit`` of the FractionalBacktest running this strategy, else 1.0.

    backtesting.py's FractionalBacktest multiplies prices by ``fractional_unit`` before the
    strategy sees them and gives the strategy no handle on it, so we look for the running
    FractionalBacktest on the call stack (once, in ``init()``).
    """
    import inspect

    from backtesting.lib import FractionalBacktest

    frame = inspect.currentframe()
    try:
        while frame is not None:
            owner = frame.f_locals.get("self")
            if isinstance(owner, FractionalBacktest):
                return float(owner._fractional_unit)
            frame = frame.f_back
    finally:
        del frame
    return 1.0


def _trade_outcomes(trades) -> pd.DataFrame:
    rows = [{"pattern_id": str(t.tag), "pnl_pct": t.pl_pct * 100, "exit_time": t.exit_time}
            for t in trades if t.tag is not None]
    return _outcome_frame(pd.DataFrame(rows))


def _outcome_frame(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty:
        return pd.DataFrame(columns=["pattern_id", "label", "pnl_pct", "r_multiple", "exit_time", "label_source"])
    out = pd.DataFrame({
        "pattern_id": df["pattern_id"].astype(str),
        "label": (df["pnl_pct"] > 0).astype(float),
        "pnl_pct": df["pnl_pct"].astype(float),
        "r_multiple": np.nan,
        "exit_time": pd.to_datetime(df["exit_time"]),
        "label_source": "trade",
    })
    return out


def record_run(stats: pd.Series, registry_db: str) -> int:
    """Write the outcome of every trade in ``stats._trades`` (including those ``finalize_trades`` closed).

    ``trade_outcome`` is ``ReturnPct * 100`` (a percent). Returns the number of trades recorded.
    Called by every ``qml`` command after a run; idempotent.
    """
    from .registry import PatternRegistry

    t = stats._trades
    if t is None or t.empty or "Tag" not in t:
        return 0
    t = t[t["Tag"].notna()]
    df = pd.DataFrame({"pattern_id": t["Tag"].astype(str), "pnl_pct": t["ReturnPct"] * 100,
                       "exit_time": t["ExitTime"]})
    with PatternRegistry(registry_db) as reg:
        return reg.record_outcomes(_outcome_frame(df), label_source="trade", skip_unknown=True)
