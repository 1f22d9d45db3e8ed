"""Time-ordered validation for meta-labels: purged walk-forward splits with an embargo.

A pattern's label is not known when the pattern is detected: it becomes known at its
``exit_time`` (the triple barrier's stop, target or timeout). So each sample owns a *label window*
``[detection_time, exit_time]``, and a training row whose window reaches into the test period
carries information about the test outcomes (the same price path decided both). This module owns
the splits that keep such rows out:

- **walk-forward**: test blocks follow each other in time; training data always comes before the
  test block (anchored = all earlier rows, rolling = only the most recent ones). Never shuffled.
- **purge**: a training row is dropped when its label window overlaps the test window
  ``[first test detection_time, last test exit_time]``; for walk-forward that means every training
  row must have exited before the test block starts.
- **embargo**: a safety gap on top of the purge. Training rows must have
  ``exit_time < test_start - embargo``, so serial correlation right at the boundary cannot leak.

It leaves model fitting to scikit-learn / XGBoost: :class:`PurgedWalkForward` is a plain
scikit-learn splitter usable as ``cv=`` anywhere, and :func:`walk_forward_by_period` gives the
calendar folds (retrain every N months) that the main job uses.

Where the label windows come from, first match wins:

1. the ``detection_times=`` / ``exit_times=`` keyword arguments of ``split``;
2. ``X``'s index: a MultiIndex with levels ``known_at_utc`` / ``exit_known_at_utc`` (the UTC
   instants a universe run compares, SPEC §11) or ``detection_time`` / ``exit_time``
   (preferred: the features stay clean, and scikit-learn passes the index through), or a
   DatetimeIndex of detection times;
3. columns of the same names in ``X`` (UTC instants first);
4. ``groups`` as the exit times (so ``cross_val_score(est, X, y, groups=exit_times, cv=...)``
   works with ``X`` indexed by detection time).

Times are datetimes (all naive, or all tz-aware: never mixed, since a naive stamp in a market's
own clock and a UTC instant cannot be compared) or plain numbers such as bar numbers
(``detection_bar`` / ``exit_bar``). A missing exit time (an open outcome) counts as "never known":
such a row is never used for training before any test block. ``embargo`` is a duration
(``"2D"``, ``pd.Timedelta``) for datetimes, a number of bars for bar numbers.

    >>> t = pd.date_range("2020-01-01", periods=8, freq="D", tz="UTC")
    >>> [(tr.tolist(), te.tolist()) for tr, te in PurgedWalkForward(2, embargo="1D").split(
    ...     None, detection_times=t, exit_times=t + pd.Timedelta("1D"))]
    [([0, 1], [4, 5]), ([0, 1, 2, 3], [6, 7])]
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

__all__ = ["PurgedWalkForward", "PeriodFold", "walk_forward_by_period", "label_windows", "find_label_times"]

_NEVER = np.iinfo(np.int64).max
_DETECTION_NAMES = ("known_at_utc", "detection_time")
_EXIT_NAMES = ("exit_known_at_utc", "exit_time")


def _renamed(new: Any, old: Any, old_name: str, new_name: str) -> Any:
    """``new``, or the deprecated keyword ``old`` (with a DeprecationWarning) when only it is given."""
    if old is None:
        return new
    if new is not None:
        raise TypeError(f"give {new_name}= only ({old_name}= is its deprecated spelling)")
    warnings.warn(f"{old_name}= is deprecated; use {new_name}=", DeprecationWarning, stacklevel=3)
    return old


class _Windows(NamedTuple):
    start: np.ndarray        # detection times, int64 ns (datetimes) or float64 (numbers)
    end: np.ndarray          # exit times, same units; "never" for unknown exits
    is_datetime: bool
    tz: Any
    times: pd.Index          # the detection times as given (for slicing per fold)
    exit_times: pd.Index     # the exit times as given (= times when none were given)


def _as_times(values: Any, what: str) -> tuple[np.ndarray, bool, Any]:
    """Turn datetimes or numbers into a comparable array; NaT/NaN -> "never"."""
    arr = values.to_numpy() if isinstance(values, (pd.Series, pd.Index)) else np.asarray(values)
    if pd.api.types.is_numeric_dtype(getattr(values, "dtype", arr.dtype)) and arr.dtype != bool:
        out = pd.Index(values).to_numpy(dtype=np.float64, na_value=np.nan)    # also pandas' nullable ints
        return np.where(np.isnan(out), np.inf, out), False, None
    try:
        idx = pd.DatetimeIndex(pd.to_datetime(values))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be datetimes or numbers (e.g. bar numbers), got dtype {arr.dtype}") from exc
    ns = idx.as_unit("ns").asi8.copy()
    ns[idx.isna()] = _NEVER
    return ns, True, idx.tz


def find_label_times(X: Any = None, *, detection_times: Any = None, exit_times: Any = None,
                     groups: Any = None, times: Any = None) -> tuple[pd.Index | None, pd.Index | None]:
    """The raw ``(detection times, exit times)`` of the samples, either None when not found.

    ``times=`` is the deprecated spelling of ``detection_times=``.
    """
    detection_times = _renamed(detection_times, times, "times", "detection_times")
    frame = X if isinstance(X, (pd.DataFrame, pd.Series)) else None
    if frame is not None:
        levels = list(frame.index.names) if isinstance(frame.index, pd.MultiIndex) else []
        columns = list(frame.columns) if isinstance(frame, pd.DataFrame) else []
        # a pair is taken from one place (index levels, else columns), UTC instants first
        for det_name, exit_name in zip(_DETECTION_NAMES, _EXIT_NAMES, strict=True):
            if detection_times is None and det_name in levels:
                detection_times = frame.index.get_level_values(det_name)
                if exit_times is None and exit_name in levels:
                    exit_times = frame.index.get_level_values(exit_name)
        if detection_times is None and isinstance(frame.index, pd.DatetimeIndex):
            detection_times = frame.index
        for det_name, exit_name in zip(_DETECTION_NAMES, _EXIT_NAMES, strict=True):
            if detection_times is None and det_name in columns:
                detection_times = frame[det_name]
                if exit_times is None and exit_name in columns:
                    exit_times = frame[exit_name]
        if exit_times is None:
            exit_times = next((frame[c] for c in _EXIT_NAMES if c in columns), None)
    if exit_times is None and groups is not None:
        exit_times = groups
    return ((None if detection_times is None else pd.Index(detection_times)),
            (None if exit_times is None else pd.Index(exit_times)))


def label_windows(X: Any = None, *, detection_times: Any = None, exit_times: Any = None, groups: Any = None,
                  require_exit: bool = True, times: Any = None) -> _Windows:
    """Each sample's label window ``(start, end)`` found as the module docstring describes.

    ``require_exit=False`` lets a caller without exit times use ``exit = detection``
    (zero-length windows: walk-forward order is kept, but nothing is purged).
    """
    detection_times = _renamed(detection_times, times, "times", "detection_times")
    times, exit_times = find_label_times(X, detection_times=detection_times, exit_times=exit_times, groups=groups)
    if times is None:
        raise ValueError("no detection times: pass detection_times=..., index X by a DatetimeIndex or a MultiIndex "
                         "with levels 'detection_time' and 'exit_time', or give X a 'detection_time' column")
    start, is_dt, tz = _as_times(times, "times")
    if (start == _NEVER).any() or np.isinf(start).any():
        raise ValueError("times (detection times) contain NaT/NaN; every sample needs a detection time")
    if exit_times is None:
        if require_exit:
            raise ValueError("no exit times (when each label became known), so nothing can be purged: pass "
                             "exit_times=..., an 'exit_time' index level or column, or groups=exit_times; "
                             "for labels known at detection pass exit_times=times")
        exit_times = times
    end, e_dt, e_tz = _as_times(exit_times, "exit_times")
    if len(end) != len(start):
        raise ValueError(f"times has {len(start)} entries but exit_times has {len(end)}")
    if e_dt != is_dt or (is_dt and (tz is None) != (e_tz is None)):
        raise ValueError("detection_times and exit_times must both be numbers, or both naive / both tz-aware "
                         "datetimes (UTC instants such as known_at_utc / exit_known_at_utc cannot be compared "
                         "with naive stamps)")
    if X is not None and hasattr(X, "__len__") and len(X) != len(start):
        raise ValueError(f"X has {len(X)} rows but times has {len(start)} entries")
    if (end < start).any():
        first = int(np.flatnonzero(end < start)[0])
        raise ValueError(f"exit_times before times at row {first}: a label cannot be known before its pattern")
    return _Windows(start, end, is_dt, tz, times, exit_times)


def _embargo_units(embargo: Any, w: _Windows) -> int | float:
    """The embargo in the units of the windows: a duration for datetimes, a number of bars for numbers."""
    if embargo is None or (isinstance(embargo, (int, float, np.integer, np.floating))
                           and not isinstance(embargo, bool) and embargo == 0):
        return 0
    if isinstance(embargo, (int, float, np.integer, np.floating)) and not isinstance(embargo, bool):
        if w.is_datetime:
            raise ValueError(f"embargo={embargo} is a number but the times are datetimes: give a duration "
                             "such as '2D' or pd.Timedelta(hours=12)")
        if not np.isfinite(embargo) or embargo < 0:
            raise ValueError(f"embargo must be a finite number of bars >= 0, got {embargo}")
        return float(embargo)
    try:
        delta = pd.Timedelta(embargo)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"embargo must be a duration ('2D', pd.Timedelta) or, with bar-number times, a number "
                         f"of bars; got {embargo!r}") from exc
    if delta is pd.NaT:
        raise ValueError("embargo must be a duration, got NaT")
    if not w.is_datetime:
        raise ValueError(f"embargo={embargo!r} is a duration but the times are numbers: give a number instead")
    if delta < pd.Timedelta(0):
        raise ValueError(f"embargo must be >= 0, got {embargo!r}")
    return int(delta.as_unit("ns").value)


def _allowed_exit(test_start: int | float, emb: int | float, is_datetime: bool) -> int | float:
    """Training rows need ``exit < test_start - embargo``; clamp so int64 cannot wrap around."""
    if is_datetime:
        return int(max(int(test_start) - int(emb), np.iinfo(np.int64).min))
    return test_start - emb


class PurgedWalkForward:
    """Walk-forward splits in time order, with purge and embargo; a scikit-learn ``cv=`` splitter.

    The samples are ordered by detection time and cut into ``n_splits + 1`` consecutive blocks (or
    blocks of ``test_size`` rows ending at the last sample); each of the last ``n_splits`` blocks is
    a test block in turn. The training rows are the rows *before* the block whose label was known
    before ``test_start - embargo`` (purge + embargo), so a fitted model never saw a label decided
    inside or just before its test period.

    Parameters
    ----------
    n_splits : number of test blocks (folds), >= 1.
    embargo : extra gap before each test block: a duration (``"2D"``, ``pd.Timedelta``), or a
        number of bars when the times are bar numbers.
    max_train_size : None for anchored (expanding) walk-forward; an int keeps only the most recent
        ``max_train_size`` training rows, a duration only the rows detected within that duration
        before the test block (rolling walk-forward).
    test_size : rows per test block; default ``n_samples // (n_splits + 1)``.
    min_train_size : folds with fewer training rows after the purge are skipped (not yielded).

    Example: ``cross_val_score(model, X, y, cv=PurgedWalkForward(5, embargo="1D"))`` with ``X``
    indexed by ``(detection_time, exit_time)``.
    """

    def __init__(self, n_splits: int = 5, *, embargo: Any = 0, max_train_size: Any = None,
                 test_size: int | None = None, min_train_size: int = 1) -> None:
        self.n_splits = n_splits
        self.embargo = embargo
        self.max_train_size = max_train_size
        self.test_size = test_size
        self.min_train_size = min_train_size

    def __repr__(self) -> str:
        return (f"PurgedWalkForward(n_splits={self.n_splits}, embargo={self.embargo!r}, "
                f"max_train_size={self.max_train_size!r}, test_size={self.test_size}, "
                f"min_train_size={self.min_train_size})")

    def split(self, X: Any, y: Any = None, groups: Any = None, *, detection_times: Any = None,
              exit_times: Any = None, times: Any = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(train_idx, test_idx)`` positional int arrays, test blocks in time order."""
        detection_times = _renamed(detection_times, times, "times", "detection_times")
        w = label_windows(X, detection_times=detection_times, exit_times=exit_times, groups=groups)
        n, k = len(w.start), self.n_splits
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"n_splits must be an integer >= 1, got {k!r}")
        size = n // (k + 1) if self.test_size is None else int(self.test_size)
        if size < 1 or size * k >= n:
            raise ValueError(f"cannot make {k} test blocks of {size} rows from {n} samples with rows left for "
                             f"training: lower n_splits or test_size")
        emb = _embargo_units(self.embargo, w)
        window = self._rolling_window(w)
        order = np.argsort(w.start, kind="stable")
        for i in range(k):
            first = n - (k - i) * size
            test = order[first:first + size]
            test_start = w.start[test[0]]
            train = order[:first]
            train = train[w.end[train] < _allowed_exit(test_start, emb, w.is_datetime)]
            if window is not None and window[0] == "rows":
                train = train[-window[1]:]
            elif window is not None:
                train = train[w.start[train] >= test_start - window[1]]
            if len(train) >= max(int(self.min_train_size), 1):
                yield np.sort(train).astype(np.intp), np.sort(test).astype(np.intp)

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None, **kwargs: Any) -> int:
        """``n_splits`` without data; with data, the number of folds :meth:`split` really yields."""
        if X is None and not kwargs:
            return int(self.n_splits)
        return sum(1 for _ in self.split(X, y, groups, **kwargs))

    def _rolling_window(self, w: _Windows) -> tuple[str, int] | None:
        m = self.max_train_size
        if m is None:
            return None
        if isinstance(m, (int, np.integer)) and not isinstance(m, bool):
            if m < 1:
                raise ValueError(f"max_train_size must be >= 1 rows, got {m}")
            return "rows", int(m)
        if not w.is_datetime:
            raise ValueError(f"max_train_size={m!r}: with numeric times give a number of rows (int)")
        try:
            return "time", int(pd.Timedelta(m).as_unit("ns").value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"max_train_size must be a number of rows or a duration such as '365D', "
                             f"got {m!r}") from exc


class PeriodFold(NamedTuple):
    """One calendar fold: train on everything known before ``test_start``, test on the period.

    ``train_end`` is the last exit time among the training rows (what a model trained on this fold
    stores as ``trained_on_end_``); the test rows are detected in ``[test_start, test_end)``.
    """

    train_idx: np.ndarray
    test_idx: np.ndarray
    train_end: pd.Timestamp
    test_start: pd.Timestamp
    test_end: pd.Timestamp


def walk_forward_by_period(detection_times: Any, exit_times: Any, *, freq: str | int = "12MS", embargo: Any = None,
                           min_labels: int = 30, start: Any = None, end: Any = None,
                           min_train: int | None = None) -> list[PeriodFold]:
    """Calendar walk-forward: one test block per period, training on all labels known before it.

    ``freq`` is a pandas frequency (``"12MS"`` = retrain every 12 months, on month starts; ``"QS"``,
    ``"YS"``) or an int number of months. Periods start at ``start`` (default: the month start of
    the first detection) and tile the data up to ``end`` (default: after the last detection). A
    period's training rows are all rows with ``exit_time < test_start - embargo`` (anchored, purged;
    ``embargo`` a duration); periods with fewer than ``min_labels`` training rows or no test rows are
    skipped. With tz-aware times (UTC instants) the period edges are instants in the same zone.
    ``min_train=`` is the deprecated spelling of ``min_labels=``.

    >>> t = pd.date_range("2020-01-01", periods=24, freq="MS")
    >>> [f.test_start.year for f in walk_forward_by_period(t, t + pd.Timedelta("2D"), freq=12, min_labels=6)]
    [2021]
    """
    if min_train is not None:
        warnings.warn("min_train= is deprecated; use min_labels=", DeprecationWarning, stacklevel=2)
        min_labels = min_train
    w = label_windows(detection_times=detection_times, exit_times=exit_times)
    if not w.is_datetime:
        raise ValueError("walk_forward_by_period needs datetime times; use PurgedWalkForward for bar numbers")
    if isinstance(freq, (int, np.integer)) and not isinstance(freq, bool):
        if freq < 1:
            raise ValueError(f"freq as a number of months must be >= 1, got {freq}")
        freq = f"{int(freq)}MS"
    try:
        offset = pd.tseries.frequencies.to_offset(freq)
    except ValueError as exc:
        raise ValueError(f"freq must be a pandas frequency such as '12MS', 'QS', 'YS' or a number of months, "
                         f"got {freq!r}") from exc
    if len(w.start) == 0:
        return []
    emb = _embargo_units(embargo, w)
    stamps = pd.DatetimeIndex(pd.to_datetime(w.start, unit="ns", utc=w.tz is not None))
    if w.tz is not None:
        stamps = stamps.tz_convert(w.tz)
    first = stamps.min().normalize().replace(day=1) if start is None else pd.Timestamp(start)
    if w.tz is not None and first.tz is None:
        first = first.tz_localize(w.tz)
    last = stamps.max() + pd.Timedelta(1, "ns") if end is None else pd.Timestamp(end)
    if w.tz is not None and last.tz is None:
        last = last.tz_localize(w.tz)
    edges = [first]
    while edges[-1] < last:
        nxt = edges[-1] + offset
        if nxt <= edges[-1]:
            raise ValueError(f"freq={freq!r} does not move forward in time")
        edges.append(nxt)
    folds = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        lo_ns, hi_ns = int(lo.as_unit("ns").value), int(hi.as_unit("ns").value)
        test = np.flatnonzero((w.start >= lo_ns) & (w.start < hi_ns))
        train = np.flatnonzero(w.end < _allowed_exit(lo_ns, emb, True))
        if len(test) == 0 or len(train) < max(int(min_labels), 1):
            continue
        train_end = pd.Timestamp(int(w.end[train].max()), unit="ns", tz="UTC" if w.tz is not None else None)
        if w.tz is not None:
            train_end = train_end.tz_convert(w.tz)
        folds.append(PeriodFold(train.astype(np.intp), test.astype(np.intp), train_end, lo, hi))
    return folds
