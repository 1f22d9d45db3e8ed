"""Loading, validation and resampling of OHLCV data (SPEC §1), and the CLI's bad-input contract."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED_DATA, make_ohlcv

from qml_plugin import DataError, list_datasets, load_ohlcv, validate_ohlcv
from qml_plugin.cli.main import main as qml_main


def test_shipped_datasets_are_listed_and_load_in_backtesting_py_convention():
    assert set(list_datasets()) >= {"EURUSD_1h", "BTCUSD_1h", "GBPUSD_1d", "SPY_1d", "SPY_1h"}
    df = load_ohlcv("EURUSD_1h")
    assert list(df.columns) == ["Open", "High", "Low", "Close", "Volume"]
    assert isinstance(df.index, pd.DatetimeIndex) and df.index.is_monotonic_increasing and df.index.is_unique
    assert all(df[c].dtype == np.float64 for c in df.columns)
    assert len(df) == 74_439 and df.attrs["symbol"] == "EURUSD" and df.attrs["timeframe"] == "1h"


def test_shipped_data_matches_the_shared_copy():
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data not beside the repository")
    ours = load_ohlcv("BTCUSD_1h")
    theirs = load_ohlcv(SHARED_DATA / "BTCUSD_1h.csv.gz")
    pd.testing.assert_frame_equal(ours, theirs)


def test_resample_4h_matches_a_hand_computation():
    idx = pd.to_datetime(["2024-01-05 20:00", "2024-01-05 21:00", "2024-01-05 22:00", "2024-01-05 23:00",
                          "2024-01-08 00:00", "2024-01-08 01:00", "2024-01-08 05:00"])
    raw = pd.DataFrame({"timestamp": idx,
                        "open": [1.0, 2, 3, 4, 5, 6, 7], "high": [1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5],
                        "low": [0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5], "close": [1.2, 2.2, 3.2, 4.2, 5.2, 6.2, 7.2],
                        "volume": [1.0, 2, 3, 4, 5, 6, 7]})
    out = _load_frame(raw, resample="4h")
    # bins labelled and closed on the left: [20:00, 24:00), [Mon 00:00, 04:00), [04:00, 08:00); weekend dropped
    assert out.index.tolist() == pd.to_datetime(["2024-01-05 20:00", "2024-01-08 00:00", "2024-01-08 04:00"]).tolist()
    assert out.loc["2024-01-05 20:00"].tolist() == [1.0, 4.5, 0.5, 4.2, 10.0]
    assert out.loc["2024-01-08 00:00"].tolist() == [5.0, 6.5, 4.5, 6.2, 11.0]
    assert out.loc["2024-01-08 04:00"].tolist() == [7.0, 7.5, 6.5, 7.2, 7.0]
    assert out.attrs["timeframe"] == "4h"


def _load_frame(raw, tmp_path=None, **kw):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "TEST_1h.csv"
        raw.to_csv(path, index=False)
        return load_ohlcv(path, **kw)


def test_columns_are_matched_case_insensitively_and_symbol_comes_from_the_stem(tmp_path):
    raw = pd.DataFrame({"Date": ["2024-01-01", "2024-01-02"], "OPEN": [1, 2], "High": [2, 3],
                        "low": [0.5, 1], "CLOSE": [1.5, 2.5], "Volume": [0, 0]})
    path = tmp_path / "ACME_1d.csv"
    raw.to_csv(path, index=False)
    df = load_ohlcv(path)
    assert df.attrs["symbol"] == "ACME" and df.attrs["timeframe"] == "1d"
    assert df["Open"].tolist() == [1.0, 2.0]


def _bars(changes=None):
    df = make_ohlcv([2.0, 3.0, 4.0], [1.0, 1.5, 2.5], [1.5, 2.5, 3.5])
    for (col, i), v in (changes or {}).items():
        df.iloc[i, df.columns.get_loc(col)] = v
    return df


@pytest.mark.parametrize("df,message", [
    (_bars().drop(columns="Volume"), r"missing columns \['Volume'\]"),
    (_bars({("Close", 1): np.nan}), r"NaN in column Close at 2020-01-01 01:00:00"),
    (_bars({("Low", 2): -1.0}), r"non-positive price at 2020-01-01 02:00:00"),
    (_bars({("High", 1): 2.0}), r"High < max\(Open, Close\) at 2020-01-01 01:00:00"),
    (_bars({("Low", 2): 3.6}), r"Low > min\(Open, Close\) at 2020-01-01 02:00:00"),
    (_bars().iloc[[0, 2, 1]], r"index is not sorted: 2020-01-01 01:00:00 comes after 2020-01-01 02:00:00"),
    (_bars().iloc[[0, 1, 1]], r"duplicate timestamp 2020-01-01 01:00:00"),
    (_bars().reset_index(drop=True), r"index must be a DatetimeIndex, got RangeIndex"),
])
def test_bad_ohlcv_raises_a_data_error_naming_the_problem_and_timestamp(df, message):
    with pytest.raises(DataError, match=message):
        validate_ohlcv(df)


def test_validation_never_drops_rows():
    df = _bars()
    assert validate_ohlcv(df) is df and len(df) == 3


def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(DataError, match=r"unknown dataset 'EURUSD'; valid names: AAPL_1d, AAPL_1h, BAC_1d"):
        load_ohlcv("EURUSD")


def test_missing_file_and_missing_time_column_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="data file not found"):
        load_ohlcv(tmp_path / "nope.csv")
    path = tmp_path / "x.csv"
    pd.DataFrame({"open": [1], "high": [1], "low": [1], "close": [1], "volume": [0]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="no time column; expected one of timestamp, date, datetime"):
        load_ohlcv(path)


def test_bad_resample_rule_is_a_data_error():
    with pytest.raises(DataError, match="resample='banana' is not a pandas offset alias"):
        load_ohlcv("GBPUSD_1d", resample="banana")


def test_cli_bad_dataset_exits_2_with_one_line_listing_valid_names(capsys):
    assert qml_main(["detect", "--data", "NOPE"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "unknown dataset 'NOPE'" in err and "EURUSD_1h" in err and "BTCUSD_1h" in err


def test_cli_detect_prints_counts_by_type_and_outcome(capsys):
    assert qml_main(["detect", "--data", "GBPUSD_1d", "--swing-n", "3"]) == 0
    out = capsys.readouterr().out
    for word in ("bullish_qml", "bearish_qml", "expired", "stop", "target", "win rate"):
        assert word in out


def test_console_script_is_installed_and_exits_2_on_bad_input():
    r = subprocess.run([sys.executable, "-m", "qml_plugin.cli.main", "detect", "--data", "NOPE"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "valid names" in r.stderr


@pytest.fixture(scope="module")
def fresh_interpreter(tmp_path_factory):
    """One new interpreter, in a folder outside the checkout, that first finds the package's data and
    configs (a fresh import, as a user's first line would) and then imports every subpackage of the
    checkout by name: ``(returncode, stdout, stderr)``. One process for both checks below: each new
    interpreter spends seconds importing pandas, scikit-learn and bokeh."""
    from conftest import REPO

    names = sorted(".".join(p.parent.relative_to(REPO).parts) for p in REPO.glob("qml_plugin/**/__init__.py"))
    code = ("import qml_plugin, qml_plugin.data as d; from qml_plugin.cli.common import default_config; "
            "print(d.list_datasets()); print(default_config('qml_with_ml.yaml'), flush=True)\n"
            "import importlib, sys\nfor n in sys.argv[1:]: importlib.import_module(n)\nprint('ok')")
    r = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True,
                       cwd=tmp_path_factory.mktemp("elsewhere"))
    return r.returncode, r.stdout, r.stderr


def test_installed_package_finds_its_data_and_configs_from_any_folder(fresh_interpreter):
    _, out, err = fresh_interpreter
    found = out.split("\n")[:2]
    assert len(found) == 2, err
    assert "EURUSD_1h" in found[0] and "qml_with_ml.yaml" in found[1], err


def test_every_subpackage_of_the_checkout_is_installed(fresh_interpreter):
    returncode, out, err = fresh_interpreter
    assert returncode == 0 and out.split("\n")[2] == "ok", err


# --- issue 11, data reliability: every data error names the file, and the column and row where they apply ---

def _csv(tmp_path, text, name="ACME_1h.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


HEADER = "timestamp,open,high,low,close,volume\n"


@pytest.mark.parametrize("stamps,unit", [
    ([1609459200, 1609462800, 1609466400], "s"),            # 2021-01-01 00:00 in epoch seconds
    ([1609459200000, 1609462800000, 1609466400000], "ms"),  # ... and in milliseconds
    ([1609459200.0, 1609462800.0, 1609466400.0], "s"),      # integral floats count as integers
])
def test_an_integer_time_column_is_epoch_seconds_or_milliseconds_by_magnitude(tmp_path, stamps, unit):
    rows = "".join(f"{t},1,2,0.5,1.5,0\n" for t in stamps)
    df = load_ohlcv(_csv(tmp_path, HEADER + rows))
    assert df.index.tolist() == pd.date_range("2021-01-01", periods=3, freq="1h").tolist()


def test_epoch_time_is_a_utc_instant_shown_in_the_files_clock(tmp_path):
    path = _csv(tmp_path, HEADER + "1609459200,1,2,0.5,1.5,0\n")
    assert load_ohlcv(path, tz="America/New_York").index[0] == pd.Timestamp("2020-12-31 19:00")


def test_nanosecond_epoch_times_are_refused_never_read_as_1970(tmp_path):
    path = _csv(tmp_path, HEADER + "1609459200000000000,1,2,0.5,1.5,0\n")
    with pytest.raises(DataError, match=r"ACME_1h.csv: integer time column 'timestamp' reaches 1609459200000000000, "
                                        r"which is micro- or nanoseconds; give epoch seconds or milliseconds"):
        load_ohlcv(path)


def test_time_strings_with_an_offset_are_converted_to_the_files_clock(tmp_path):
    path = _csv(tmp_path, HEADER + "2021-01-01 00:00:00+01:00,1,2,0.5,1.5,0\n2021-01-01 01:00:00+01:00,1,2,0.5,1.5,0\n")
    df = load_ohlcv(path)
    assert df.index.tz is None and df.index[0] == pd.Timestamp("2020-12-31 23:00")


def test_inf_prices_fail_validation_naming_column_and_timestamp(tmp_path):
    with pytest.raises(DataError, match=r"inf in column High at 2020-01-01 01:00:00; prices and volume must be finite"):
        validate_ohlcv(_bars({("High", 1): np.inf}))
    path = _csv(tmp_path, HEADER + "2021-01-01 00:00,1,2,0.5,1.5,0\n2021-01-01 01:00,1,inf,0.5,1.5,0\n")
    with pytest.raises(DataError, match=r"ACME_1h.csv: inf in column High at 2021-01-01 01:00:00"):
        load_ohlcv(path)


def test_a_header_only_csv_and_an_empty_file_are_clear_data_errors(tmp_path):
    with pytest.raises(DataError, match=r"ACME_1h.csv: no rows \(only a header\); need at least one bar"):
        load_ohlcv(_csv(tmp_path, HEADER))
    with pytest.raises(DataError, match=r"EMPTY_1h.csv: the file is empty"):
        load_ohlcv(_csv(tmp_path, "", name="EMPTY_1h.csv"))
    with pytest.raises(DataError, match=r"no rows; need at least one bar"):
        validate_ohlcv(_bars().iloc[:0])


def test_a_non_number_names_file_column_line_and_timestamp(tmp_path):
    text = HEADER + "2021-01-01 00:00,1,2,0.5,1.5,0\n2021-01-01 01:00,1,2,0.5,abc,0\n"
    with pytest.raises(DataError, match=r"ACME_1h.csv: column 'close' at line 3 \(2021-01-01 01:00:00\): "
                                        r"abc is not a number"):
        load_ohlcv(_csv(tmp_path, text))


def test_an_unparseable_time_names_file_column_and_line(tmp_path):
    text = HEADER + "2021-01-01 00:00,1,2,0.5,1.5,0\nyesterday,1,2,0.5,1.5,0\n"
    with pytest.raises(DataError, match=r"ACME_1h.csv: cannot parse the time column 'timestamp' at line 3: yesterday"):
        load_ohlcv(_csv(tmp_path, text))


def test_validation_errors_of_a_file_name_the_file(tmp_path):
    text = HEADER + "2021-01-01 00:00,1,2,0.5,1.5,0\n2021-01-01 00:00,1,2,0.5,1.5,0\n"
    with pytest.raises(DataError, match=r"ACME_1h.csv: duplicate timestamp 2021-01-01 00:00:00 in the index"):
        load_ohlcv(_csv(tmp_path, text))
    text = HEADER + "2021-01-01 00:00,1,2,0.5,1.5,0\n2021-01-01 01:00,1,1.2,0.5,1.5,0\n"
    with pytest.raises(DataError, match=r"ACME_1h.csv: High < max\(Open, Close\) at 2021-01-01 01:00:00"):
        load_ohlcv(_csv(tmp_path, text))
    with pytest.raises(DataError, match=r"ACME_1h.csv: missing columns \['Volume'\]; .* got \['timestamp', 'open'"):
        load_ohlcv(_csv(tmp_path, "timestamp,open,high,low,close\n2021-01-01,1,2,0.5,1.5\n"))


def test_a_damaged_gzip_is_a_data_error_naming_the_file(tmp_path):
    path = tmp_path / "BROKEN_1h.csv.gz"
    path.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(DataError, match=r"BROKEN_1h.csv.gz: cannot be read as gz"):
        load_ohlcv(path)


def test_messages_show_a_bad_value_cut_to_about_200_characters(tmp_path):
    text = HEADER + "2021-01-01 00:00,1,2,0.5," + "9x" * 5000 + ",0\n"
    with pytest.raises(DataError) as e:
        load_ohlcv(_csv(tmp_path, text))
    assert len(str(e.value)) < 400 and "(10000 chars)" in str(e.value)
    with pytest.raises(DataError) as e:
        load_ohlcv("X" * 5000)
    assert len(str(e.value)) < 600


def test_cli_data_check_prints_the_bad_print_table(capsys):
    assert qml_main(["data", "check", "GOOGL_1d", "EURUSD_1d"]) == 0
    out = capsys.readouterr().out
    assert "GOOGL_1d: 4,183 bars, 2 bad print(s)" in out and "EURUSD_1d: 3,738 bars, 0 bad print(s)" in out
    assert "2007-12-18" in out and "flat bar at the previous close 195.04" in out
    assert out.rstrip().endswith("2 bad print(s) in 2 dataset(s)")


def test_cli_data_check_of_bad_input_exits_2_with_one_line(capsys, tmp_path):
    assert qml_main(["data", "check", str(tmp_path / "*.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no dataset matches the glob" in err


def test_cli_data_list_shows_each_datasets_clock(capsys):
    assert qml_main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 19 and "America/New_York" in out
