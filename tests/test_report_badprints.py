"""The run report's bad-prints table (SPEC §1): every flagged bar of the run's data, what was wrong, what was done."""
from __future__ import annotations

import re
import warnings

import pandas as pd
import pytest
from test_badprints import GENUINE, LISTED_BAD

from qml_plugin.badprints import BAD_PRINT_LOG_COLUMNS, BadPrintWarning, bad_print_log
from qml_plugin.data import load_ohlcv
from qml_plugin.report import write_report
from qml_plugin.universe import load_universe


def _rows(page: str) -> list[list[str]]:
    """The cells of the bad-prints table in a written report."""
    section = page.split("<h2>Bad prints</h2>", 1)[1].split("</table>", 1)[0]
    return [re.findall(r"<td>(.*?)</td>", tr) for tr in re.findall(r"<tr>(.*?)</tr>", section, flags=re.S)[1:]]


def test_the_shipped_universe_log_holds_every_bad_print_sources_md_lists_and_no_genuine_move():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BadPrintWarning)
        log = bad_print_log(load_universe("all", bad_prints="warn"))
    assert list(log.columns) == BAD_PRINT_LOG_COLUMNS and len(log.attrs["checked"]) == 18
    for name, when, column, value in LISTED_BAD:
        start = pd.Timestamp(when)
        end = start + (pd.Timedelta("1h") if " " in when else pd.Timedelta("1D"))
        hit = log[(log["dataset"] == name) & (log["time"] >= start) & (log["time"] < end)]
        assert len(hit) == 1, (name, when)
        assert hit["column"].iloc[0] == column and hit["value"].iloc[0] == pytest.approx(value)
    for name, day in GENUINE:
        assert not ((log["dataset"] == name) & (log["time"].dt.normalize() == pd.Timestamp(day))).any(), (name, day)
    assert (log["action"] == "warn").all() and (log["done"] == "kept as it is").all()


def test_the_report_tables_each_bad_print_with_the_action_taken(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BadPrintWarning)
        frames = {"BAC_1d": load_ohlcv("BAC_1d", bad_prints="repair"),
                  "GOOGL_1d": load_ohlcv("GOOGL_1d", bad_prints="warn"),
                  "EURUSD_1d": load_ohlcv("EURUSD_1d", bad_prints="repair")}
    log = bad_print_log(frames)
    page = write_report(tmp_path / "r.html", title="t", table=pd.DataFrame({"mode": ["baseline"]}), equity={},
                        bad_prints=log).read_text()
    assert "3 bad print(s) in 2 of the 3 datasets checked" in page
    rows = _rows(page)
    assert [r[:3] for r in rows] == [["BAC_1d", "2001-11-12", "Low"],
                                     ["GOOGL_1d", "2007-12-18", "Low"],
                                     ["GOOGL_1d", "2008-09-30", "Close"]]
    assert rows[0][5:] == ["repair", "clip Low to 31.4"] and "% below the body" in rows[0][4]
    assert rows[2][5:] == ["warn", "kept as it is"] and "body is implausible" in rows[2][4]
    unchecked = write_report(tmp_path / "u.html", title="t", table=pd.DataFrame({"mode": ["baseline"]}), equity={},
                             bad_prints=bad_print_log({"EURUSD_1d": load_ohlcv("EURUSD_1d")})).read_text()
    assert "Bad prints" not in unchecked                        # not looked at: no claim either way
