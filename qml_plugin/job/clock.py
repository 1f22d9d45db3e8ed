"""One clock for a universe: the UTC instant at which a bar is *known* (closed), SPEC §11.

A frame's index stays naive, in its source's clock (``df.attrs["tz"]``: ``"America/New_York"`` for US
equities, ``"UTC"`` for OANDA and Coinbase; absent = UTC), and stamps each bar's **start**. Whatever
crosses datasets (the out-of-sample guard, retrain dates, purging) compares the instants returned
here, never naive stamps:

* an intraday bar is known at its start plus its duration (an hourly equity bar stamped 09:00 covers
  09:30-10:00 and closes at 10:00, so the rule holds for the session's first bar too);
* a daily bar of a dataset with a local exchange clock (any tz other than UTC) is known at that
  day's session close, 16:00 local; a daily UTC bar (FX, crypto) at its start plus one day.

Instants come back as naive UTC timestamps (``datetime64[ns]``), the form the walk-forward splitter
and the guard already compare. Time-zone arithmetic is left to pandas (DST included).

    >>> import pandas as pd
    >>> df = pd.DataFrame(index=pd.to_datetime(["2020-03-02", "2020-03-03"]))
    >>> df.attrs["tz"] = "America/New_York"
    >>> list(bar_close_utc(df, [0]))
    [Timestamp('2020-03-02 21:00:00')]
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..data import bar_duration

__all__ = ["bar_close_utc", "SESSION_CLOSE"]

SESSION_CLOSE = pd.Timedelta(hours=16)
"""Local time at which a daily bar of an exchange-clock dataset closes (US equities: 16:00 New York)."""


def bar_close_utc(ohlcv: pd.DataFrame, bars) -> pd.DatetimeIndex:
    """UTC instant (naive) at which each bar in ``bars`` (positions; -1 or NaN = none -> NaT) closed."""
    b = np.asarray(pd.to_numeric(pd.Series(np.asarray(bars, dtype=float)), errors="coerce"), dtype=float)
    ok = np.isfinite(b) & (b >= 0)
    starts = pd.DatetimeIndex(np.where(ok, ohlcv.index.values[np.where(ok, b, 0).astype(np.int64)],
                                       np.datetime64("NaT")))
    tz = ohlcv.attrs.get("tz") or "UTC"
    step = bar_duration(ohlcv)
    local = tz.upper() != "UTC"
    if local and step >= pd.Timedelta(days=1):
        close = starts.normalize() + SESSION_CLOSE
    else:
        close = starts + step
    if local:
        close = (close.tz_localize(tz, ambiguous=np.zeros(len(close), bool), nonexistent="shift_forward")
                 .tz_convert("UTC").tz_localize(None))
    return pd.DatetimeIndex(close).as_unit("ns")
