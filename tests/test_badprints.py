"""Bad prints (SPEC §1): the rule on the real files, causality, and the warn / repair / fail policies."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import make_ohlcv
from hypothesis import given, settings
from hypothesis import strategies as st

from qml_plugin import ConfigError, DataError
from qml_plugin.badprints import BadPrintWarning, apply_bad_prints, find_bad_prints, repair_bad_prints
from qml_plugin.data import OHLCV_COLUMNS, load_ohlcv, validate_ohlcv
from qml_plugin.patterns import detect_patterns
from qml_plugin.universe import load_universe


@pytest.fixture(scope="module")
def raw():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = load_ohlcv(name)
        return cache[name]
    return get


# every bad print that ../shared/data/SOURCES.md lists: (dataset, day, column at fault, its value)
LISTED_BAD = [
    ("AAPL_1d", "2009-09-21", "Low", 0.378214), ("AAPL_1d", "2010-08-31", "Low", 0.903572),
    ("AAPL_1d", "2011-01-03", "Low", 1.166072),
    ("AAPL_1h", "2009-09-21", "Low", 0.378214), ("AAPL_1h", "2010-08-31", "Low", 0.903572),
    ("AAPL_1h", "2011-01-03", "Low", 1.166072), ("AAPL_1h", "2001-04-05 10:00", "High", 0.482142),
    ("BAC_1d", "2001-11-12", "Low", 20.0), ("BAC_1h", "2001-11-12", "Low", 20.0),
    ("GOOGL_1d", "2007-12-18", "Low", 33.75), ("GOOGL_1d", "2008-09-30", "Close", 147.285),
    ("IWM_1d", "2008-09-19", "High", 156.51),
]
# the genuine extreme moves it lists, which must not be flagged
GENUINE = [("AAPL_1d", "2000-09-29"), ("AAPL_1h", "2000-09-29"), ("GBPUSD_1d", "2016-10-06"),
           ("EURUSD_1h", "2015-01-15")]


@pytest.mark.parametrize("name,when,column,value", LISTED_BAD)
def test_every_bad_print_listed_in_sources_md_is_flagged(raw, name, when, column, value):
    found = find_bad_prints(raw(name))
    start = pd.Timestamp(when)
    end = start + (pd.Timedelta("1h") if " " in when else pd.Timedelta("1D")) - pd.Timedelta(1, "ns")
    hit = found[(found["time"] >= start) & (found["time"] <= end)]
    assert len(hit) == 1, found
    assert hit["column"].iloc[0] == column and hit["value"].iloc[0] == pytest.approx(value)


@pytest.mark.parametrize("name,day", GENUINE)
def test_no_genuine_extreme_move_listed_in_sources_md_is_flagged(raw, name, day):
    df = raw(name)
    assert len(df.loc[day]) > 0  # the move is in the data ...
    found = find_bad_prints(df)
    assert not (found["time"].dt.normalize() == pd.Timestamp(day)).any(), found  # ... and not flagged


@pytest.mark.parametrize("name", ["EURUSD_1h", "GBPUSD_1d", "EURUSD_1d", "EURGBP_1d", "BTCUSD_1h", "VXX_1h"])
def test_fx_crypto_and_the_decaying_etn_have_no_bad_prints(raw, name):
    assert find_bad_prints(raw(name)).empty


def test_the_table_says_why_and_what_repair_would_do(raw):
    row = find_bad_prints(raw("AAPL_1d")).set_index("time").loc[pd.Timestamp("2009-09-21")]
    assert (row["body_low"], row["body_high"]) == (6.572145, 6.587145)
    assert row["reason"] == "Low 0.378214 is 94.2 % below the body (48.6 ATR14)"
    assert row["repair"] == "clip Low to 6.57214"
    googl = find_bad_prints(raw("GOOGL_1d")).set_index("time").loc[pd.Timestamp("2008-09-30")]
    assert "body is implausible" in googl["reason"] and googl["repair"] == "flat bar at the previous close 195.04"


def test_stale_zero_range_stretches_neither_crash_nor_flag_ordinary_bars(raw):
    btc = raw("BTCUSD_1h").loc["2018-08-10"]
    assert (btc["High"] == btc["Low"]).sum() >= 5  # the stale stretch really is there
    assert find_bad_prints(raw("BTCUSD_1h").loc[:"2018-08-11"]).empty
    flat = [100.0] * 30
    ok = make_ohlcv(flat + [103.0], flat + [97.0], flat + [100.0])  # a 3 % wick after zero range: real
    assert find_bad_prints(ok).empty
    bad = make_ohlcv(flat + [101.0], flat + [60.0], flat + [100.0])  # a 40 % wick: bad, ATR is zero
    found = find_bad_prints(bad)
    assert len(found) == 1 and found["reason"].iloc[0] == "Low 60 is 40.0 % below the body (zero recent range)"


def test_a_wick_of_a_quarter_of_price_is_genuine_when_the_market_already_moves_that_much():
    close = np.tile([10.0, 10.5], 30)  # bars ranging ~15 % of price: ATR14 ~1.5
    open_ = np.r_[10.5, close[:-1]]
    high, low = np.maximum(open_, close) * 1.05, np.minimum(open_, close) * 0.95
    low[-1] = 7.0  # a 30 % wick, 2 ATR: a crash in a market that moves this much
    assert find_bad_prints(make_ohlcv(high, low, close, open_=open_)).empty
    low[-1] = 1.0  # a 90 % wick, 6 ATR: no
    assert find_bad_prints(make_ohlcv(high, low, close, open_=open_))["column"].tolist() == ["Low"]


@pytest.mark.parametrize("name", ["AAPL_1h", "GOOGL_1d"])
def test_judged_causally_the_table_on_a_prefix_agrees_with_the_whole_frame(raw, name):
    df = raw(name)
    full = find_bad_prints(df)
    rep_full = repair_bad_prints(df)
    bad_bars = df.index.get_indexer(full["time"])
    rng = np.random.default_rng(1)
    for c in sorted({*bad_bars, *(bad_bars - 1), *rng.integers(20, len(df), 6)}):
        part = find_bad_prints(df.iloc[: c + 1])
        pd.testing.assert_frame_equal(part, full[full["time"] <= df.index[c]].reset_index(drop=True))
        pd.testing.assert_frame_equal(repair_bad_prints(df.iloc[: c + 1]), rep_full.iloc[: c + 1], check_freq=False)


def test_warn_names_each_flagged_timestamp_once_and_leaves_the_bars(raw):
    df = raw("AAPL_1h")
    with pytest.warns(BadPrintWarning) as caught:
        out = load_ohlcv("AAPL_1h", bad_prints="warn")
    assert len(caught) == 1
    msg = str(caught[0].message)
    assert msg.startswith("AAPL_1h.csv.gz: 5 bad print(s) kept as they are")
    for t in find_bad_prints(df)["time"]:
        assert msg.count(str(t)) == 1
    pd.testing.assert_frame_equal(out, df)
    assert [r["time"] for r in out.attrs["bad_prints"]][:1] == ["2001-04-05 10:00:00"]


def test_warn_is_silent_on_clean_data():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = load_ohlcv("EURUSD_1d", bad_prints="warn")
    assert out.attrs["bad_prints"] == [] and "repairs" not in out.attrs


def test_repair_clips_bad_wicks_and_flattens_an_implausible_bar_and_records_each_change(raw):
    with pytest.warns(BadPrintWarning, match=r"AAPL_1d.csv.gz: 4 bad print\(s\) repaired \(data.bad_prints: repair\): "
                                             r"2001-04-05 00:00:00 \(clip High to 0.372678\), 2009-09-21"):
        aapl = load_ohlcv("AAPL_1d", bad_prints="repair")
    assert aapl.loc["2009-09-21", "Low"] == 6.572145 == min(aapl.loc["2009-09-21", ["Open", "Close"]])
    assert {"time": "2009-09-21T00:00:00", "column": "Low", "old": 0.378214, "new": 6.572145} in aapl.attrs["repairs"]
    googl = load_ohlcv("GOOGL_1d", bad_prints="repair")
    assert googl.loc["2008-09-30", ["Open", "High", "Low", "Close"]].tolist() == [195.04] * 4
    assert googl.loc["2008-09-30", "Volume"] == raw("GOOGL_1d").loc["2008-09-30", "Volume"]
    assert [r["column"] for r in googl.attrs["repairs"] if r["time"].startswith("2008-09-30")] == \
        ["Open", "High", "Low", "Close"]
    untouched = raw("GOOGL_1d").drop(index=pd.to_datetime(["2007-12-18", "2008-09-30"]))
    pd.testing.assert_frame_equal(googl.drop(index=pd.to_datetime(["2007-12-18", "2008-09-30"])), untouched)
    validate_ohlcv(googl)
    assert find_bad_prints(googl).empty and find_bad_prints(aapl).empty


def test_repair_happens_on_the_source_bars_before_resampling():
    four = load_ohlcv("AAPL_1h", resample="4h", bad_prints="repair")
    assert four.loc["2009-09-21", "Low"].min() > 6.4 and four.attrs["timeframe"] == "4h" and four.attrs["repairs"]
    u = load_universe(["AAPL_1d", "BAC_1d"], bad_prints="repair")
    assert u["BAC_1d"].loc["2001-11-12", "Low"] == 31.4


def test_fail_raises_a_data_error_naming_the_first_bad_print():
    with pytest.raises(DataError, match=r"^AAPL_1d.csv.gz: bad print at 2001-04-05 00:00:00: High 0.482142 is "
                                        r"29.4 % above the body \(4.0 ATR14\) \(data.bad_prints: fail; 4 in all"):
        load_ohlcv("AAPL_1d", bad_prints="fail")
    assert len(load_ohlcv("EURUSD_1h", bad_prints="fail")) == 74_439


def test_an_unknown_policy_is_a_config_error_naming_the_allowed_values(raw):
    with pytest.raises(ConfigError, match=r"data.bad_prints: 'fix' is not allowed; use one of warn, repair, fail"):
        apply_bad_prints(raw("EURUSD_1d"), bad_prints="fix")


def test_a_repaired_dataset_has_its_own_pattern_ids_and_loses_the_false_swings(raw):
    df, fixed = raw("AAPL_1d"), load_ohlcv("AAPL_1d", bad_prints="repair")
    before, after = detect_patterns(df), detect_patterns(fixed)
    assert not set(before["pattern_id"]) & set(after["pattern_id"])
    bad = pd.DatetimeIndex([r["time"] for r in fixed.attrs["repairs"]])
    on_bad = lambda pats, frame: sum(frame.index[pats[c]].isin(bad).sum() for c in ("p1_bar", "p3_bar"))  # noqa: E731
    assert on_bad(before, df) == 4 and on_bad(after, fixed) == 0
    # no repairs, no new identity: checking or "repairing" clean data keeps today's ids
    eur = load_ohlcv("EURUSD_1h", bad_prints="repair")
    assert "repairs" not in eur.attrs
    assert detect_patterns(eur)["pattern_id"].tolist() == detect_patterns(raw("EURUSD_1h"))["pattern_id"].tolist()


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_bad=st.integers(0, 6), stale=st.booleans())
def test_property_any_prefix_gets_the_same_verdicts_and_repairs(seed, n_bad, stale):
    from conftest import random_walk

    df = random_walk(300, seed)
    rng = np.random.default_rng(seed)
    if stale:  # a stretch of zero-range bars, as in BTCUSD_1h on 2018-08-10
        k = int(rng.integers(20, 200))
        df.iloc[k:k + 30, :4] = df["Close"].iloc[k - 1]
    for i in rng.integers(1, len(df), n_bad):  # planted bad wicks of 30-95 % of price
        col, f = ("Low", 1 - rng.uniform(0.3, 0.95)) if rng.random() < 0.5 else ("High", 1 + rng.uniform(0.3, 3))
        df.iloc[i, df.columns.get_loc(col)] = df[["Open", "Close"]].iloc[i].min() * f if col == "Low" else \
            df[["Open", "Close"]].iloc[i].max() * f
    full, fixed = find_bad_prints(df), repair_bad_prints(df)
    assert len(full) >= (n_bad > 0)  # the planted prints are found
    for c in rng.integers(0, len(df), 5):
        pd.testing.assert_frame_equal(find_bad_prints(df.iloc[: c + 1]),
                                      full[full["time"] <= df.index[c]].reset_index(drop=True))
        pd.testing.assert_frame_equal(repair_bad_prints(df.iloc[: c + 1])[OHLCV_COLUMNS],
                                      fixed.iloc[: c + 1][OHLCV_COLUMNS])
    validate_ohlcv(fixed)


def test_the_run_config_data_bad_prints_reaches_every_dataset_of_a_universe_run():
    from qml_plugin.job.universe import load_universe_data

    cfg = {"source": ["BAC_1d", "EURUSD_1d"], "resample": "4h", "bad_prints": "repair", "start": None, "end": None}
    with pytest.warns(BadPrintWarning, match="BAC_1d.csv.gz: 1 bad print"):
        frames = load_universe_data(cfg)
    assert frames["BAC_1d"].loc["2001-11-12", "Low"] == 31.4 and frames["BAC_1d"].attrs["repairs"]
    with pytest.raises(DataError, match=r"BAC_1d.csv.gz: bad print at 2001-11-12"):
        load_universe_data({**cfg, "bad_prints": "fail"})
