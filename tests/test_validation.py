"""Purged walk-forward splits: time order, purge, embargo (qml_plugin.ml.validation)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score

from qml_plugin.ml import PurgedWalkForward, walk_forward_by_period

T0 = pd.Timestamp("2020-01-01")


def _days(values):
    return T0 + pd.to_timedelta(np.asarray(values, dtype=float), unit="D")


@st.composite
def label_windows_data(draw):
    n = draw(st.integers(8, 60))
    offsets = draw(st.lists(st.integers(0, 200), min_size=n, max_size=n))        # hours, ties allowed
    horizons = draw(st.lists(st.one_of(st.integers(0, 60), st.none()), min_size=n, max_size=n))
    times = T0 + pd.to_timedelta(offsets, unit="h")
    exits = pd.DatetimeIndex([t + pd.Timedelta(hours=h) if h is not None else pd.NaT
                              for t, h in zip(times, horizons)])
    return times, exits


def _ns(idx):
    out = pd.DatetimeIndex(idx).as_unit("ns").asi8.copy()
    out[pd.DatetimeIndex(idx).isna()] = np.iinfo(np.int64).max
    return out


@settings(max_examples=60, deadline=None)
@given(data=label_windows_data(), n_splits=st.integers(1, 4),
       embargo=st.one_of(st.just(None), st.integers(0, 30).map(lambda h: pd.Timedelta(hours=h))),
       max_train=st.one_of(st.none(), st.integers(1, 20)))
def test_every_split_is_purged_embargoed_and_in_time_order(data, n_splits, embargo, max_train):
    times, exits = data
    if len(times) // (n_splits + 1) < 1:
        return
    cv = PurgedWalkForward(n_splits, embargo=embargo, max_train_size=max_train)
    emb_ns = pd.Timedelta(embargo).value if embargo is not None else 0
    d, e = _ns(times), _ns(exits)
    previous_test = None
    for train, test in cv.split(None, detection_times=times, exit_times=exits):
        assert train.dtype.kind == "i" and test.dtype.kind == "i"
        assert len(np.intersect1d(train, test)) == 0
        test_start = d[test].min()
        test_end = np.max(e[test])
        # purge: no training label window [d, e] overlaps the test window [test_start, test_end]
        assert not np.any((d[train] <= test_end) & (e[train] >= test_start))
        # embargo: every training label was known before test_start - embargo
        assert e[train].max() < test_start - emb_ns
        if max_train is not None:
            assert len(train) <= max_train
        if previous_test is not None:
            assert len(np.intersect1d(previous_test, test)) == 0
            assert d[previous_test].max() <= test_start
        previous_test = test


@settings(max_examples=40, deadline=None)
@given(data=label_windows_data(), months=st.integers(1, 3), embargo_h=st.integers(0, 48))
def test_period_folds_train_only_on_labels_known_before_the_period(data, months, embargo_h):
    times, exits = data
    times = T0 + (times - T0) * 10                      # spread the samples over ~3 months
    exits = T0 + (exits - T0) * 10
    embargo = pd.Timedelta(hours=embargo_h)
    folds = walk_forward_by_period(times, exits, freq=months, embargo=embargo, min_labels=1)
    d, e = _ns(times), _ns(exits)
    tested = np.zeros(len(times), dtype=int)
    for k, f in enumerate(folds):
        start, end = f.test_start.as_unit("ns").value, f.test_end.as_unit("ns").value
        assert ((d[f.test_idx] >= start) & (d[f.test_idx] < end)).all()
        assert e[f.train_idx].max() < start - embargo.value
        assert f.train_end == exits[f.train_idx].max()
        # anchored: every row known before the cutoff is used
        assert set(f.train_idx) == set(np.flatnonzero(e < start - embargo.value))
        if k:
            assert f.test_start >= folds[k - 1].test_end
        tested[f.test_idx] += 1
    assert tested.max(initial=0) <= 1


def test_purge_and_embargo_drop_the_rows_whose_labels_reach_the_test_block():
    times = _days(range(10))                           # one pattern a day
    exits = times + pd.Timedelta(days=2)               # each label known two days later
    train, test = next(PurgedWalkForward(1, test_size=3).split(None, detection_times=times, exit_times=exits))
    assert test.tolist() == [7, 8, 9]
    assert train.tolist() == [0, 1, 2, 3, 4]           # rows 5, 6 exit on days 7, 8: purged
    train, _ = next(PurgedWalkForward(1, test_size=3, embargo="1D").split(None, detection_times=times,
                                                                          exit_times=exits))
    assert train.tolist() == [0, 1, 2, 3]              # exit must be < day 7 - 1 day


def test_anchored_by_default_rolling_with_max_train_size():
    times = _days(range(12))
    anchored = [tr.tolist() for tr, _ in PurgedWalkForward(3).split(None, detection_times=times, exit_times=times)]
    assert anchored == [[0, 1, 2], [0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5, 6, 7, 8]]
    rolling = [tr.tolist() for tr, _ in PurgedWalkForward(3, max_train_size=2).split(None, detection_times=times,
                                                                                       exit_times=times)]
    assert rolling == [[1, 2], [4, 5], [7, 8]]
    by_time = [tr.tolist() for tr, _ in PurgedWalkForward(3, max_train_size="2D").split(None, detection_times=times,
                                                                                         exit_times=times)]
    assert by_time == [[1, 2], [4, 5], [7, 8]]


def test_unsorted_rows_are_split_by_time_never_by_position():
    rng = np.random.default_rng(1)
    order = rng.permutation(20)
    times = _days(order)
    for train, test in PurgedWalkForward(4).split(None, detection_times=times, exit_times=times):
        assert times[train].max() < times[test].min()
        assert np.all(np.diff(np.sort(order[test])) == 1)     # a contiguous block of days


def test_bar_numbers_work_as_times_with_an_embargo_in_bars():
    bars = np.arange(30)
    train, test = list(PurgedWalkForward(2, embargo=3).split(None, detection_times=bars, exit_times=bars + 5))[-1]
    assert test.min() == 20 and train.max() + 5 < 20 - 3


def test_label_windows_are_read_from_a_multiindex_or_groups_so_sklearn_can_use_it_as_cv():
    rng = np.random.default_rng(0)
    n = 120
    times = _days(np.arange(n) / 2)
    exits = times + pd.Timedelta(days=3)
    X = pd.DataFrame({"a": rng.normal(size=n)}, index=pd.MultiIndex.from_arrays([times, exits],
                                                                                 names=["detection_time", "exit_time"]))
    y = (X["a"] + rng.normal(size=n) > 0).astype(int)
    cv = PurgedWalkForward(3, embargo="1D")
    from_index = [(a.tolist(), b.tolist()) for a, b in cv.split(X)]
    X_flat = X.reset_index(level="exit_time", drop=True)
    from_groups = [(a.tolist(), b.tolist()) for a, b in cv.split(X_flat, y, groups=exits)]
    assert from_index == from_groups and cv.get_n_splits(X) == 3 and cv.get_n_splits() == 3
    scores = cross_val_score(LogisticRegression(), X, y, cv=cv, scoring="roc_auc")
    assert len(scores) == 3 and np.all(scores > 0.6)


@pytest.mark.parametrize("kwargs, message", [
    ({}, "no detection times"),
    ({"detection_times": _days([0, 1, 2, 3])}, "no exit times"),
    ({"detection_times": _days([0, 1, 2, 3]), "exit_times": _days([1, 0, 3, 4])}, "exit_times before times at row 1"),
    ({"detection_times": _days([0, 1, 2, 3]), "exit_times": np.arange(4)}, "both be numbers"),
])
def test_missing_or_inconsistent_label_windows_are_explained(kwargs, message):
    with pytest.raises(ValueError, match=message):
        list(PurgedWalkForward(1).split(np.zeros((4, 1)), **kwargs))


@pytest.mark.parametrize("cv, message", [
    (PurgedWalkForward(1, embargo=0.5), "is a number but the times are datetimes"),
    (PurgedWalkForward(1, embargo=3), "is a number but the times are datetimes"),
    (PurgedWalkForward(1, embargo="soon"), "embargo must be a duration"),
    (PurgedWalkForward(0), "n_splits must be an integer >= 1"),
    (PurgedWalkForward(6), "cannot make 6 test blocks of 0 rows"),
])
def test_bad_splitter_settings_are_explained(cv, message):
    times = _days(range(6))
    with pytest.raises(ValueError, match=message):
        list(cv.split(None, detection_times=times, exit_times=times))


def test_period_folds_accept_a_pandas_frequency_and_name_bad_ones():
    times = pd.date_range("2020-01-01", periods=400, freq="D")
    folds = walk_forward_by_period(times, times + pd.Timedelta(days=5), freq="QS", min_labels=30)
    assert [f.test_start for f in folds][:2] == [pd.Timestamp("2020-04-01"), pd.Timestamp("2020-07-01")]
    assert folds[0].train_end < pd.Timestamp("2020-04-01")
    with pytest.raises(ValueError, match="freq must be a pandas frequency"):
        walk_forward_by_period(times, times, freq="fortnightly")
