"""One market of a universe run: a pure work unit for :class:`qml_plugin.compute.Scheduler` (SPEC §12).

:func:`market_unit` takes a :class:`MarketSpec` (the frame, the strategy class and its parameters,
the dataset's resolved cash and costs) and returns a :class:`MarketResult`: the baseline backtest's
trades (real backtesting.py), every detected pattern with its features, its triple-barrier outcome,
its R net of costs and its two UTC instants (``known_at_utc``, ``exit_known_at_utc``, see
:mod:`.clock`). It takes **no registry path** and writes nothing: the strategy runs in the registry
mixin's collect mode (``registry_db=None, register_patterns=True``) and the unit returns its
``registrations`` (with the UTC instants added), which the driver alone writes
(:func:`qml_plugin.mixins.write_registrations`), so a Dask cluster needs no shared file system.

Costs (``backtest.costs``) are backtesting.py's: ``commission`` a fraction of the traded value per
side, ``spread`` a fraction of the price paid once per round trip. A pattern's net R is
``r_multiple - (2 * commission + spread) * fill_price / |entry - stop|``, the same cost the backtest
charges, in units of the pattern's risk.

Cash: a backtest gets ``max(backtest.cash, 1000 * highest High)``, so whole units never bind (VXX is
priced near 1e5 in 2009); the result says what it used.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..patterns import label_patterns
from .clock import known_at_utc
from .runs import WarningLog, make_backtest, run_backtest

__all__ = ["MarketSpec", "MarketResult", "market_unit", "units_cash", "MIN_UNITS"]

MIN_UNITS = 1000
"""A backtest's cash buys at least this many units at the dataset's highest price."""


@dataclass(frozen=True)
class MarketSpec:
    """Everything one market's unit needs; no registry, no path that the unit would write to."""

    dataset: str                 # "AAPL_1h"
    ohlcv: pd.DataFrame
    strategy: type
    params: dict
    backtest: dict               # the run config's backtest section
    commission: float = 0.0
    spread: float = 0.0


@dataclass
class MarketResult:
    """What one market gives back to the driver (frames ready for ``register_patterns``)."""

    dataset: str
    symbol: str
    timeframe: str | None
    tz: str
    cash: float
    patterns: pd.DataFrame       # detect_patterns + label_patterns columns + clocks, costs, regime
    features: pd.DataFrame       # index pattern_id, columns = FeatureExtractor.feature_names
    trades: pd.DataFrame         # the baseline backtest's stats._trades, with net R per trade
    registrations: object = None  # the strategy's collected Registrations, ready for write_registrations
    bars: int = 0
    warnings: list[tuple[str, str]] = field(default_factory=list)   # WarningLog.entries


def units_cash(ohlcv: pd.DataFrame, cash: float) -> float:
    """``max(cash, MIN_UNITS * highest High)``: enough that integer units never bind."""
    return float(max(cash, MIN_UNITS * float(ohlcv["High"].max())))


def market_unit(spec: MarketSpec) -> MarketResult:
    """Baseline backtest, patterns, features and outcomes of one market (pure: writes nothing)."""
    df = spec.ohlcv
    log = WarningLog(echo=False)   # its entries reach the driver's log (merge), which shows them once
    cash = units_cash(df, spec.backtest["cash"])
    with log.collect("baseline"):
        bt = make_backtest(df, spec.strategy, spec.backtest, cash=cash, commission=spec.commission,
                           spread=spec.spread)
    stats = run_backtest(bt, log=log, where=spec.dataset, **spec.params, registry_db=None, register_patterns=True,
                         ml_config=None)
    strat = stats._strategy
    pats, feats = strat.patterns, strat.pattern_features
    labeled = label_patterns(df, pats, max_wait=strat.max_wait, max_hold=strat.max_hold)
    out = labeled.copy()
    out["dataset"], out["symbol"], out["timeframe"] = spec.dataset, df.attrs.get("symbol"), df.attrs.get("timeframe")
    if getattr(strat, "pattern_regimes", None) is not None:
        out["regime_at_detection"] = strat.pattern_regimes.to_numpy()
    if feats is None:
        feats = pd.DataFrame(index=pd.Index(pats["pattern_id"].to_numpy(), name="pattern_id"))
    out["known_at_utc"] = known_at_utc(df, out["detection_bar"])
    out["exit_known_at_utc"] = known_at_utc(df, out["exit_bar"])
    out["fill_known_at_utc"] = known_at_utc(df, out["fill_bar"])
    risk = (out["entry"] - out["stop"]).abs().to_numpy(float)
    cost = (2 * spec.commission + spec.spread) * out["fill_price"].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["r_net"] = out["r_multiple"].to_numpy(float) - cost / risk
    out["pnl_net_pct"] = out["pnl_pct"] - (2 * spec.commission + spec.spread) * 100
    trades = _trades_with_r(stats._trades, out)
    trades["entry_time_utc"] = known_at_utc(df, trades["EntryBar"])
    trades["exit_time_utc"] = known_at_utc(df, trades["ExitBar"])
    regs = strat.registrations
    if regs is not None:                 # the registry stores when each pattern and outcome became known
        clocks = out.set_index("pattern_id")[["known_at_utc", "exit_known_at_utc"]]
        for pats_b, _, _ in regs.batches:
            for col in clocks:
                pats_b[col] = clocks[col].reindex(pats_b["pattern_id"]).dt.tz_localize("UTC").to_numpy()
    return MarketResult(spec.dataset, df.attrs.get("symbol"), df.attrs.get("timeframe"), df.attrs.get("tz") or "UTC",
                        cash, out.reset_index(drop=True), feats, trades, regs, len(df), log.entries)


def _trades_with_r(trades: pd.DataFrame, patterns: pd.DataFrame) -> pd.DataFrame:
    """backtesting.py's trades plus ``r_net``: the trade's PnL (costs included) over its pattern's risk."""
    t = trades.copy()
    risk = (patterns["entry"] - patterns["stop"]).abs()
    risk.index = patterns["pattern_id"].to_numpy()
    per_unit = risk.reindex(t["Tag"].astype(str)).to_numpy(float) if len(t) else np.array([])
    with np.errstate(divide="ignore", invalid="ignore"):
        t["r_net"] = t["PnL"].to_numpy(float) / (t["Size"].abs().to_numpy(float) * per_unit)
    return t
