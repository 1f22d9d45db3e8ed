"""Conversions between pandas frames and SQLite rows for the registry (private).

What is stored, and how:

- **Times** (``detection_time``, ``exit_time``, training ranges) are ISO-8601 text, ``T``
  separated, in UTC without an offset: tz-aware values are converted to UTC, naive ones are taken
  as given. Seconds resolution unless a value has a fraction, so text order is time order:
  ``2024-03-01T14:00:00``.
- **Features** are one vector per pattern, packed little-endian into a BLOB as **float32**. So the
  stored values are *not* the computed float64 ones: they are rounded to float32 (about 6e-8
  relative), and that is what :meth:`PatternRegistry.get_features`, the similarity search and
  any outside analysis of the file see. It is the precision XGBoost itself works in:
  ``XGBClassifier`` casts every input to float32 before it sketches, splits or predicts, so a
  model trained on the stored features is bit-identical to one trained on the computed float64
  ones (``tests/test_registry.py`` trains both and compares).
  Values beyond float32's range become +-inf, as they would inside XGBoost; NaN stays NaN. Rows
  written before schema version 4 hold float64 (8 bytes per feature) and are read as such: a
  blob's length tells which. The feature names are stored once per distinct name list in
  ``feature_sets`` and referenced by ``feature_set_id``. This is the "columnar equivalent" of a
  ``features_json`` column that SPEC §5 allows. With 170 features it is 680 B per pattern
  against 5.5 kB for a JSON object, packing costs well under a microsecond against 120-270 us
  for ``json.dumps`` (``benchmarks/bench_registry.py``), and reading is ``np.frombuffer``, no
  parsing. Half the bytes of float64 is ~1.2x faster inserts: a registry write is mostly I/O.
  :meth:`PatternRegistry.get_features` gives one pattern's features back as a dict.
- **Numbers**: NaN is bound as NULL (SQLite would store a NaN float as NULL anyway, PostgreSQL
  would keep it as NaN); numpy integers become Python ints (the drivers cannot bind them).
- **UTC instants** (``known_at_utc``, ``exit_known_at_utc``): the same ISO text, in UTC; a naive
  value is taken as UTC already (the column's name says so), a tz-aware one is converted.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from itertools import repeat
from typing import Any

import numpy as np
import pandas as pd

from ..errors import RegistryError

__all__ = ["iso_times", "text_values", "real_values", "int_values", "feature_block", "pack_rows",
           "names_key", "unpack_features", "as_frame", "dumps", "AUTO_SOURCES", "pattern_ids",
           "auto_sources", "outcome_status", "time_values", "flag_values", "confidence_values", "stop_first_values",
           "read_times"]

_F4 = np.dtype("<f4")
_F8 = np.dtype("<f8")
_BLOB_DTYPES = (_F4, _F8)          # what a stored row may hold: float32 (now) or float64 (before v4)


def as_frame(data: Mapping[str, Any] | pd.Series | pd.DataFrame, what: str) -> pd.DataFrame:
    """One pattern (dict or Series) or many (DataFrame) as a DataFrame."""
    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, pd.Series):
        return data.to_frame().T.infer_objects()
    if isinstance(data, Mapping):
        return pd.DataFrame([dict(data)])
    raise RegistryError(f"{what} must be a dict, a pandas Series or a DataFrame, got {type(data).__name__}")


def iso_times(values: Iterable[Any], column: str) -> list[str | None]:
    """Timestamps as ISO text in UTC without offset (see the module docstring); NaT -> None."""
    dt = values if isinstance(values, pd.Series) else pd.Series(list(values))
    if not pd.api.types.is_datetime64_any_dtype(dt.dtype):
        try:
            dt = pd.to_datetime(dt)
        except (ValueError, TypeError) as exc:
            raise RegistryError(f"column {column!r} holds values that are not timestamps: {exc}") from exc
        if not pd.api.types.is_datetime64_any_dtype(dt.dtype):
            raise RegistryError(f"column {column!r} holds values that are not timestamps")
    if isinstance(dt.dtype, pd.DatetimeTZDtype):
        dt = dt.dt.tz_convert("UTC").dt.tz_localize(None)
    arr = dt.to_numpy("datetime64[us]")
    ticks = arr.view(np.int64)
    nat = np.isnat(arr)
    unit = "s" if not np.any((ticks[~nat] % 1_000_000) != 0) else "us"
    out = np.datetime_as_string(arr, unit=unit).astype(object)
    out[nat] = None
    return out.tolist()


def text_values(frame: pd.DataFrame, column: str, default: Any = None) -> list[str | None]:
    """A text column (missing values -> ``default``); a constant when the frame lacks it."""
    if column not in frame.columns:
        return [None if default is None else str(default)] * len(frame)
    s = frame[column]
    fill = None if default is None else str(default)
    if pd.api.types.is_string_dtype(s.dtype) and not pd.api.types.is_object_dtype(s.dtype):
        return s.to_numpy(dtype=object, na_value=fill).tolist()        # already text: no per-value str()
    missing = s.isna().to_numpy()
    out = np.asarray(s.astype(str).to_numpy(), dtype=object)
    out[missing] = fill
    return out.tolist()


def real_values(frame: pd.DataFrame, column: str) -> list[float | None]:
    """A float column, NaN as None (NULL on every backend; PostgreSQL would keep a NaN); all-NULL when absent."""
    if column not in frame.columns:
        return [None] * len(frame)
    try:
        return nan_to_none(frame[column].to_numpy(dtype=np.float64, na_value=np.nan))
    except (ValueError, TypeError) as exc:
        raise RegistryError(f"column {column!r} must be numeric: {exc}") from exc


def nan_to_none(values: np.ndarray) -> list[float | None]:
    """Floats as a list, NaN -> None."""
    arr = np.asarray(values, dtype=np.float64)
    nan = np.isnan(arr)
    if not nan.any():
        return arr.tolist()
    out = arr.astype(object)
    out[nan] = None
    return out.tolist()


_EXACT_INT = 2.0 ** 53        # beyond this a float no longer holds every integer


def int_values(frame: pd.DataFrame, column: str, allowed: Sequence[int] | None = None) -> list[int | None]:
    """An integer column (bars, direction, 0/1 label); NaN -> None; ``allowed`` is checked.

    Integer and bool columns are taken as they are. Float columns (what a NaN turns an integer
    column into) must hold whole numbers below 2**53 in magnitude: 1.5, inf or 1e20 raise a
    :class:`RegistryError` naming the column and the values, never a silent truncation.
    """
    if column not in frame.columns:
        return [None] * len(frame)
    col = frame[column]
    if pd.api.types.is_bool_dtype(col.dtype) or (pd.api.types.is_integer_dtype(col.dtype) and not col.hasnans):
        ints = col.to_numpy(dtype=np.int64)
        _check_allowed(column, ints, allowed)
        return ints.tolist()
    try:
        floats = col.to_numpy(dtype=np.float64, na_value=np.nan)
    except (ValueError, TypeError) as exc:
        raise RegistryError(f"column {column!r} must hold integers: {exc}") from exc
    nan = np.isnan(floats)
    known = floats[~nan]
    bad = known[~((np.abs(known) < _EXACT_INT) & (known == np.trunc(known)))]
    if bad.size:
        raise RegistryError(f"column {column!r} must hold whole numbers (or NaN), got {np.unique(bad)[:5].tolist()}")
    _check_allowed(column, known, allowed)
    out = np.full(len(floats), None, dtype=object)
    out[~nan] = known.astype(np.int64).tolist()
    return out.tolist()


def _check_allowed(column: str, known: np.ndarray, allowed: Sequence[int] | None) -> None:
    if allowed is None:
        return
    ok = np.zeros(known.shape[0], dtype=bool)
    for a in allowed:
        ok |= known == a
    if not ok.all():
        shown = [int(v) for v in np.unique(known[~ok])[:5].tolist()]
        raise RegistryError(f"column {column!r} has values {shown}; allowed: {list(allowed)} or NaN")


def names_key(names: Sequence[str]) -> str:
    """The sha256 that identifies an ordered list of feature names in ``feature_sets``."""
    return hashlib.sha256("\x1f".join(names).encode()).hexdigest()


def feature_block(features: pd.DataFrame | None, patterns: pd.DataFrame,
                  pattern_ids: list[str]) -> tuple[list[str], np.ndarray] | None:
    """Match ``features`` rows to patterns; return (names, float64 matrix in pattern order).

    Rows match by the ``pattern_id`` column when there is one, else by the patterns' index, else
    by an index of pattern ids. Every column must be numeric (bool counts as 0/1).
    """
    if features is None:
        return None
    if not isinstance(features, pd.DataFrame):
        raise RegistryError(f"features must be a DataFrame (one row per pattern), got {type(features).__name__}")
    if "pattern_id" not in features.columns and features.index.equals(patterns.index):
        block = features
    else:
        keyed = features.set_index("pattern_id") if "pattern_id" in features.columns else features
        missing = [p for p in pattern_ids if p not in keyed.index]
        if missing:
            raise RegistryError(
                f"features have no row for patterns {missing[:5]} ({len(missing)} missing): give the "
                "features frame the patterns' index, a pattern_id column, or pattern ids as index")
        block = keyed.loc[pattern_ids]
    names = list(map(str, block.columns.tolist()))
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise RegistryError(f"feature names must be unique, repeated: {dup[:5]}")
    dtypes = block.dtypes.tolist()
    kinds = {dt: pd.api.types.is_numeric_dtype(dt) or pd.api.types.is_bool_dtype(dt) for dt in set(dtypes)}
    if not all(kinds.values()):
        bad = [n for n, dt in zip(names, dtypes, strict=True) if not kinds[dt]]
        raise RegistryError(f"features must be numeric; non-numeric columns: {bad[:5]}")
    return names, block.to_numpy(dtype=np.float64, na_value=np.nan)


def pack_rows(matrix: np.ndarray) -> list[memoryview]:
    """One little-endian float32 BLOB per row: zero-copy views of one contiguous buffer.

    sqlite3 binds any buffer as a BLOB, so the rows are never copied into ``bytes`` first.
    Use ``bytes(view)`` for a standalone value.
    """
    with np.errstate(over="ignore"):                 # beyond float32's range -> inf, as in XGBoost
        m = np.ascontiguousarray(matrix, dtype=_F4)
    width = m.shape[1] * _F4.itemsize
    if not width:
        return [memoryview(b"")] * len(m)
    raw = memoryview(m.reshape(-1).view(np.uint8))
    return [raw[i:i + width] for i in range(0, len(raw), width)]


def _decode(blobs: Sequence[bytes], width: int) -> np.ndarray:
    """Rows of one feature set as a float64 ``(len(blobs), width)`` matrix (float32 or float64 blobs)."""
    n = len(blobs)
    if width == 0:
        return np.empty((n, 0))
    sizes = np.fromiter(map(len, blobs), dtype=np.int64, count=n)
    out = np.empty((n, width))
    for dt in _BLOB_DTYPES:
        rows = np.flatnonzero(sizes == width * dt.itemsize)
        if len(rows) == n:                                           # the usual case: one dtype
            return np.frombuffer(b"".join(blobs), dtype=dt).reshape(n, width).astype(np.float64)
        if len(rows):
            out[rows] = np.frombuffer(b"".join(blobs[i] for i in rows.tolist()), dtype=dt).reshape(-1, width)
    bad = np.flatnonzero(~np.isin(sizes, [width * dt.itemsize for dt in _BLOB_DTYPES]))
    if len(bad):
        raise RegistryError(f"stored features of {len(bad)} rows have {sizes[bad[0]]} bytes where "
                            f"{width} features take {width * 4} (float32) or {width * 8} (float64); "
                            "the registry file was written by something else")
    return out


def unpack_features(set_ids: Sequence[int], blobs: Sequence[bytes], names_of: Mapping[int, list[str]],
                    dtype: type = np.float64) -> tuple[list[str], np.ndarray]:
    """Decode BLOBs of possibly several feature sets into one matrix over the union of names.

    Column order: the names of the feature sets in ``feature_set_id`` order, first appearance
    wins; a feature a row's set lacks is NaN. One set -> its own order, no copy of names.
    """
    ids = np.asarray(set_ids, dtype=np.int64)
    present = sorted(set(ids.tolist()))
    columns: list[str] = []
    pos: dict[str, int] = {}
    for sid in present:
        for name in names_of[sid]:
            if name not in pos:
                pos[name] = len(columns)
                columns.append(name)
    if len(present) == 1:                       # the usual case: one extractor, one order
        return columns, _decode(blobs, len(columns)).astype(dtype, copy=False)
    out = np.full((len(ids), len(columns)), np.nan, dtype=dtype)
    for sid in present:
        rows = np.flatnonzero(ids == sid)
        width = len(names_of[sid])
        block = _decode([blobs[i] for i in rows.tolist()], width)
        cols = np.fromiter((pos[n] for n in names_of[sid]), dtype=np.int64, count=width)
        out[np.ix_(rows, cols)] = block
    return columns, out


def dumps(value: Any) -> str | None:
    """JSON for the model tables' json columns (None stays NULL; numpy scalars become numbers)."""
    if value is None:
        return None

    def _default(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray | pd.Index | pd.Series):
            return o.tolist()
        if isinstance(o, pd.Timestamp):
            return o.isoformat()
        raise TypeError(f"{type(o).__name__} is not JSON serializable")

    return json.dumps(value, default=_default, allow_nan=True)


AUTO_SOURCES = ("triple_barrier", "trade")
"""Label sources a frame may carry (a user's label goes through ``label_pattern``)."""


def pattern_ids(frame: pd.DataFrame) -> list[str]:
    """The ``pattern_id`` column (or index) as text; every row must have one."""
    if "pattern_id" in frame.columns:
        col = frame["pattern_id"]
    elif frame.index.name == "pattern_id":
        col = frame.index.to_series()
    else:
        raise RegistryError("patterns need a 'pattern_id' column (detect_patterns provides one); "
                            f"columns given: {list(map(str, frame.columns))[:12]}")
    missing = col.isna().to_numpy()
    if missing.any():
        raise RegistryError(f"pattern_id is missing in {int(missing.sum())} rows")
    if pd.api.types.is_string_dtype(col.dtype) and not pd.api.types.is_object_dtype(col.dtype):
        return col.tolist()
    return col.astype(str).tolist()


def auto_sources(frame: pd.DataFrame, default: str, labels: list[int | None]) -> list[str | None]:
    """Per-row label source (column or ``default``), NULL where there is no label."""
    given = text_values(frame, "label_source", default)
    out = [s if lab is not None else None for s, lab in zip(given, labels, strict=True)]
    bad = sorted({s for s in out if s is not None and s not in AUTO_SOURCES})
    if bad:
        raise RegistryError(f"label_source {bad[0]!r} is not an automatic source; use 'triple_barrier' "
                            "or 'trade' (user labels go through label_pattern)")
    return out


def outcome_status(frame: pd.DataFrame, labels: list[int | None]) -> list[str | None]:
    """The ``status`` column, or ``filled`` wherever a label says the trade was filled and closed."""
    if "status" in frame.columns:
        return text_values(frame, "status")
    return ["filled" if v is not None else None for v in labels]


def time_values(frame: pd.DataFrame, column: str) -> Iterable[str | None]:
    """A time column as ISO text (all NULL when absent)."""
    return iso_times(frame[column], column) if column in frame.columns else repeat(None)


def stop_first_values(frame: pd.DataFrame) -> list[int | None]:
    """``stop_first`` (1 = the stop was hit before the target): the column when given, else read off
    ``exit_reason`` (``stop`` -> 1, ``target`` / ``timeout`` -> 0, anything else unknown)."""
    if "stop_first" in frame.columns:
        return int_values(frame, "stop_first", (0, 1))
    if "exit_reason" not in frame.columns:
        return [None] * len(frame)
    reason = frame["exit_reason"].to_numpy(dtype=object)
    out = np.full(len(frame), None, dtype=object)
    out[reason == "stop"] = 1
    out[(reason == "target") | (reason == "timeout")] = 0
    return out.tolist()


def read_times(values: Sequence[Any], *, utc: bool = False) -> pd.DatetimeIndex:
    """Stored ISO text back to datetimes (NULL -> NaT): naive, or tz-aware UTC with ``utc=True``."""
    out = pd.DatetimeIndex(pd.to_datetime(pd.Series(list(values), dtype=object), format="ISO8601"))
    return out.tz_localize("UTC") if utc and out.tz is None else out


def flag_values(frame: pd.DataFrame, column: str) -> Iterable[int]:
    """A yes/no column as 1/0 (0 when absent)."""
    if column not in frame.columns:
        return repeat(0)
    return [1 if v else 0 for v in frame[column].fillna(False).astype(bool).tolist()]


def confidence_values(frame: pd.DataFrame, value: Any) -> Iterable[float | None]:
    """``ml_confidence``: a scalar for all rows, a Series (aligned by index), an array, or the column."""
    if value is None:
        return real_values(frame, "ml_confidence")
    if np.ndim(value) == 0:
        return repeat(None if np.isnan(float(value)) else float(value))
    if isinstance(value, pd.Series):
        value = value.reindex(frame.index)
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (len(frame),):
        raise RegistryError(f"ml_confidence has {arr.size} values for {len(frame)} patterns")
    return nan_to_none(arr)
