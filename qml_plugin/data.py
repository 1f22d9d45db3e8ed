"""OHLCV data: load, validate, resample, and the datasets shipped with the package.

This module owns the *shape* of market data inside qml-plugin. Everything downstream receives a
frame in backtesting.py's convention: a sorted, unique ``DatetimeIndex`` and float columns
``Open, High, Low, Close, Volume``. Parsing is left to pandas; aggregation to
``backtesting.lib.OHLCV_AGG``.

    >>> df = load_ohlcv("EURUSD_1h", resample="4h")
    >>> df.attrs["symbol"], list(df.columns)
    ('EURUSD', ['Open', 'High', 'Low', 'Close', 'Volume'])

Validation never repairs or drops rows: a frame is either accepted as it is, or rejected with a
:class:`~qml_plugin.errors.DataError` naming the problem and the first offending timestamp.

Choices where SPEC.md is silent:
- ``df.attrs["symbol"]`` is the dataset name up to the first ``_`` (``"EURUSD_1h"`` -> ``"EURUSD"``),
  and ``df.attrs["timeframe"]`` the part after it (``"1h"``, or the resample rule when resampled).
  A file's symbol is its stem the same way (``"my_btc.csv"`` -> ``"my"`` would be surprising, so a
  stem without a timeframe-looking suffix is kept whole).
- A missing ``Volume`` column is an error like any other missing column; an all-zero one is fine.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from backtesting.lib import OHLCV_AGG

from .errors import DataError

__all__ = ["load_ohlcv", "load_data", "validate_ohlcv", "list_datasets", "dataset_path", "bar_duration",
           "OHLCV_COLUMNS"]

OHLCV_COLUMNS = ["Open", "High", "Low", "Close", "Volume"]
"""Column order of every frame qml-plugin returns (backtesting.py's names)."""

_INDEX_NAMES = ("timestamp", "date", "datetime", "time")
_TIMEFRAME_RE = re.compile(r"^(\d+)(m|min|h|d|w)$", re.IGNORECASE)


def _data_dirs() -> list[Path]:
    """Where shipped datasets live: ``qml_plugin/_data`` when installed, the repository's data/ in a checkout."""
    here = Path(__file__).resolve().parent
    return [d for d in (here / "_data", here.parent / "data") if d.is_dir()]


def list_datasets() -> list[str]:
    """Names of the datasets shipped with the package, e.g. ``["BTCUSD_1h", "EURUSD_1h", ...]``."""
    names: set[str] = set()
    for d in _data_dirs():
        names.update(p.name[: -len(".csv.gz")] for p in d.glob("*.csv.gz"))
    return sorted(names)


def dataset_path(name: str) -> Path:
    """Path of the shipped dataset ``name``; :class:`DataError` listing the valid names otherwise."""
    for d in _data_dirs():
        p = d / f"{name}.csv.gz"
        if p.is_file():
            return p
    raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(list_datasets())}")


def _split_name(stem: str) -> tuple[str, str | None]:
    head, _, tail = stem.rpartition("_")
    if head and _TIMEFRAME_RE.match(tail):
        return head, tail
    return stem, None


def load_ohlcv(source: str | Path, *, resample: str | None = None) -> pd.DataFrame:
    """Load OHLCV bars from a shipped dataset name or a csv / csv.gz / parquet path.

    Columns are matched case-insensitively; the index comes from a ``timestamp``, ``date``,
    ``datetime`` or ``time`` column (or an existing DatetimeIndex in parquet). The result is
    validated with :func:`validate_ohlcv`.

    ``resample="4h"`` aggregates with ``backtesting.lib.OHLCV_AGG``; bins are labelled and closed on
    the left (pandas' default) and empty bins (weekends, holidays) are dropped.
    """
    src = str(source)
    path = Path(src)
    if path.suffix in (".csv", ".gz", ".parquet") or path.exists():
        if not path.is_file():
            raise DataError(f"data file not found: {src!r}")
        stem = path.name.split(".")[0]
        raw = _read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    else:
        path = dataset_path(src)
        stem = src
        raw = pd.read_csv(path)
    df = _normalize(raw, src)
    symbol, timeframe = _split_name(stem)
    validate_ohlcv(df)
    if resample:
        df = _resample(df, resample)
        timeframe = resample
    df.attrs["symbol"] = symbol
    df.attrs["timeframe"] = timeframe
    return df


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except ImportError as e:
        raise DataError(f"reading {path.name} needs a parquet engine: pip install pyarrow ({e})") from None


def _normalize(raw: pd.DataFrame, src: str) -> pd.DataFrame:
    lower = {str(c).lower(): c for c in raw.columns}
    if not isinstance(raw.index, pd.DatetimeIndex):
        idx_col = next((lower[n] for n in _INDEX_NAMES if n in lower), None)
        if idx_col is None:
            raise DataError(
                f"{src}: no time column; expected one of {', '.join(_INDEX_NAMES)} (any case), "
                f"got {list(raw.columns)}"
            )
        raw = raw.set_index(idx_col)
        try:
            raw.index = pd.to_datetime(raw.index)
        except (ValueError, TypeError) as e:
            raise DataError(f"{src}: cannot parse the time column {idx_col!r}: {e}") from None
    missing = [c for c in OHLCV_COLUMNS if c.lower() not in lower]
    if missing:
        raise DataError(f"{src}: missing columns {missing}; need {OHLCV_COLUMNS} (any case)")
    df = raw[[lower[c.lower()] for c in OHLCV_COLUMNS]].astype("float64")
    df.columns = OHLCV_COLUMNS
    df.index.name = None
    return df


def _resample(df: pd.DataFrame, rule: str) -> pd.DataFrame:
    try:
        out = df.resample(rule).agg(OHLCV_AGG)
    except (ValueError, TypeError) as e:
        raise DataError(f"resample={rule!r} is not a pandas offset alias such as '4h' or '1D': {e}") from None
    return out.dropna(subset=["Open"])[OHLCV_COLUMNS]


def _first_bad(mask: np.ndarray, index: pd.Index) -> str:
    return str(index[int(np.argmax(mask))])


def validate_ohlcv(df: pd.DataFrame) -> pd.DataFrame:
    """Check ``df`` against backtesting.py's convention; return it unchanged or raise :class:`DataError`.

    Checked, in order: DatetimeIndex, required columns, sorted and unique index, NaN, non-positive
    prices, ``High >= max(Open, Close)`` and ``Low <= min(Open, Close)``. The message names the first
    offending timestamp. Nothing is ever dropped or repaired.
    """
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"expected a pandas DataFrame of OHLCV bars, got {type(df).__name__}")
    missing = [c for c in OHLCV_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"missing columns {missing}; need {OHLCV_COLUMNS}")
    if not isinstance(df.index, pd.DatetimeIndex):
        raise DataError(f"index must be a DatetimeIndex, got {type(df.index).__name__}")
    idx = df.index
    if len(idx) > 1:
        i8 = idx.asi8
        back = np.diff(i8) < 0
        if back.any():
            k = int(np.argmax(back)) + 1
            raise DataError(f"index is not sorted: {idx[k]} comes after {idx[k - 1]}")
        dup = np.diff(i8) == 0
        if dup.any():
            raise DataError(f"duplicate timestamp {idx[int(np.argmax(dup)) + 1]} in the index")
    values = df[OHLCV_COLUMNS].to_numpy(dtype="float64")
    nan = np.isnan(values)
    if nan.any():
        row, col = divmod(int(np.argmax(nan.ravel())), len(OHLCV_COLUMNS))
        raise DataError(f"NaN in column {OHLCV_COLUMNS[col]} at {idx[row]}")
    o, h, l, c = values[:, 0], values[:, 1], values[:, 2], values[:, 3]
    bad = (values[:, :4] <= 0).any(axis=1)
    if bad.any():
        raise DataError(f"non-positive price at {_first_bad(bad, idx)}; prices must be > 0")
    bad = h < np.maximum(o, c)
    if bad.any():
        raise DataError(f"High < max(Open, Close) at {_first_bad(bad, idx)}")
    bad = l > np.minimum(o, c)
    if bad.any():
        raise DataError(f"Low > min(Open, Close) at {_first_bad(bad, idx)}")
    return df


def bar_duration(df: pd.DataFrame) -> pd.Timedelta:
    """The typical spacing of the bars (median of the gaps), e.g. ``Timedelta("1h")``; 0 for < 2 bars."""
    if len(df) < 2:
        return pd.Timedelta(0)
    return pd.Timedelta(int(np.median(np.diff(df.index.as_unit("ns").asi8))), unit="ns")


def load_data(data_cfg: dict) -> pd.DataFrame:
    """The ``data:`` section of a config (source, resample, start, end) as a validated frame."""
    df = load_ohlcv(data_cfg["source"], resample=data_cfg.get("resample"))
    start, end = data_cfg.get("start"), data_cfg.get("end")
    if start is not None or end is not None:
        attrs = dict(df.attrs)
        df = df.loc[start:end]
        df.attrs.update(attrs)
    if len(df) < 100:
        raise DataError(f"data.start/end leave {len(df)} bars of {data_cfg['source']}; need at least 100")
    return df
