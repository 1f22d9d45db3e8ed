"""Calendar features of every bar (``temp_``): cyclic time of day / week / year and trading sessions.

Cyclic quantities are encoded as sine and cosine pairs, so 23:00 sits next to 00:00 and December
next to January. Timestamps are read as UTC (the shipped data are); the session flags use the
bar's opening hour: Asia 00-09, London 07-16, New York 13-22, and the London/New York overlap
13-16 UTC. On daily bars the time-of-day features are constant, which is harmless. A frame
without a DatetimeIndex gets NaN calendar features.

The pattern-timing ``temp_`` features (pattern duration in bars and days) are per pattern and live
in :mod:`.geometry`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .catalog import Add
from .indicators import Bars, div, roll

__all__ = ["calendar_features"]

_SESSIONS = (("asia", 0, 9), ("london", 7, 16), ("newyork", 13, 22), ("overlap", 13, 16))


def _clock(b: Bars) -> dict[str, np.ndarray]:
    def build() -> dict[str, np.ndarray]:
        idx = b.index
        if not isinstance(idx, pd.DatetimeIndex):
            nan = np.full(b.n, np.nan)
            return {"hour": nan, "weekday": nan, "month": nan, "day": nan, "days": nan, "gap": nan}
        return {"hour": (idx.hour + idx.minute / 60.0).to_numpy(np.float64),
                "weekday": idx.day_of_week.to_numpy(np.float64),
                "month": (idx.month - 1).to_numpy(np.float64),
                "day": (idx.day - 1).to_numpy(np.float64),
                "days": idx.days_in_month.to_numpy(np.float64),
                "gap": np.diff(idx.asi8, prepend=idx.asi8[:1]).astype(np.float64)}

    return b.memo("clock", build)


def _cycle(x: np.ndarray, period: np.ndarray | float, fn) -> np.ndarray:
    return fn(2.0 * np.pi * x / period)


def calendar_features(b: Bars, add: Add) -> None:
    """``temp_``: when the bar happens (time of day, weekday, month, session) and the gap before it."""
    for key, period, what in (("hour", 24.0, "hour of day (UTC)"), ("weekday", 7.0, "day of week"),
                              ("month", 12.0, "month of year")):
        for fname, fn in (("sin", np.sin), ("cos", np.cos)):
            add(f"temp_{key}_{fname}", f"{fname} of the {what}, as an angle on a {period:g}-step circle",
                lambda key=key, period=period, fn=fn: _cycle(_clock(b)[key], period, fn))
    for fname, fn in (("sin", np.sin), ("cos", np.cos)):
        add(f"temp_monthday_{fname}", f"{fname} of the day within the month, as an angle on the month's circle",
            lambda fn=fn: _cycle(_clock(b)["day"], _clock(b)["days"], fn))
    for name, start, end in _SESSIONS:
        add(f"temp_session_{name}", f"1 if the bar opens in the {name} session ({start:02d}-{end:02d} UTC), else 0",
            lambda start=start, end=end: np.where(np.isnan(_clock(b)["hour"]), np.nan,
                                                  (_clock(b)["hour"] >= start) & (_clock(b)["hour"] < end)))
    add("temp_bar_gap", "time since the previous bar / the smallest spacing of the last 100 bars (1 = regular)",
        lambda: _gap(b))


def _gap(b: Bars) -> np.ndarray:
    gap = _clock(b)["gap"].copy()
    gap[:1] = np.nan
    return div(gap, roll(gap, 100, 1).min().to_numpy())
