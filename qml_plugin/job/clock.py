"""One clock for a universe: the UTC instant at which a pattern, a fill or an exit became *known* (SPEC §11).

A frame's index stays naive, in its source's clock, and stamps each bar's **start**; a bar is known
when it closes. :func:`qml_plugin.data.bar_close_utc` owns that rule (the dataset's ``attrs["tz"]``,
its bar duration, the session close of daily equity bars, daylight saving). This module only reads it
at the bars a pattern names (``detection_bar``, ``fill_bar``, ``exit_bar``), so whatever crosses
datasets (the out-of-sample guard, retrain dates, purging) compares these instants, never naive stamps.

Instants come back **naive UTC** (``datetime64[ns]``), the form the walk-forward splitter and the guard
compare; ``NaT`` where the bar is missing (a pattern never filled, or not yet exited).

    >>> import pandas as pd
    >>> df = pd.DataFrame({"Close": [1.0, 1.0]}, index=pd.to_datetime(["2020-03-02", "2020-03-03"]))
    >>> df.attrs.update(tz="America/New_York", timeframe="1d", session_close="16:00")
    >>> list(known_at_utc(df, [0, None]))
    [Timestamp('2020-03-02 21:00:00'), NaT]
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..data import bar_close_utc

__all__ = ["known_at_utc"]


def known_at_utc(ohlcv: pd.DataFrame, bars) -> pd.DatetimeIndex:
    """Naive-UTC close of each bar position in ``bars`` (NaN / None / negative = none -> NaT)."""
    b = pd.to_numeric(pd.Series(list(bars) if not isinstance(bars, pd.Series) else bars.to_numpy(), dtype=object),
                      errors="coerce").to_numpy(float)
    ok = np.isfinite(b) & (b >= 0)
    closes = bar_close_utc(ohlcv).tz_convert("UTC").tz_localize(None).as_unit("ns")
    out = np.full(len(b), np.datetime64("NaT"), dtype="datetime64[ns]")
    out[ok] = closes.values[b[ok].astype(np.int64)]
    return pd.DatetimeIndex(out)
