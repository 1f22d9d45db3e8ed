"""Swing points: the alternating sequence of confirmed highs and lows that QML patterns are made of.

A bar ``i`` is a *swing high* when its High beats the ``n`` bars before it strictly and the ``n``
bars after it weakly (``High[i] > max(High[i-n:i])`` and ``High[i] >= max(High[i+1:i+n+1])``);
a swing low mirrors this on Low. Because it needs ``n`` bars of future, a swing at ``i`` is only
*known* at ``confirmed_bar = i + n``.

The sequence alternates high, low, high... and is updated in order of confirmation: a new swing of
the same kind as the last one replaces it only when strictly more extreme, else it is dropped. An
outside bar that is both a swing high and a swing low adds first the kind that alternates with the
last swing (the high first on an empty sequence).

    >>> from qml_plugin.data import load_ohlcv
    >>> sw = swing_points(load_ohlcv("EURUSD_1h").iloc[:500], n=3)
    >>> list(sw.columns), bool((sw["confirmed_bar"] == sw["bar"] + 3).all())
    (['bar', 'time', 'confirmed_bar', 'kind', 'price', 'replaced_at_bar'], True)

The heavy lifting is one cached numba kernel (``_kernels.scan``) shared with pattern detection.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..data import validate_ohlcv
from . import _kernels
from ._checks import positive_int

__all__ = ["swing_points", "atr14", "wilder_atr"]


def atr14(ohlcv: pd.DataFrame) -> pd.Series:
    """Wilder's ATR(14) in price units; NaN before bar 13 (see SPEC §2 for the exact recursion).

    >>> from qml_plugin.data import load_ohlcv
    >>> round(float(atr14(load_ohlcv("EURUSD_1h")).iloc[13]), 6) > 0
    True
    """
    h, l, c = (ohlcv[k].to_numpy(np.float64) for k in ("High", "Low", "Close"))
    return pd.Series(wilder_atr(h, l, c), index=ohlcv.index, name="ATR14")


def wilder_atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, *, n: int = 14) -> np.ndarray:
    """Wilder's ATR(n) of plain float arrays: the one ATR of the project (detector and features).

    ``TR[0] = High[0] - Low[0]``, ``TR[i] = max(High-Low, |High-Close[i-1]|, |Low-Close[i-1]|)``,
    ``ATR[n-1] = mean(TR[0..n-1])``, ``ATR[i] = ((n-1) ATR[i-1] + TR[i]) / n``; NaN before bar n-1.

    >>> wilder_atr(np.array([2.0, 3.0, 4.0]), np.array([1.0, 1.0, 2.0]), np.array([1.5, 2.0, 3.0]), n=2).tolist()
    [nan, 1.5, 1.75]
    """
    n = positive_int("n", n)
    return _kernels.atr(*(np.ascontiguousarray(x, dtype=np.float64) for x in (high, low, close)), n)


def swing_points(ohlcv: pd.DataFrame, *, n: int = 3) -> pd.DataFrame:
    """Every swing ever accepted into the alternating sequence, in the order accepted.

    Columns: ``bar`` (position of the extreme), ``time``, ``confirmed_bar`` (``bar + n``, when it
    became known), ``kind`` (``"high"``/``"low"``), ``price`` (the High or Low), ``replaced_at_bar``
    (confirmed bar of the swing that replaced it; NaN if none).
    """
    n = positive_int("swing_n", n)
    validate_ohlcv(ohlcv)
    h, l, c = (ohlcv[k].to_numpy(np.float64) for k in ("High", "Low", "Close"))
    atr = wilder_atr(h, l, c)
    bar, kind, price, conf, rep, _ = _kernels.scan(h, l, c, atr, n, False, 0.0, 0)
    return pd.DataFrame({
        "bar": bar,
        "time": ohlcv.index[bar],
        "confirmed_bar": conf,
        "kind": np.where(kind == _kernels.HIGH, "high", "low"),
        "price": price,
        "replaced_at_bar": np.where(rep >= 0, rep, np.nan),
    })
