"""OHLCV data: load, validate, resample, the datasets shipped with the package, and their clocks.

This module owns the *shape* of market data inside qml-plugin. Everything downstream receives a
frame in backtesting.py's convention: a sorted, unique ``DatetimeIndex`` and float columns
``Open, High, Low, Close, Volume``. Parsing is left to pandas; aggregation to
``backtesting.lib.OHLCV_AGG``; time zones to the standard library's ``zoneinfo`` (via pandas).
Bad prints (bars that pass these rules but were never tradable) are judged in
:mod:`qml_plugin.badprints`; many markets at once are loaded by :mod:`qml_plugin.universe`
(``load_universe`` is also reachable here, as ``qml_plugin.data.load_universe``).

    >>> df = load_ohlcv("EURUSD_1h", resample="4h")
    >>> df.attrs["symbol"], df.attrs["timeframe"], df.attrs["tz"], list(df.columns)
    ('EURUSD', '4h', 'UTC', ['Open', 'High', 'Low', 'Close', 'Volume'])

Validation never repairs or drops rows: a frame is either accepted as it is, or rejected with a
:class:`~qml_plugin.errors.DataError` naming the file, the problem, the column and the first
offending timestamp (or line of the file).

**Clocks.** The index is naive, in the source's own clock, and stamps each bar's *start*. Each
shipped dataset declares its time zone in ``data/manifest.csv`` (US equities and ETFs
``America/New_York``, OANDA FX and Coinbase crypto ``UTC``); a user file is UTC unless
``load_ohlcv(..., tz=...)`` says otherwise. ``df.attrs["tz"]`` carries it, and
:func:`~qml_plugin.clock.bar_close_utc` (re-exported here) turns each bar into the UTC instant at
which it closed, i.e. became known.

Choices where SPEC.md is silent:
- ``df.attrs["symbol"]`` is the dataset name up to the last ``_`` (``"EURUSD_1h"`` -> ``"EURUSD"``),
  and ``df.attrs["timeframe"]`` the part after it (``"1h"``, or the resample rule when resampled).
  A file's stem is split the same way; a stem without a timeframe-looking suffix is kept whole.
- A missing ``Volume`` column is an error like any other; an all-zero one is fine.
- An integer (or integral float) time column is epoch time, its unit read from the column's largest
  magnitude: below ``1e11`` seconds (1e11 s is the year 5138), below ``1e14`` milliseconds (1e11 ms
  is 1973-03-03, so millisecond data before that date would be misread as seconds). Anything larger
  (micro- or nanoseconds) is refused with a DataError rather than guessed. Epoch values are UTC
  instants, shown in the frame's ``tz``; so are time strings that carry an offset.
- Resampling to bars finer than the source's (``"4h"`` on daily data) is refused.
"""
from __future__ import annotations

import functools
import re
import zoneinfo
from pathlib import Path

import numpy as np
import pandas as pd
from backtesting.lib import OHLCV_AGG

from .clock import bar_close_utc, bar_duration, pandas_rule, timeframe_duration
from .errors import DataError

__all__ = ["load_ohlcv", "load_data", "validate_ohlcv", "list_datasets", "dataset_path", "dataset_info",
           "bar_duration", "timeframe_duration", "bar_close_utc", "resample_ohlcv", "cut_value", "OHLCV_COLUMNS"]

OHLCV_COLUMNS = ["Open", "High", "Low", "Close", "Volume"]
"""Column order of every frame qml-plugin returns (backtesting.py's names)."""

_INDEX_NAMES = ("timestamp", "date", "datetime", "time")
_TIMEFRAME_RE = re.compile(r"^(\d+)(m|min|h|d|w)$", re.IGNORECASE)
_MAX_SHOWN = 200


def cut_value(value, limit: int = _MAX_SHOWN) -> str:
    """``value`` as text (``repr`` unless a string) cut to about ``limit`` characters for a message."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def _data_dirs() -> list[Path]:
    """Where shipped datasets live: ``qml_plugin/_data`` when installed, the repository's data/ in a checkout."""
    here = Path(__file__).resolve().parent
    return [d for d in (here / "_data", here.parent / "data") if d.is_dir()]


def list_datasets() -> list[str]:
    """Names of the datasets shipped with the package, e.g. ``["AAPL_1d", "AAPL_1h", ...]``."""
    names: set[str] = set()
    for d in _data_dirs():
        names.update(p.name[: -len(".csv.gz")] for p in d.glob("*.csv.gz"))
    return sorted(names)


def dataset_path(name: str) -> Path:
    """Path of the shipped dataset ``name``; :class:`DataError` listing the valid names otherwise."""
    for d in _data_dirs():
        p = d / f"{name}.csv.gz"
        if _exists(p):
            return p
    raise DataError(f"unknown dataset {cut_value(name)!r}; valid names: {', '.join(list_datasets())}")


@functools.cache
def _manifest() -> dict[str, dict]:
    for d in _data_dirs():
        p = d / "manifest.csv"
        if p.is_file():
            m = pd.read_csv(p, dtype=str, keep_default_na=False)
            return {r["dataset"]: {k: (v or None) for k, v in r.items()} for r in m.to_dict("records")}
    return {}


def dataset_info(name: str) -> dict:
    """The manifest row of a shipped dataset: symbol, timeframe, asset class, time zone, session close.

    >>> dataset_info("SPY_1d")["tz"], dataset_info("SPY_1d")["session_close"], dataset_info("EURUSD_1h")["tz"]
    ('America/New_York', '16:00', 'UTC')
    """
    dataset_path(name)  # unknown names fail with the list of valid ones
    try:
        return dict(_manifest()[name])
    except KeyError:
        raise DataError(f"shipped dataset {name!r} has no row in data/manifest.csv") from None


def _split_name(stem: str) -> tuple[str, str | None]:
    head, _, tail = stem.rpartition("_")
    if head and _TIMEFRAME_RE.match(tail):
        return head, tail
    return stem, None


def _check_tz(tz: str, src: str) -> str:
    try:
        zoneinfo.ZoneInfo(str(tz))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise DataError(f"{src}: tz={cut_value(tz)!r} is not an IANA time zone; use e.g. 'UTC' or 'America/New_York'") \
            from None
    return str(tz)


def load_ohlcv(source: str | Path, *, resample: str | None = None, tz: str | None = None,
               bad_prints: str | None = None) -> pd.DataFrame:
    """Load OHLCV bars from a shipped dataset name or a csv / csv.gz / parquet path.

    Columns are matched case-insensitively; the index comes from a ``timestamp``, ``date``,
    ``datetime`` or ``time`` column (or an existing DatetimeIndex in parquet). The result is
    validated with :func:`validate_ohlcv`.

    ``resample="4h"`` aggregates with ``backtesting.lib.OHLCV_AGG``; bins are labelled and closed on
    the left (pandas' default) and empty bins (weekends, holidays) are dropped.

    ``tz`` names the clock of a user file's timestamps (default ``"UTC"``); a shipped dataset's
    clock comes from the manifest. ``bad_prints`` (``"warn"``, ``"repair"``, ``"fail"``; None, the
    default, does not look) applies :func:`qml_plugin.badprints.apply_bad_prints` to the source
    bars, before any resampling. ``attrs`` gets ``symbol``, ``timeframe``, ``tz``, ``session_close`` (``"16:00"``
    for US equities, else None) and ``source``.

        >>> spy = load_ohlcv("SPY_1d")
        >>> spy.attrs["symbol"], spy.attrs["timeframe"], spy.attrs["tz"]
        ('SPY', '1d', 'America/New_York')
    """
    src = str(source)
    path = Path(src)
    session_close = None
    if path.suffix in (".csv", ".gz", ".parquet") or _exists(path):
        if not _exists(path):
            raise DataError(f"data file not found: {cut_value(src)!r}")
        symbol, timeframe = _split_name(path.name.split(".")[0])
        tz, name = _check_tz("UTC" if tz is None else tz, src), cut_value(src)  # the path as the user gave it
    else:
        path = dataset_path(src)
        info = dataset_info(src)
        symbol, timeframe, session_close = info["symbol"], info["timeframe"], info["session_close"]
        if tz is not None and _check_tz(tz, src) != info["tz"]:
            raise DataError(f"{src}: tz={cut_value(tz)!r} contradicts the manifest, which says the dataset is in "
                            f"{info['tz']}; leave tz unset for shipped data")
        tz, name = info["tz"], path.name
    df = _normalize(_read(path, name), name, tz)
    df.attrs.update(symbol=symbol, timeframe=timeframe, tz=tz, session_close=session_close, source=name)
    validate_ohlcv(df)
    if bad_prints is not None:
        from .badprints import apply_bad_prints  # same layer; imported late because it imports this module

        df = apply_bad_prints(df, bad_prints=bad_prints)
    return resample_ohlcv(df, resample) if resample else df


def _exists(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name too long for the file system is no file
        return False


def _read(path: Path, name: str) -> pd.DataFrame:
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except ImportError as e:
        raise DataError(f"reading {name} needs a parquet engine: pip install pyarrow ({cut_value(str(e))})") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{name}: the file is empty; need a header timestamp,open,high,low,close,volume "
                        "and at least one row") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError, ValueError) as e:
        raise DataError(f"{name}: cannot be read as {path.suffix.lstrip('.') or 'csv'}: {cut_value(str(e))}") from None


def _parse_time(col: pd.Series, name: str, col_name: str, tz: str) -> pd.DatetimeIndex:
    values = col.to_numpy()
    if len(values) and (pd.api.types.is_integer_dtype(col) or (
            pd.api.types.is_float_dtype(col) and np.isfinite(values).all() and (values == np.round(values)).all())):
        top = float(np.abs(values.astype("float64")).max())
        if top >= 1e14:
            raise DataError(f"{name}: integer time column {col_name!r} reaches {top:.0f}, which is micro- or "
                            "nanoseconds; give epoch seconds or milliseconds")
        unit = "s" if top < 1e11 else "ms"
        idx = pd.DatetimeIndex(pd.to_datetime(values.astype("int64"), unit=unit, utc=True))
    else:
        try:
            idx = pd.DatetimeIndex(pd.to_datetime(col))
        except (ValueError, TypeError):
            try:  # mixed offsets: read each as a UTC instant
                idx = pd.DatetimeIndex(pd.to_datetime(col, utc=True))
            except (ValueError, TypeError):
                bad = pd.to_datetime(col, errors="coerce", utc=True).isna() & col.notna()
                k = int(np.argmax(bad.to_numpy())) if bad.any() else 0
                raise DataError(f"{name}: cannot parse the time column {col_name!r} at line {k + 2}: "
                                f"{cut_value(col.iloc[k] if len(col) else '')}") from None
    if idx.tz is not None:
        idx = idx.tz_convert(tz).tz_localize(None)
    if idx.isna().any():
        k = int(np.argmax(idx.isna()))
        raise DataError(f"{name}: empty time in column {col_name!r} at line {k + 2}")
    return idx


def _normalize(raw: pd.DataFrame, name: str, tz: str) -> pd.DataFrame:
    lower = {str(c).lower(): c for c in raw.columns}
    missing = [c for c in OHLCV_COLUMNS if c.lower() not in lower]
    if missing:
        raise DataError(f"{name}: missing columns {missing}; need {OHLCV_COLUMNS} (any case), "
                        f"got {cut_value(list(map(str, raw.columns)))}")
    if isinstance(raw.index, pd.DatetimeIndex):
        idx = raw.index if raw.index.tz is None else raw.index.tz_convert(tz).tz_localize(None)
    else:
        idx_col = next((lower[n] for n in _INDEX_NAMES if n in lower), None)
        if idx_col is None:
            raise DataError(f"{name}: no time column; expected one of {', '.join(_INDEX_NAMES)} (any case), "
                            f"got {cut_value(list(map(str, raw.columns)))}")
        idx = _parse_time(raw[idx_col], name, str(idx_col), tz)
    if len(raw) == 0:
        raise DataError(f"{name}: no rows (only a header); need at least one bar")
    cols = {}
    for c in OHLCV_COLUMNS:
        col = raw[lower[c.lower()]]
        num = pd.to_numeric(col, errors="coerce")
        bad = num.isna() & col.notna()
        if bad.any():
            k = int(np.argmax(bad.to_numpy()))
            raise DataError(f"{name}: column {lower[c.lower()]!r} at line {k + 2} ({idx[k]}): "
                            f"{cut_value(str(col.iloc[k]))} is not a number")
        cols[c] = num.to_numpy(dtype="float64")
    return pd.DataFrame(cols, index=pd.DatetimeIndex(idx).rename(None))


def resample_ohlcv(df: pd.DataFrame, rule: str) -> pd.DataFrame:
    """Aggregate bars to ``rule`` (``"4h"``) with ``backtesting.lib.OHLCV_AGG``, keeping ``attrs``.

    Bins are labelled and closed on the left and empty bins (weekends, holidays) are dropped; the
    ``timeframe`` attr becomes ``rule``. A rule finer than the bars is a :class:`DataError`.
    """
    name = df.attrs.get("source") or "data"
    try:
        out = df.resample(pandas_rule(rule), label="left", closed="left").agg(OHLCV_AGG)
    except (ValueError, TypeError) as e:
        raise DataError(f"resample={cut_value(rule)!r} is not a pandas offset alias such as '4h' or '1D': "
                        f"{cut_value(str(e))}") from None
    step, bar = timeframe_duration(rule), timeframe_duration(df.attrs.get("timeframe")) or bar_duration(df)
    if step is not None and bar and step < bar:
        raise DataError(f"{name}: resample={rule!r} is finer than the data's own bars ({bar}); "
                        "resampling only aggregates, choose a rule of at least the bar length")
    out = out.dropna(subset=["Open"])[OHLCV_COLUMNS]
    out.attrs.update(df.attrs, timeframe=rule)
    return out


def _where(df: pd.DataFrame) -> str:
    src = df.attrs.get("source")
    return f"{src}: " if src else ""


def validate_ohlcv(df: pd.DataFrame) -> pd.DataFrame:
    """Check ``df`` against backtesting.py's convention; return it unchanged or raise :class:`DataError`.

    Checked, in order: DatetimeIndex, required columns, at least one row, sorted and unique index,
    NaN, inf, non-positive prices, ``High >= max(Open, Close)`` and ``Low <= min(Open, Close)``. The
    message names the file (``df.attrs["source"]``, when known), the column and the first offending
    timestamp. Nothing is ever dropped or repaired.
    """
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"expected a pandas DataFrame of OHLCV bars, got {type(df).__name__}")
    where = _where(df)
    missing = [c for c in OHLCV_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{where}missing columns {missing}; need {OHLCV_COLUMNS}")
    if not isinstance(df.index, pd.DatetimeIndex):
        raise DataError(f"{where}index must be a DatetimeIndex, got {type(df.index).__name__}")
    idx = df.index
    if len(idx) == 0:
        raise DataError(f"{where}no rows; need at least one bar")
    if len(idx) > 1:
        i8 = idx.asi8
        back = np.diff(i8) < 0
        if back.any():
            k = int(np.argmax(back)) + 1
            raise DataError(f"{where}index is not sorted: {idx[k]} comes after {idx[k - 1]}")
        dup = np.diff(i8) == 0
        if dup.any():
            raise DataError(f"{where}duplicate timestamp {idx[int(np.argmax(dup)) + 1]} in the index")
    try:
        values = df[OHLCV_COLUMNS].to_numpy(dtype="float64")
    except (ValueError, TypeError) as e:
        raise DataError(f"{where}OHLCV columns must be numeric: {cut_value(str(e))}") from None
    for test, what in ((np.isnan, "NaN"), (np.isinf, "inf")):
        hit = test(values)
        if hit.any():
            row, col = divmod(int(np.argmax(hit.ravel())), len(OHLCV_COLUMNS))
            raise DataError(f"{where}{what} in column {OHLCV_COLUMNS[col]} at {idx[row]}; prices and volume "
                            "must be finite numbers")
    o, h, l, c = values[:, 0], values[:, 1], values[:, 2], values[:, 3]
    bad = values[:, :4] <= 0
    if bad.any():
        row, col = divmod(int(np.argmax(bad.ravel())), 4)
        raise DataError(f"{where}non-positive price at {idx[row]} (column {OHLCV_COLUMNS[col]}: "
                        f"{values[row, col]:g}); prices must be > 0")
    for bad, what in ((h < np.maximum(o, c), "High < max(Open, Close)"), (l > np.minimum(o, c),
                                                                         "Low > min(Open, Close)")):
        if bad.any():
            raise DataError(f"{where}{what} at {idx[int(np.argmax(bad))]}")
    return df


def __getattr__(name: str):
    if name in ("load_universe", "universe_sources"):  # defined in .universe, which imports this module
        from . import universe

        return getattr(universe, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_data(data_cfg: dict) -> pd.DataFrame:
    """The ``data:`` section of a config (source, resample, start, end, tz, bad_prints) as a validated frame."""
    get = data_cfg.get if isinstance(data_cfg, dict) else lambda k, d=None: getattr(data_cfg, k, d)
    df = load_ohlcv(get("source"), resample=get("resample"), tz=get("tz"), bad_prints=get("bad_prints"))
    start, end = get("start"), get("end")
    if start is not None or end is not None:
        attrs = dict(df.attrs)
        df = df.loc[start:end]
        df.attrs.update(attrs)
    if len(df) < 100:
        raise DataError(f"data.start/end leave {len(df)} bars of {get('source')}; need at least 100")
    return df
