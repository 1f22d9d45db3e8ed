"""One clock: bar lengths, and the UTC instant at which each bar closed (SPEC §11 "One clock").

A frame's index is naive, in its source's clock (``df.attrs["tz"]``, UTC when absent), and stamps
each bar's **start**; a bar is known only when it closes. Whatever crosses datasets (the
out-of-sample guard, retrain dates, purging) compares :func:`bar_close_utc` instants, never naive
stamps. Time-zone arithmetic is left to pandas and the standard library's ``zoneinfo``.
:mod:`qml_plugin.data` re-exports every public name here.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from .errors import DataError

__all__ = ["bar_close_utc", "bar_duration", "timeframe_duration", "pandas_rule"]

_UNITS = {"s": "s", "sec": "s", "m": "min", "min": "min", "t": "min", "h": "h", "d": "D", "w": "W"}
_RULE_RE = re.compile(r"^\s*(\d*)\s*(s|sec|m|min|t|h|d|w)\s*$", re.IGNORECASE)


def pandas_rule(rule: str) -> str:
    """A bar-length label as pandas spells it today (``"1d"`` -> ``"1D"``, ``"4H"`` -> ``"4h"``)."""
    m = _RULE_RE.match(str(rule))
    return f"{m.group(1) or 1}{_UNITS[m.group(2).lower()]}" if m else str(rule)


def timeframe_duration(timeframe: str | None) -> pd.Timedelta | None:
    """A timeframe label as a duration (``"4h"`` -> 4 hours, ``"1d"`` -> 1 day); None if it is not one.

    >>> timeframe_duration("1d"), timeframe_duration("15min"), timeframe_duration("ME")
    (Timedelta('1 days 00:00:00'), Timedelta('0 days 00:15:00'), None)
    """
    if not timeframe:
        return None
    rule = pandas_rule(timeframe)
    if rule.endswith("W"):
        return pd.Timedelta(weeks=int(rule[:-1]))
    try:
        return pd.Timedelta(pd.tseries.frequencies.to_offset(rule).nanos, unit="ns")
    except (ValueError, TypeError):
        return None


def bar_duration(df: pd.DataFrame) -> pd.Timedelta:
    """The typical spacing of the bars (median of the gaps), e.g. ``Timedelta("1h")``; 0 for < 2 bars."""
    if len(df) < 2:
        return pd.Timedelta(0)
    return pd.Timedelta(int(np.median(np.diff(df.index.as_unit("ns").asi8))), unit="ns")


def bar_close_utc(df: pd.DataFrame) -> pd.DatetimeIndex:
    """The UTC instant at which each bar closed, i.e. when its values became known.

    The rule: the index stamps each bar's **start** in the source's clock (``df.attrs["tz"]``,
    UTC when absent). A bar closes at its start plus its duration (the ``timeframe`` attr, else
    the median gap between bars), added on the wall clock of that zone and then converted to UTC,
    so daylight saving is handled (a New York 15:00 hourly bar closes at 20:00 UTC in July and
    21:00 UTC in January). Bars of a day or longer with a ``session_close`` attr (US equities:
    ``"16:00"`` New York) close at that time of their last day instead of at midnight. A wall
    time that occurs twice (the autumn hour) is read as the later instant, one that does not exist
    (the spring hour) is shifted forward: never earlier than the truth.

        >>> from qml_plugin.data import load_ohlcv
        >>> spy = load_ohlcv("SPY_1d").loc["2020-07-01":"2020-07-01"]
        >>> str(bar_close_utc(spy)[0])
        '2020-07-01 20:00:00+00:00'
        >>> str(bar_close_utc(load_ohlcv("EURUSD_1h").iloc[:1])[0])
        '2007-01-01 22:00:00+00:00'
    """
    tz = df.attrs.get("tz") or "UTC"
    step = timeframe_duration(df.attrs.get("timeframe")) or bar_duration(df)
    if not step:
        where = f"{df.attrs['source']}: " if df.attrs.get("source") else ""
        raise DataError(f"{where}cannot tell the bar duration: set df.attrs['timeframe'] (e.g. '1h')")
    start = pd.DatetimeIndex(df.index)
    session = df.attrs.get("session_close")
    if session and step >= pd.Timedelta(days=1):
        close = (start + step - pd.Timedelta(1, "ns")).normalize() + pd.Timedelta(f"{session}:00")
    else:
        close = start + step
    close = close.tz_localize(tz, ambiguous=np.zeros(len(close), dtype=bool), nonexistent="shift_forward")
    return close.tz_convert("UTC").rename("close_utc")
