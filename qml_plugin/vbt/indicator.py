"""The QML detector as a vectorbt indicator: one column of signals per parameter combination.

    >>> from qml_plugin import load_ohlcv
    >>> from qml_plugin.vbt import QML
    >>> df = load_ohlcv("EURUSD_1h").iloc[:6000]
    >>> qml = QML.run(df["Open"], df["High"], df["Low"], df["Close"],
    ...               swing_n=[2, 3, 5], head_min_atr=[0.3, 0.5], param_product=True)
    >>> qml.entries.sum().shape          # patterns per combination (6 columns)
    (6,)
    >>> bool(qml.stop_price[qml.entries].notna().any().all())
    True

``vbt.IndicatorFactory`` declares the shape (inputs, parameters, outputs) and does the
broadcasting, the parameter product and the column labels; the work is :func:`detect_arrays`, the
engine-neutral core that ``detect_patterns`` also uses (its numba kernels are ``cache=True``).
Nothing is re-implemented here: this module only turns a pattern table into per-bar arrays.

Parameters are every :class:`~qml_plugin.patterns.QMLParams` field, so one column maps to one
``QMLParams``. ``max_wait``, ``max_hold`` and ``min_score`` do not change what is detected; they
are parameters so that a column can be handed to :func:`qml_plugin.vbt.backtest` unchanged, and
``min_score`` drives the ``passes`` output.

Outputs (aligned with the input bars; NaN / 0 / False where no pattern was detected):

=================  =====  ==========================================================================
``entries``        bool   True at a pattern's ``detection_bar`` (the bar its limit order goes out)
``direction``      int    +1 bullish (buy), -1 bearish (sell), 0 none
``entry_price``    float  limit price of the entry (the QML level, shifted by ``entry_offset_atr``)
``stop_price``     float  stop beyond the head
``target_price``   float  target (``target="swing"`` or ``"rr"``)
``validity_score`` float  rule-based technical score in [0, 1]
``passes``         bool   the technical rule: ``validity_score >= min_score`` and levels a broker
                          accepts (target beyond entry, stop on the other side)
=================  =====  ==========================================================================

**Two patterns on one bar** (a bullish and a bearish one, or two heads of one swing sequence): the
indicator shows the one with the higher ``validity_score``, then the earlier ``p1_bar``, the rule
``QMLStrategy`` uses among the patterns it trades. The per-bar view therefore drops the other one;
:func:`qml_plugin.vbt.backtest` and :func:`qml_plugin.vbt.sweep` work from the full pattern table, so
that a tradable runner-up is still traded when the winner is not (exactly as in backtesting.py).

``open`` is taken for the usual OHLC signature but not used: detection reads High, Low and Close.
Inputs must be free of NaN (one column per instrument; align and drop gaps first).
"""
from __future__ import annotations

import numpy as np
import vectorbt as vbt

from ..errors import DataError
from ..patterns import QMLParams
from ..patterns.qml import detect_arrays
from ..tradesim import levels_placeable, selection_order

__all__ = ["QML", "OUTPUT_NAMES", "one_pattern_per_bar"]

OUTPUT_NAMES = ["entries", "direction", "entry_price", "stop_price", "target_price", "validity_score", "passes"]
"""Outputs of :data:`QML`, in order: ``QML.run(...).entry_price`` etc."""


def one_pattern_per_bar(detection_bar: np.ndarray, score: np.ndarray, p1_bar: np.ndarray) -> np.ndarray:
    """Indices of the patterns kept when a bar holds one: higher ``score`` first, then earlier ``p1_bar``.

        >>> one_pattern_per_bar(np.array([5, 5, 9]), np.array([0.4, 0.7, 0.1]), np.array([1, 2, 3]))
        array([1, 2])
    """
    order = selection_order(detection_bar, score, p1_bar)
    t = detection_bar[order]
    first = np.r_[True, t[1:] != t[:-1]] if len(t) else np.zeros(0, bool)
    return order[first]


def _one_column(high: np.ndarray, low: np.ndarray, close: np.ndarray, params: QMLParams) -> tuple:
    n = high.shape[0]
    entries = np.zeros(n, np.bool_)
    direction = np.zeros(n, np.int64)
    levels = np.full((4, n), np.nan)
    passes = np.zeros(n, np.bool_)
    arr = detect_arrays(high, low, close, params)
    keep = one_pattern_per_bar(arr["detection_bar"], arr["validity_score"], arr["p1_bar"])
    t, d = arr["detection_bar"][keep], arr["direction"][keep]
    entry, stop, target, score = (arr[k][keep] for k in ("entry", "stop", "target", "validity_score"))
    entries[t] = True
    direction[t] = d
    levels[:, t] = entry, stop, target, score
    passes[t] = (score >= params.min_score) & levels_placeable(d, entry, stop, target)
    return entries, direction, levels[0], levels[1], levels[2], levels[3], passes


def _apply(open_, high, low, close, *values):
    """One parameter combination over every input column (a loop over columns, never over bars)."""
    params = QMLParams(**dict(zip(QMLParams.fields(), values, strict=True)))
    high, low, close = (np.asarray(x, dtype=np.float64) for x in (high, low, close))
    if np.isnan(high).any() or np.isnan(low).any() or np.isnan(close).any():
        raise DataError("QML.run got NaN in high/low/close: align the instruments and drop missing bars first")
    cols = [_one_column(high[:, j], low[:, j], close[:, j], params) for j in range(close.shape[1])]
    return tuple(np.column_stack([c[k] for c in cols]) for k in range(len(OUTPUT_NAMES)))


QML = vbt.IndicatorFactory(
    class_name="QML",
    short_name="qml",
    module_name=__name__,
    input_names=["open", "high", "low", "close"],
    param_names=QMLParams.fields(),
    output_names=OUTPUT_NAMES,
).from_apply_func(_apply, **{f: getattr(QMLParams(), f) for f in QMLParams.fields()})
"""vectorbt indicator of QML patterns; parameters = every ``QMLParams`` field (see the module docstring)."""
