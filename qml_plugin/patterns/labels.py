"""Outcomes of patterns: a triple barrier on each pattern's own entry, stop and target.

Every detected pattern gets an outcome, traded or not (meta-labeling), with backtesting.py 0.6's
own order rules at commission 0, so a registry label and a backtest trade agree bar for bar:

1. The limit entry is live on bars ``t+1 .. t+max_wait``. It fills on the first bar whose Low
   (buy) / High (sell) reaches ``entry``, at ``min(Open, entry)`` / ``max(Open, entry)``.
   Unfilled -> ``status="expired"`` (also when the data ends inside the waiting window).
2. Stop and target are checked from the bar **after** the fill bar (backtesting.py does not run a
   limit entry's SL/TP in its own fill bar). A bar touching both exits at the stop (SL orders go
   first). A long's stop exits at ``min(Open, stop)``, its target at ``max(Open, target)``;
   mirrored for shorts.
3. A trade still open ``max_hold`` bars after the fill is closed at the next bar's Open
   (``exit_reason="timeout"``). If the data ends first the outcome is *open*: exit fields and
   ``label`` are NaN, never guessed.

``r_multiple = (exit_price - fill_price) * direction / |entry - stop|``;
``pnl_pct = (exit_price / fill_price - 1) * direction * 100`` (backtesting.py's ``ReturnPct * 100``);
``label`` = 1 when ``r_multiple > 0``, 0 otherwise, NaN when not filled or still open.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..data import validate_ohlcv
from . import _kernels

__all__ = ["label_patterns", "outcome_one", "OUTCOME_COLUMNS"]

outcome_one = _kernels.outcome_one
"""The fill-and-exit rules above for one pattern, as a compiled kernel other compiled code can call
(``outcome_one(open, high, low, t, direction, entry, stop, target, max_wait, max_hold) -> (fill_bar,
fill_price, exit_bar, exit_price, reason)``); :func:`label_patterns` applies it to every pattern."""

OUTCOME_COLUMNS = ["status", "fill_bar", "fill_price", "exit_bar", "exit_price", "exit_reason",
                   "exit_time", "r_multiple", "pnl_pct", "label"]
"""Columns :func:`label_patterns` adds (``exit_time`` is when the outcome became known)."""

_REASONS = np.array([None, "stop", "target", "timeout"], dtype=object)


def _positive_int(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    return int(v)


def label_patterns(ohlcv: pd.DataFrame, patterns: pd.DataFrame, max_wait: int = 20,
                   max_hold: int = 100) -> pd.DataFrame:
    """Return ``patterns`` with the outcome columns added (see the module docstring for the rules)."""
    max_wait = _positive_int("max_wait", max_wait)
    max_hold = _positive_int("max_hold", max_hold)
    validate_ohlcv(ohlcv)
    need = ["detection_bar", "direction", "entry", "stop", "target"]
    missing = [c for c in need if c not in patterns.columns]
    if missing:
        raise ValueError(f"patterns lack columns {missing}; pass the frame detect_patterns returns")
    o, h, l = (ohlcv[k].to_numpy(np.float64) for k in ("Open", "High", "Low"))
    t = patterns["detection_bar"].to_numpy(np.int64)
    if len(t) and (t.min() < 0 or t.max() >= len(ohlcv)):
        raise ValueError(f"detection_bar out of range 0..{len(ohlcv) - 1}: patterns from another frame?")
    d = patterns["direction"].to_numpy(np.int64)
    entry, stop, target = (patterns[k].to_numpy(np.float64) for k in ("entry", "stop", "target"))
    status, fb, fp, xb, xp, reason = _kernels.outcomes(o, h, l, t, d, entry, stop, target, max_wait, max_hold)
    out = patterns.copy()
    out["status"] = pd.Series(np.where(status == 1, "filled", "expired"), index=out.index, dtype="str")
    out["fill_bar"] = np.where(fb >= 0, fb, np.nan)
    out["fill_price"] = fp
    out["exit_bar"] = np.where(xb >= 0, xb, np.nan)
    out["exit_price"] = xp
    out["exit_reason"] = pd.Series(_REASONS[reason], index=out.index, dtype="str")
    times = ohlcv.index[np.maximum(xb, 0)]
    out["exit_time"] = pd.Series(times, index=out.index).where(xb >= 0)
    risk = np.abs(entry - stop)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["r_multiple"] = np.where(risk > 0, (xp - fp) * d / risk, np.nan)
        out["pnl_pct"] = (xp / fp - 1.0) * d * 100.0
    out["label"] = np.where(np.isnan(xp), np.nan, (out["r_multiple"].to_numpy() > 0).astype(float))
    return out
