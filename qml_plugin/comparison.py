"""Is the ML filter better than chance? The random-filter band, and mode trades without an engine.

A filter that keeps 15 % of the technical candidates changes the trade list a lot, and some of that
change is luck. :func:`random_filter_band` answers "what would a filter that keeps the same share
of candidates *at random* have done?" for many seeds, with the same one-position rule
(:func:`qml_plugin.tradesim.select_trades`) and the same metrics
(:func:`qml_plugin.tradesim.trade_metrics`). ``qml run`` prints its median and 5-95 % band next to
the real ML modes; the null and planted-signal tests use it to check that ML beats chance only
when there is something to learn.

:func:`mode_trades` gives the trades of a mode from the labeled patterns directly (the simulator
reproduces backtesting.py's ``QMLStrategy`` trades exactly; a test checks it), for studies that
need many runs, such as the null test over many seeds.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .filter import decide, random_filter_mask
from .tradesim import Market, daily_equity, levels_placeable, select_trades, trade_metrics, trade_selector

__all__ = ["mode_trades", "random_filter_band", "placeable"]


def placeable(labeled: pd.DataFrame) -> np.ndarray:
    """Patterns whose levels backtesting.py accepts (:func:`.tradesim.levels_placeable`)."""
    return levels_placeable(*(labeled[k].to_numpy() for k in ("direction", "entry", "stop", "target")))


def _in_period(labeled: pd.DataFrame, start) -> np.ndarray:
    if start is None:
        return np.ones(len(labeled), bool)
    return (labeled["detection_time"] >= start).to_numpy()


def mode_trades(labeled: pd.DataFrame, proba, *, mode: str | None, min_score: float = 0.5, ml_weight: float = 0.3,
                confidence_threshold: float = 0.5, max_wait: int = 20, start=None) -> pd.DataFrame:
    """Closed trades (rows of ``labeled``) a one-position strategy makes under ``mode``, entered from ``start``."""
    take, score = decide(labeled["validity_score"], proba, mode=mode, min_score=min_score, ml_weight=ml_weight,
                         confidence_threshold=confidence_threshold)
    chosen = select_trades(labeled, take & placeable(labeled), score, max_wait=max_wait)
    closed = labeled["exit_bar"].notna().to_numpy()
    return labeled[chosen & closed & _in_period(labeled, start)]


def random_filter_band(labeled: pd.DataFrame, proba, *, ohlcv: pd.DataFrame | Market, min_score: float = 0.5,
                       confidence_threshold: float = 0.5, max_wait: int = 20, start=None, end=None, seeds: int = 200,
                       ) -> tuple[pd.DataFrame, float, pd.Series]:
    """Metrics of ``seeds`` random filters with the ``filter`` mode's pass rate among technical candidates.

    Before ``start`` (no model yet) the random filter, like every mode, equals the technical rule.
    ``ohlcv`` is the series ``labeled`` was detected on (each seed is scored on its daily
    mark-to-market equity, :func:`qml_plugin.tradesim.trade_metrics`).
    Returns ``(per_seed_metrics, pass_rate, daily_equity_of_the_median_seed)``.
    """
    v = labeled["validity_score"]
    technical, _ = decide(v, proba, mode=None, min_score=min_score)
    filtered, _ = decide(v, proba, mode="filter", min_score=min_score, confidence_threshold=confidence_threshold)
    period = _in_period(labeled, start)
    cand = technical & period
    rate = float((filtered & period).sum() / max(cand.sum(), 1))
    ok = placeable(labeled)
    counted = labeled["exit_bar"].notna().to_numpy() & period     # closed trades entered in the period
    before = technical & ~period
    select = trade_selector(labeled, v.to_numpy(float), max_wait=max_wait)   # prepared once for all seeds
    market = Market.of(ohlcv)
    fills = labeled[["fill_bar", "exit_bar", "fill_price", "exit_price", "direction"]]
    rows, picks = [], []
    for seed in range(seeds):
        traded = select((random_filter_mask(cand, rate, seed) | before) & ok) & counted
        rows.append(trade_metrics(fills[traded], market, start=start, end=end))
        picks.append(traded)
    res = pd.DataFrame(rows)
    k = int(np.argmin(np.abs(res["return_pct"].to_numpy() - res["return_pct"].median())))
    return res, rate, daily_equity(fills[picks[k]], market, start=start, end=end)
