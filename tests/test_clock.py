"""Shipped datasets, their manifest and clocks (SPEC §1, §11 "One clock"), and universes of many markets."""
from __future__ import annotations

import filecmp
import hashlib

import pandas as pd
import pytest
from conftest import REPO, SHARED_DATA, make_ohlcv

from qml_plugin import ConfigError, DataError
from qml_plugin.data import bar_close_utc, dataset_info, list_datasets, load_ohlcv
from qml_plugin.patterns import detect_patterns
from qml_plugin.universe import load_universe, universe_sources

EQUITIES = {"AAPL", "BAC", "BNO", "EEM", "FB", "GOOGL", "IWM", "SPY", "USO", "VXX"}


def test_all_eighteen_shared_datasets_are_shipped_byte_for_byte():
    assert len(list_datasets()) == 18
    if SHARED_DATA.is_dir():
        shared = sorted(p.name[: -len(".csv.gz")] for p in SHARED_DATA.glob("*.csv.gz"))
        assert list_datasets() == shared
        for name in shared:
            assert filecmp.cmp(REPO / "data" / f"{name}.csv.gz", SHARED_DATA / f"{name}.csv.gz", shallow=False)


def test_manifest_gives_every_dataset_its_clock_new_york_for_us_equities_utc_for_fx_and_crypto():
    manifest = pd.read_csv(REPO / "data" / "manifest.csv")
    assert sorted(manifest["dataset"]) == list_datasets()
    for name in list_datasets():
        info = dataset_info(name)
        assert f"{info['symbol']}_{info['timeframe']}" == name
        if info["symbol"] in EQUITIES:
            assert (info["tz"], info["session_close"]) == ("America/New_York", "16:00"), name
        else:
            assert (info["tz"], info["session_close"]) == ("UTC", None), name
    assert "manifest.csv" in (REPO / "pyproject.toml").read_text()  # installed as package data


def test_load_ohlcv_sets_symbol_timeframe_and_tz_and_keeps_the_index_naive():
    df = load_ohlcv("AAPL_1h")
    assert (df.attrs["symbol"], df.attrs["timeframe"], df.attrs["tz"]) == ("AAPL", "1h", "America/New_York")
    assert df.index.tz is None and df.index[0] == pd.Timestamp("1998-01-02 09:00")
    assert load_ohlcv("BTCUSD_1h").attrs["tz"] == "UTC"


def test_user_files_are_utc_unless_tz_is_given_and_a_bad_tz_is_named(tmp_path):
    path = tmp_path / "ACME_1h.csv"
    make_ohlcv([2.0, 3.0], [1.0, 1.5], [1.5, 2.5]).rename_axis("timestamp").to_csv(path)
    assert load_ohlcv(path).attrs["tz"] == "UTC"
    assert load_ohlcv(path, tz="Europe/London").attrs["tz"] == "Europe/London"
    with pytest.raises(DataError, match=r"ACME_1h.csv: tz='Mars/Olympus' is not an IANA time zone"):
        load_ohlcv(path, tz="Mars/Olympus")
    with pytest.raises(DataError, match=r"SPY_1d: tz='UTC' contradicts the manifest.*America/New_York"):
        load_ohlcv("SPY_1d", tz="UTC")


def _ids_digest(df):
    pats = detect_patterns(df)
    return len(pats), hashlib.sha256(",".join(pats["pattern_id"]).encode()).hexdigest()[:16]


@pytest.mark.parametrize("name,resample,count,digest", [
    ("EURUSD_1h", None, 1909, "e5d60c4b75f0bc8d"),
    ("EURUSD_1h", "4h", 474, "7158aa8580314"),
    ("SPY_1d", None, 145, "858b49f551b0608a"),
])
def test_pattern_ids_of_todays_single_market_data_do_not_change(name, resample, count, digest):
    n, got = _ids_digest(load_ohlcv(name, resample=resample))
    assert n == count and got.startswith(digest)  # digests taken with the loader before clocks existed


def test_bar_close_utc_is_start_plus_duration_in_the_source_clock_dst_correct():
    spy = load_ohlcv("SPY_1h")
    close = pd.Series(bar_close_utc(spy), index=spy.index)
    assert close[pd.Timestamp("2020-07-01 15:00")] == pd.Timestamp("2020-07-01 20:00", tz="UTC")  # EDT
    assert close[pd.Timestamp("2020-01-02 15:00")] == pd.Timestamp("2020-01-02 21:00", tz="UTC")  # EST
    assert close[pd.Timestamp("2020-01-02 09:00")] == pd.Timestamp("2020-01-02 15:00", tz="UTC")  # 09:30-10:00
    eur = load_ohlcv("EURUSD_1h")
    assert (bar_close_utc(eur) == (eur.index + pd.Timedelta("1h")).tz_localize("UTC")).all()


def test_daily_equity_bars_close_at_the_new_york_session_close_and_fx_days_at_midnight():
    spy = load_ohlcv("SPY_1d").loc["2020-01-02":"2020-07-01"]
    close = bar_close_utc(spy)
    assert close[0] == pd.Timestamp("2020-01-02 21:00", tz="UTC") and close[-1] == pd.Timestamp("2020-07-01 20:00",
                                                                                                 tz="UTC")
    gbp = load_ohlcv("GBPUSD_1d").loc["2016-10-06":"2016-10-06"]
    assert bar_close_utc(gbp)[0] == pd.Timestamp("2016-10-07 00:00", tz="UTC")
    # an equity resampled to days closes at the session close too; to 4h at the bin's end (12:00, 16:00)
    aapl = load_ohlcv("AAPL_1h", resample="1D").loc["2020-07-01":"2020-07-01"]
    assert bar_close_utc(aapl)[0] == pd.Timestamp("2020-07-01 20:00", tz="UTC")
    four = load_ohlcv("SPY_1h", resample="4h").loc["2020-07-01"]
    assert list(bar_close_utc(four)) == [pd.Timestamp("2020-07-01 16:00", tz="UTC"),
                                         pd.Timestamp("2020-07-01 20:00", tz="UTC")]


def test_a_daily_label_is_known_after_an_hourly_bar_of_the_same_day():
    daily = load_ohlcv("SPY_1d").loc["2019-03-05":"2019-03-05"]
    hourly = load_ohlcv("SPY_1h").loc["2019-03-05 10:00":"2019-03-05 10:00"]
    assert daily.index[0] < hourly.index[0]  # naive stamps say the daily bar came first ...
    assert bar_close_utc(daily)[0] > bar_close_utc(hourly)[0]  # ... but it is known only at 16:00


def test_ambiguous_and_missing_wall_times_give_the_later_instant():
    df = make_ohlcv([2.0] * 3, [1.0] * 3, [1.5] * 3, start="2021-11-07 00:00", freq="1h")
    df.attrs["tz"] = "America/New_York"
    # 00:00 closes at the doubled wall time 01:00, read as the later one (EST, 06:00 UTC, not EDT's 05:00)
    assert list(bar_close_utc(df)) == [pd.Timestamp(t, tz="UTC") for t in
                                       ("2021-11-07 06:00", "2021-11-07 07:00", "2021-11-07 08:00")]
    spring = make_ohlcv([2.0] * 2, [1.0] * 2, [1.5] * 2, start="2021-03-14 01:00", freq="1h")
    spring.attrs["tz"] = "America/New_York"
    assert list(bar_close_utc(spring)) == [pd.Timestamp("2021-03-14 07:00", tz="UTC")] * 2


def test_bar_close_utc_needs_a_bar_duration():
    df = make_ohlcv([2.0], [1.0], [1.5])
    df.attrs = {"source": "one.csv"}
    with pytest.raises(DataError, match=r"one.csv: cannot tell the bar duration"):
        bar_close_utc(df)


def test_shipped_universes_select_by_timeframe():
    assert universe_sources("hourly") == ["AAPL_1h", "BAC_1h", "BTCUSD_1h", "EURUSD_1h", "SPY_1h", "VXX_1h"]
    assert len(universe_sources("daily")) == 12 and universe_sources("all") == list_datasets()
    assert universe_sources(["SPY_*", "SPY_1d", "EURUSD_1h"]) == ["SPY_1d", "SPY_1h", "EURUSD_1h"]


def test_load_universe_keys_frames_symbol_timeframe_and_each_keeps_its_attrs():
    u = load_universe(["EURUSD_1h", "SPY_1d", "GBPUSD_1d"], resample="4h")
    assert list(u) == ["EURUSD_4h", "SPY_1d", "GBPUSD_1d"]
    assert u["EURUSD_4h"].attrs["timeframe"] == "4h" and u["EURUSD_4h"].attrs["symbol"] == "EURUSD"
    pd.testing.assert_frame_equal(u["EURUSD_4h"], load_ohlcv("EURUSD_1h", resample="4h"))
    pd.testing.assert_frame_equal(u["SPY_1d"], load_ohlcv("SPY_1d"))  # daily stays daily under 4h
    assert u["SPY_1d"].attrs["tz"] == "America/New_York"


def test_load_universe_reads_a_glob_of_files(tmp_path):
    for name in ("AAA_1h", "BBB_1h", "CCC_1d"):
        make_ohlcv([2.0, 3.0], [1.0, 1.5], [1.5, 2.5]).rename_axis("timestamp").to_csv(tmp_path / f"{name}.csv")
    u = load_universe(str(tmp_path / "*_1h.csv"))
    assert list(u) == ["AAA_1h", "BBB_1h"] and u["AAA_1h"].attrs["tz"] == "UTC"
    with pytest.raises(DataError, match=r"no dataset matches the glob '.*\*_5m.csv'"):
        load_universe(str(tmp_path / "*_5m.csv"))


def test_resampling_two_datasets_of_one_symbol_to_one_timeframe_is_a_config_error_naming_both():
    with pytest.raises(ConfigError, match=r"SPY_1d and 'SPY_1h' are both SPY at 1d with data.resample='1d'"):
        load_universe(["SPY_1d", "SPY_1h"], resample="1d")
    with pytest.raises(ConfigError, match=r"SPY_1d and 'SPY_1h' are both SPY at 1D"):
        load_universe(["SPY_1d", "SPY_1h"], resample="1D")  # the same bar length spelled another way
    with pytest.raises(ConfigError, match=r"empty list of datasets"):
        load_universe([])


def test_resampling_to_bars_finer_than_the_data_is_refused():
    with pytest.raises(DataError, match=r"SPY_1d.csv.gz: resample='4h' is finer than the data's own bars"):
        load_ohlcv("SPY_1d", resample="4h")


def test_load_universe_is_reachable_from_the_data_module_too():
    from qml_plugin import data, universe

    assert data.load_universe is universe.load_universe and data.universe_sources("daily")[0] == "AAPL_1d"
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        data.nope  # noqa: B018
