"""``PatternRegistryMixin``: every signal registered with its features; written once, or collected.

Two ways to run, chosen by the ``registry_db`` setting:

* ``registry_db="results/experiments.db"`` (a path or URL): the registrations are written in one go
  after the last bar; trades that backtesting.py closes after the last ``next()`` get their outcome
  from :func:`record_run`.
* ``registry_db=None`` (**collect mode**, SPEC §12): nothing is written anywhere. The registrations
  stay on the strategy, ``stats._strategy.registrations`` (a :class:`Registrations`: frames ready for
  ``PatternRegistry.register_patterns`` / ``record_outcomes`` / ``log_predictions``), for a driver to
  write later with :func:`write_registrations` or :func:`record_run`. That is how a work unit on
  another process or machine stays a pure function: it returns frames, the driver holds the registry.

With the ML mixin on, the **prediction log** travels with the registrations: every scoring event
of the run (``stats._strategy.predictions``: pattern, model version, mode, the three heads, the
decision, ``acting``, top contributions; SPEC §5) is written by the same end-of-run write, under the
run's ``run_id``, or collected with them.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from ._ml import FEATURE_PREFIXES
from ._signals import _SignalMixin

_PRICE_COLUMNS = ("p1_price", "p2_price", "p3_price", "entry", "stop", "target", "atr", "fill_price", "exit_price")
_OUTCOME_COLUMNS = ["pattern_id", "label", "pnl_pct", "r_multiple", "exit_time", "label_source"]

__all__ = ["PatternRegistryMixin", "Registrations", "write_registrations", "record_run"]


@dataclass
class Registrations:
    """What one backtest registers, as frames; :func:`write_registrations` writes them.

    ``batches`` is a list of ``(patterns, features, feature_schema)``: each goes to
    ``PatternRegistry.register_patterns(patterns, features, run_id=run_id, feature_schema=...)``
    (the patterns frames carry ``ml_confidence``, ``ml_decision`` and, where known, the
    triple-barrier outcome columns). ``outcomes`` holds the trades' outcomes (``label_source
    "trade"``, ``trade_outcome`` in percent) for ``PatternRegistry.record_outcomes``. Plain frames,
    so a work unit can return them across processes or a Dask cluster.
    """

    batches: list[tuple[pd.DataFrame, pd.DataFrame, str | None]] = field(default_factory=list)
    outcomes: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=_OUTCOME_COLUMNS))
    run_id: str | None = None
    predictions: pd.DataFrame | None = None   # the scoring events, for PatternRegistry.log_predictions

    @property
    def patterns(self) -> pd.DataFrame:
        """Every registered pattern row, all batches together (for a look; write with the batches)."""
        frames = [p for p, _, _ in self.batches if len(p)]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["pattern_id"])


def write_registrations(registrations: Registrations, registry_db, *, run_id: str | None = None) -> int:
    """Write collected :class:`Registrations` to the registry; return the number of patterns written.

    ``run_id`` replaces the run id the strategy chose (e.g. the driver's own). Idempotent: the
    registry upserts patterns and prediction events and ranks outcomes, so writing twice changes nothing.
    """
    from ..registry import PatternRegistry

    rid = run_id or registrations.run_id
    n = 0
    with PatternRegistry(registry_db) as reg:
        for pats, feats, schema in registrations.batches:
            n += len(reg.register_patterns(pats, feats, run_id=rid, feature_schema=schema))
        if len(registrations.outcomes):
            reg.record_outcomes(registrations.outcomes, label_source="trade")
        if registrations.predictions is not None and len(registrations.predictions):
            reg.log_predictions(registrations.predictions, run_id=rid)
    return n


class PatternRegistryMixin(_SignalMixin):
    """Registers every signal with its features; writes once after the last bar (or collects, see above)."""

    register_patterns = True
    registry_db = "results/experiments.db"
    run_id = None
    """The run id the registrations and prediction events are written under (``qml run`` passes its
    own); None = ``<StrategyClass>-<UTC time>``."""
    price_unit = 1.0
    """The ``fractional_unit`` of a ``FractionalBacktest`` running the strategy (its prices are scaled
    by it, and backtesting.py tells the strategy nothing): ``FractionalBacktest(df, S,
    fractional_unit=u).run(price_unit=u)`` stores prices in the instrument's own units.
    :func:`record_run` warns when the trades show a scale other than this one."""

    def _prepare(self) -> None:
        super()._prepare()
        self._run_id = self.run_id or f"{type(self).__name__}-{pd.Timestamp.now(tz='UTC'):%Y%m%dT%H%M%S%f}"
        self._written = False

    @cached_property
    def _market_features(self) -> pd.DataFrame:
        from ..features.cache import market_features

        return market_features(self.data.df)  # memoized per series: optimize reruns reuse it

    def _signal_features(self, row: dict) -> dict:
        feats = getattr(self, "pattern_features", None)
        pid = row["pattern_id"]
        if feats is not None and pid in feats.index:
            return feats.loc[pid].to_dict()
        own = {k: v for k, v in row.items() if str(k).startswith(FEATURE_PREFIXES)}
        bar = int(row["detection_bar"])
        return {**self._market_features.iloc[bar].to_dict(), **own}

    @property
    def registrations(self) -> Registrations | None:
        """This run's registrations (None when ``register_patterns`` is off); see :class:`Registrations`.

        Read after the run it includes the outcomes of trades that ``finalize_trades`` closed.
        """
        if not self.register_patterns:
            return None
        extra = self._extra_registrations()
        known = set(extra["patterns"]["pattern_id"]) if extra is not None else set()
        batches = []
        if extra is not None:
            batches.append((self._unscaled(extra["patterns"]), extra["features"],
                            getattr(self, "feature_schema", None)))
        signals = [s for s in self._signals if s["row"]["pattern_id"] not in known]
        if signals:
            pats = pd.DataFrame([s["row"] for s in signals])
            pats["ml_confidence"] = np.asarray([s["ml_confidence"] for s in signals], float)
            pats["ml_decision"] = [s["decision"] for s in signals]
            feats = pd.DataFrame([self._signal_features(s["row"]) for s in signals])
            batches.append((self._unscaled(pats), feats, None))
        return Registrations(batches, self._trade_outcomes(), self._run_id, getattr(self, "predictions", None))

    def _on_last_bar(self) -> None:
        super()._on_last_bar()
        if self.register_patterns and self.registry_db is not None and not self._written:
            write_registrations(self.registrations, self.registry_db)
            self._written = True

    def _trade_outcomes(self) -> pd.DataFrame:
        pids = self.trade_pattern_ids()
        rows = [{"pattern_id": pid, "pnl_pct": t.pl_pct * 100, "exit_time": _time_or_none(t.exit_time)}
                for t, pid in zip(self.closed_trades, pids) if pid is not None]
        return _outcome_frame(pd.DataFrame(rows))

    def _unscaled(self, pats: pd.DataFrame) -> pd.DataFrame:
        """Prices back in the instrument's own units when a FractionalBacktest scaled them."""
        if float(self.price_unit) == 1.0:
            return pats
        pats = pats.copy()
        cols = [c for c in _PRICE_COLUMNS if c in pats.columns]
        pats[cols] = pats[cols] / float(self.price_unit)
        return pats

    def _extra_registrations(self) -> dict | None:
        """Patterns to register besides the signals: ``{"patterns": frame, "features": frame}``.

        QMLStrategy returns every detected pattern; outcome columns in the patterns frame
        (``label``, ``pnl_pct``, ``r_multiple``, ``exit_time``) are stored by the same upsert as
        triple-barrier outcomes (see :meth:`PatternRegistry.register_patterns`).
        """
        return None


def _time_or_none(t):
    return t if isinstance(t, (pd.Timestamp, np.datetime64)) else None


def _outcome_frame(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty:
        return pd.DataFrame(columns=_OUTCOME_COLUMNS)
    return pd.DataFrame({
        "pattern_id": df["pattern_id"].astype(str),
        "label": (df["pnl_pct"] > 0).astype(float),
        "pnl_pct": df["pnl_pct"].astype(float),
        "r_multiple": np.nan,
        "exit_time": pd.to_datetime(df["exit_time"]),
        "label_source": "trade",
    })


def record_run(stats: pd.Series, registry_db) -> int:
    """Write a finished run's registrations and trade outcomes to ``registry_db``; return the trades recorded.

    For a run of the mixins, the trades are joined to their patterns through the mixins' own
    record (a user's own order tags stay as they were), including the trades that
    ``finalize_trades`` closed after the last ``next()``; a run in collect mode
    (``registry_db=None``) has its registrations written here first. For any other strategy the
    trades' ``Tag`` is taken as the ``pattern_id`` (unknown ids are skipped). ``trade_outcome`` is
    ``ReturnPct * 100`` (a percent). Called by every ``qml`` command after a run; idempotent.
    """
    from ..registry import PatternRegistry

    strategy = stats["_strategy"]
    if isinstance(strategy, PatternRegistryMixin):
        _check_price_unit(stats, strategy)
        regs = strategy.registrations
        if regs is None:
            return 0
        if strategy.registry_db is None:
            write_registrations(regs, registry_db)
        else:
            with PatternRegistry(registry_db) as reg:
                reg.record_outcomes(regs.outcomes, label_source="trade", skip_unknown=True)
        return len(regs.outcomes)
    t = stats["_trades"]
    if t is None or t.empty or "Tag" not in t:
        return 0
    t = t[t["Tag"].notna()]
    df = pd.DataFrame({"pattern_id": t["Tag"].astype(str), "pnl_pct": t["ReturnPct"] * 100,
                       "exit_time": t["ExitTime"]})
    with PatternRegistry(registry_db) as reg:
        return reg.record_outcomes(_outcome_frame(df), label_source="trade", skip_unknown=True)


def _check_price_unit(stats: pd.Series, strategy: PatternRegistryMixin) -> None:
    """Warn when the trades show prices scaled by another unit than ``price_unit`` (a FractionalBacktest)."""
    t, closed = stats["_trades"], strategy.closed_trades
    if t is None or t.empty or not closed or len(t) != len(closed):
        return
    seen = closed[0].entry_price / float(t["EntryPrice"].iloc[0])
    if not np.isclose(seen, float(strategy.price_unit), rtol=1e-6):
        warnings.warn(f"the strategy saw prices scaled by {seen:g} (a FractionalBacktest?) but price_unit = "
                      f"{strategy.price_unit:g}: the registry holds scaled prices; run with price_unit={seen:g}",
                      stacklevel=3)


