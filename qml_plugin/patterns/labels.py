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
``label`` = 1 when ``r_multiple > 0``, 0 otherwise, NaN when not filled or still open;
``stop_first`` = 1 when the stop ended the trade, 0 for a target or a timeout, NaN like ``label``
(the target of the model's ``stop_risk`` head).

``max_wait`` / ``max_hold`` default to the values the patterns were detected with
(``patterns.attrs["params"]``, set by ``detect_patterns``), so an outcome always agrees with the
horizons hashed into its ``pattern_id``; a frame without them (built by hand) uses the
:class:`~.qml.QMLParams` defaults.

    >>> from qml_plugin.data import load_ohlcv
    >>> from qml_plugin.patterns import QMLParams, detect_patterns
    >>> df = load_ohlcv("EURUSD_1h").iloc[:5000]
    >>> lab = label_patterns(df, detect_patterns(df, QMLParams(max_wait=3)))
    >>> bool(((lab.fill_bar - lab.detection_bar).dropna() <= 3).all())
    True
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..data import validate_ohlcv
from ..errors import DataError
from . import _kernels
from ._checks import positive_int
from .qml import QMLParams, params_of

__all__ = ["label_patterns", "outcome_one", "OUTCOME_COLUMNS"]

outcome_one = _kernels.outcome_one
"""The fill-and-exit rules above for one pattern, as a compiled kernel other compiled code can call
(``outcome_one(open, high, low, t, direction, entry, stop, target, max_wait, max_hold) -> (fill_bar,
fill_price, exit_bar, exit_price, reason)``); :func:`label_patterns` applies it to every pattern."""

OUTCOME_COLUMNS = ["status", "fill_bar", "fill_price", "exit_bar", "exit_price", "exit_reason",
                   "exit_time", "r_multiple", "pnl_pct", "label", "stop_first"]
"""Columns :func:`label_patterns` adds (``exit_time`` is when the outcome became known)."""

_REASONS = np.array([None, "stop", "target", "timeout"], dtype=object)


def label_patterns(ohlcv: pd.DataFrame, patterns: pd.DataFrame, *, max_wait: int | None = None,
                   max_hold: int | None = None) -> pd.DataFrame:
    """Return ``patterns`` with the outcome columns added (see the module docstring for the rules).

    ``max_wait`` (bars the limit entry stays live) and ``max_hold`` (bars a trade may stay open):
    None = the values ``patterns`` were detected with.
    """
    detected = params_of(patterns) or QMLParams()
    max_wait = positive_int("max_wait", detected.max_wait if max_wait is None else max_wait)
    max_hold = positive_int("max_hold", detected.max_hold if max_hold is None else max_hold)
    validate_ohlcv(ohlcv)
    need = ["detection_bar", "direction", "entry", "stop", "target"]
    missing = [c for c in need if c not in patterns.columns]
    if missing:
        raise DataError(f"patterns lack columns {missing}; pass the frame detect_patterns returns")
    o, h, l = (ohlcv[k].to_numpy(np.float64) for k in ("Open", "High", "Low"))
    t = patterns["detection_bar"].to_numpy(np.int64)
    if len(t) and (t.min() < 0 or t.max() >= len(ohlcv)):
        raise DataError(f"detection_bar out of range 0..{len(ohlcv) - 1}: patterns from another frame?")
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
    out["stop_first"] = np.where(np.isnan(xp), np.nan, (reason == 1).astype(float))
    return out
