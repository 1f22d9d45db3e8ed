"""Bad prints: bars that pass the OHLC rules but hold a price nobody could have traded (SPEC §1).

Real data keeps its source's errors: AAPL's daily low of 0.378 on 2009-09-21 while it traded near
6.5, a GOOGL low of 0.005. Each makes a false swing, and so a false pattern. This module judges
every bar **causally**, from the bar itself and the bars before it (as judged: a bar already found
bad enters the past repaired), with a fixed rule and no statistics of the whole frame, so the
verdict on bar ``t`` never changes when later bars arrive. The loop over bars is one cached numba
kernel; pandas only wraps it.

**The rule.** Let the *body* be ``[min(Open, Close), max(Open, Close)]`` and ATR the Wilder ATR14
of the previous bars (their mean true range while fewer than 14 exist).

- A **bad wick**: the Low lies at least :data:`WICK_SHARE` (25 %) of the body's low below it, or the
  High that share of the body's high above it, **and** that wick is at least :data:`WICK_ATR`
  (4) ATRs long. The share of price is what separates the two kinds (the AAPL lows are 90-94 % below
  their bodies, AAPL_1h's bad high of 2001-04-05 31 %; the GBPUSD flash crash is 6 %, EURUSD's
  Swiss-franc hour 1.6 %, AAPL's genuine -52 % day has a 10 % wick, the 2010 flash crash 19 %);
  the ATR condition spares a market already moving that much (BAC's genuine 30 % wick of
  2009-02-20 is one ATR). Where recent volatility is zero (a stale stretch of zero-range bars,
  BTCUSD_1h 2018-08-10), the ATR condition holds trivially and the share alone decides; nothing
  divides by the ATR.
- An **implausible body**: a bar with a bad wick whose Close also lies at least half that share
  (12.5 %) from the previous close (GOOGL 2008-09-30: a low of 0.005 and a close 24.5 % down).
  A body alone is never judged: without a bad wick, a big move is taken as real (it may be one).

``repair`` clips a bad wick to the body, and replaces a bar with an implausible body by a flat bar
at the previous close (Open = High = Low = Close); the volume is kept.

    >>> from qml_plugin.data import load_ohlcv
    >>> find_bad_prints(load_ohlcv("AAPL_1d"))[["time", "column", "value"]].head(3)
            time column     value
    0 2001-04-05   High  0.482142
    1 2009-09-21    Low  0.378214
    2 2010-08-31    Low  0.903572
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from numba import njit

from .data import OHLCV_COLUMNS, cut_value, load_ohlcv
from .errors import ConfigError, DataError

__all__ = ["find_bad_prints", "apply_bad_prints", "repair_bad_prints", "bad_print_report", "bad_print_log",
           "BadPrintWarning", "BAD_PRINT_MODES", "BAD_PRINT_COLUMNS", "BAD_PRINT_LOG_COLUMNS", "WICK_SHARE", "WICK_ATR"]

WICK_SHARE = 0.25
"""A wick is bad only when it reaches this share of price beyond the body (0.25 = 25 %)."""
WICK_ATR = 4.0
"""... and only when it is at least this many ATR14 (of the previous bars) long."""
BODY_SHARE = WICK_SHARE / 2
"""A bar with a bad wick also has an implausible body when its close is this share from the previous close."""
BAD_PRINT_MODES = ("warn", "repair", "fail")
"""Values of ``data.bad_prints`` (and the ``bad_prints=`` keyword); ``None`` skips the check."""
BAD_PRINT_COLUMNS = ["time", "column", "value", "body_low", "body_high", "reason", "repair"]
"""Columns of :func:`find_bad_prints`: one row per suspect bar."""

_LOW, _HIGH, _BODY = 1, 2, 4


class BadPrintWarning(UserWarning):
    """Warned by ``bad_prints="warn"``: the data holds bad prints, left as they are."""


@njit(cache=True)
def _judge(o, h, l, c, wick_share, wick_atr, body_share):  # pragma: no cover - compiled
    """Flags per bar (bit 1 low, 2 high, 4 body), the ATR each was judged with, and the repaired bars."""
    n = len(o)
    flags = np.zeros(n, np.int64)
    atr_at = np.full(n, np.nan)
    ro, rh, rl, rc = o.copy(), h.copy(), l.copy(), c.copy()
    atr, tr_sum = np.nan, 0.0
    for i in range(n):
        a = atr if i >= 14 else (tr_sum / i if i > 0 else np.nan)
        atr_at[i] = a
        bl, bh = min(o[i], c[i]), max(o[i], c[i])
        reach = wick_atr * a if a == a else 0.0  # no past: the share alone decides
        f = 0
        if bl - l[i] >= wick_share * bl and bl - l[i] >= reach:
            f |= _LOW
        if h[i] - bh >= wick_share * bh and h[i] - bh >= reach:
            f |= _HIGH
        if f and i > 0 and abs(c[i] - rc[i - 1]) >= body_share * rc[i - 1]:
            f |= _BODY
        if f & _BODY:
            ro[i] = rh[i] = rl[i] = rc[i] = rc[i - 1]
        else:
            if f & _LOW:
                rl[i] = bl
            if f & _HIGH:
                rh[i] = bh
        flags[i] = f
        prev = rc[i - 1] if i > 0 else rc[i]
        tr = max(rh[i] - rl[i], abs(rh[i] - prev), abs(rl[i] - prev)) if i > 0 else rh[i] - rl[i]
        if i < 14:
            tr_sum += tr
            if i == 13:
                atr = tr_sum / 14.0
        else:
            atr = (13.0 * atr + tr) / 14.0
    return flags, atr_at, ro, rh, rl, rc


def _run(df: pd.DataFrame):
    o, h, l, c = (np.ascontiguousarray(df[k].to_numpy(np.float64)) for k in ("Open", "High", "Low", "Close"))
    return (o, h, l, c), _judge(o, h, l, c, WICK_SHARE, WICK_ATR, BODY_SHARE)


def find_bad_prints(df: pd.DataFrame) -> pd.DataFrame:
    """The suspect bars of ``df`` by the module's rule: ``time, column, value, body_low, body_high, reason, repair``.

    One row per suspect bar, in time order; ``column`` is the price at fault (``Low`` or ``High``
    for a bad wick, ``Close`` when the body itself is implausible), ``value`` its price, ``reason``
    the measured distance in percent of price and in ATR14, ``repair`` what ``bad_prints="repair"``
    does with the bar. Causal: the rows up to bar ``c`` are the same on ``df.iloc[:c+1]``.
    """
    (o, h, l, c), (flags, atr, ro, rh, rl, rc) = _run(df)
    rows = []
    for i in np.flatnonzero(flags):
        f, bl, bh = int(flags[i]), min(o[i], c[i]), max(o[i], c[i])
        parts, cols = [], []
        if f & _LOW:
            cols.append(("Low", l[i]))
            parts.append(f"Low {l[i]:.6g} is {100 * (bl - l[i]) / bl:.1f} % below the body "
                         f"({_in_atr(bl - l[i], atr[i])})")
        if f & _HIGH:
            cols.append(("High", h[i]))
            parts.append(f"High {h[i]:.6g} is {100 * (h[i] - bh) / bh:.1f} % above the body "
                         f"({_in_atr(h[i] - bh, atr[i])})")
        if f & _BODY:
            cols.insert(0, ("Close", c[i]))
            parts.append(f"the body is implausible: the Close {c[i]:.6g} is "
                         f"{100 * abs(c[i] / rc[i - 1] - 1):.1f} % from the previous close {rc[i - 1]:.6g}")
            repair = f"flat bar at the previous close {rc[i - 1]:.6g}"
        else:
            repair = " and ".join(f"clip {k} to {v:.6g}" for k, v in (("Low", rl[i]), ("High", rh[i]))
                                  if (k == "Low" and f & _LOW) or (k == "High" and f & _HIGH))
        rows.append({"time": df.index[i], "column": cols[0][0], "value": float(cols[0][1]), "body_low": float(bl),
                     "body_high": float(bh), "reason": "; ".join(parts), "repair": repair})
    cols = {k: [r[k] for r in rows] for k in BAD_PRINT_COLUMNS}
    return pd.DataFrame({
        "time": pd.DatetimeIndex(cols["time"], dtype=df.index.dtype),
        **{k: pd.Series(cols[k], dtype="float64") for k in ("value", "body_low", "body_high")},
        **{k: pd.Series(cols[k], dtype="str") for k in ("column", "reason", "repair")},
    })[BAD_PRINT_COLUMNS]


def _in_atr(dist: float, atr: float) -> str:
    if not np.isfinite(atr):
        return "no past bars to measure the ATR"
    return "zero recent range" if atr <= 0 else f"{dist / atr:.1f} ATR14"


def repair_bad_prints(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` with every bad print repaired, and the changes listed in ``attrs["repairs"]``.

    Each change is ``{"time", "column", "old", "new"}`` (ISO time, prices rounded to 10 digits), so
    the list hashes the same in every run: :func:`~qml_plugin.patterns.detect_patterns` folds it
    into ``pattern_id`` (a repaired dataset has its own identity; without repairs, ids do not change).
    """
    (o, h, l, c), (flags, _, ro, rh, rl, rc) = _run(df)
    out = df.copy()
    repairs = list(df.attrs.get("repairs") or [])
    for col, old, new in (("Open", o, ro), ("High", h, rh), ("Low", l, rl), ("Close", c, rc)):
        changed = np.flatnonzero(old != new)
        out[col] = new
        repairs += [{"time": df.index[i].isoformat(), "column": col, "old": round(float(old[i]), 10),
                     "new": round(float(new[i]), 10)} for i in changed]
    out.attrs = dict(df.attrs)
    if repairs:
        out.attrs["repairs"] = sorted(repairs, key=lambda r: (r["time"], OHLCV_COLUMNS.index(r["column"])))
    return out


def apply_bad_prints(df: pd.DataFrame, *, bad_prints: str | None = "warn") -> pd.DataFrame:
    """Apply a ``data.bad_prints`` policy to ``df`` and return the frame to use.

    ``"warn"``: the frame unchanged, one :class:`BadPrintWarning` naming each flagged timestamp
    once; ``"repair"``: :func:`repair_bad_prints`, and one :class:`BadPrintWarning` saying what was
    repaired (so a run's report lists it); ``"fail"``: a :class:`DataError` naming the
    first bad print; ``None``: unchecked. The table found is kept in ``attrs["bad_prints"]`` (a
    list of records, for the run report, each with the ``action`` taken: ``warn`` or ``repair``) in every
    mode that checks; :func:`bad_print_log` reads it back.
    """
    if bad_prints is None:
        return df
    if bad_prints not in BAD_PRINT_MODES:
        raise ConfigError(f"data.bad_prints: {cut_value(bad_prints)!r} is not allowed; use one of "
                          f"{', '.join(BAD_PRINT_MODES)}")
    found = find_bad_prints(df)
    where = df.attrs.get("source") or df.attrs.get("symbol") or "data"
    if len(found) and bad_prints == "fail":
        first = found.iloc[0]
        raise DataError(f"{where}: bad print at {first['time']}: {first['reason']} (data.bad_prints: fail; "
                        f"{len(found)} in all; 'repair' would {first['repair']})")
    out = repair_bad_prints(df) if bad_prints == "repair" and len(found) else df.copy()
    if len(found) and bad_prints == "warn":
        times = [str(t) for t in found["time"].drop_duplicates()]
        warnings.warn(f"{where}: {len(times)} bad print(s) kept as they are (data.bad_prints: warn; "
                      f"'repair' fixes them, `qml data check` lists them): {_listed(times)}", BadPrintWarning,
                      stacklevel=2)
    if len(found) and bad_prints == "repair":  # said once too, so a run's report lists what was changed
        done = [f"{t} ({r})" for t, r in zip(found["time"], found["repair"])]
        warnings.warn(f"{where}: {len(done)} bad print(s) repaired (data.bad_prints: repair): {_listed(done)}",
                      BadPrintWarning, stacklevel=2)
    out.attrs["bad_prints"] = found.assign(time=found["time"].astype(str), action=bad_prints).to_dict("records")
    return out


BAD_PRINT_LOG_COLUMNS = ["dataset", "time", "column", "value", "problem", "action", "done"]
"""Columns of :func:`bad_print_log`: one row per flagged bar of a run's data."""


def bad_print_log(frames) -> pd.DataFrame:
    """What a run's data held and what was done about it: one row per bad print :func:`apply_bad_prints` flagged.

    ``frames`` maps dataset names to the frames a run loaded (``{"AAPL_1d": df}``); each checked frame
    carries its findings in ``attrs["bad_prints"]``. Columns (:data:`BAD_PRINT_LOG_COLUMNS`): the
    ``dataset``, the bar's ``time`` (its start, in the source's clock, before any resampling), the
    ``column`` at fault and its ``value``, the ``problem`` (:func:`find_bad_prints`' reason), the
    ``action`` (``warn`` or ``repair``; ``fail`` stops the load at the first, so a run never gets that
    far) and what was ``done`` ("kept as it is", or the repair). ``attrs["checked"]`` lists the datasets
    that were checked, so an empty log of checked data says "none found", not "not looked at".

        >>> import warnings
        >>> with warnings.catch_warnings(action="ignore", category=BadPrintWarning):
        ...     frames = {"BAC_1d": load_ohlcv("BAC_1d", bad_prints="repair"),
        ...               "EURUSD_1d": load_ohlcv("EURUSD_1d", bad_prints="repair")}
        >>> log = bad_print_log(frames)
        >>> log[["dataset", "time", "column", "action", "done"]]
          dataset       time column  action              done
        0  BAC_1d 2001-11-12    Low  repair  clip Low to 31.4
        >>> log.attrs["checked"]
        ['BAC_1d', 'EURUSD_1d']
    """
    rows, checked = [], []
    for name, df in frames.items():
        if "bad_prints" not in df.attrs:
            continue
        checked.append(name)
        for rec in df.attrs["bad_prints"]:
            action = rec.get("action", "warn")
            rows.append({"dataset": name, "time": pd.Timestamp(rec["time"]), "column": rec["column"],
                         "value": float(rec["value"]), "problem": rec["reason"], "action": action,
                         "done": rec["repair"] if action == "repair" else "kept as it is"})
    out = pd.DataFrame(rows, columns=BAD_PRINT_LOG_COLUMNS)
    out.attrs["checked"] = checked
    return out


def _listed(items: list[str], limit: int = 50) -> str:
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


def bad_print_report(sources="all", *, tz: str | None = None) -> pd.DataFrame:
    """:func:`find_bad_prints` over a universe spec (names, paths, globs, ``hourly`` / ``daily`` / ``all``).

    One row per suspect bar with its ``dataset`` first; ``attrs["checked"]`` maps every dataset
    checked to its number of bars, so a clean dataset still shows that it was looked at.

        >>> report = bad_print_report(["BAC_1d", "EURUSD_1d"])
        >>> report[["dataset", "time", "column", "value"]]
          dataset       time column  value
        0  BAC_1d 2001-11-12    Low   20.0
        >>> report.attrs["checked"]
        {'BAC_1d': 5661, 'EURUSD_1d': 3738}
    """
    from .universe import universe_sources

    tables, checked = [], {}
    for src in universe_sources(sources):
        df = load_ohlcv(src, tz=tz if Path(str(src)).suffix else None)
        name = f"{df.attrs['symbol']}_{df.attrs['timeframe']}" if df.attrs.get("timeframe") else df.attrs["symbol"]
        checked[name] = len(df)
        tables.append(find_bad_prints(df).assign(dataset=name))
    out = pd.concat(tables, ignore_index=True)[["dataset", *BAD_PRINT_COLUMNS]]
    out.attrs["checked"] = checked
    return out
