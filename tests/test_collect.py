"""Collect mode (SPEC §12): a work unit registers nothing itself; the driver writes what it returns."""
from __future__ import annotations

import os
import sqlite3
import warnings

import pandas as pd
import pytest
from backtesting import Backtest

from qml_plugin import load_ohlcv
from qml_plugin.compute import Scheduler
from qml_plugin.mixins import Registrations, record_run, write_registrations
from qml_plugin.patterns import detect_patterns, label_patterns
from qml_plugin.strategies import QMLStrategy

# what legitimately differs between two runs of the same backtest: when, and under which run id
_RUN_COLUMNS = {"run_id", "created_at", "updated_at", "rev"}


def _run(df, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Backtest(df, QMLStrategy, cash=1_000_000, finalize_trades=True).run(**kw)


def work_unit(n_bars: int) -> Registrations:
    """One market's backtest as a pure function: data in, frames out, no registry path anywhere."""
    df = load_ohlcv("EURUSD_1h").iloc[:n_bars]
    return _run(df, registry_db=None, register_patterns=True)._strategy.registrations


def registry_table(db) -> pd.DataFrame:
    with sqlite3.connect(db) as conn:
        t = pd.read_sql_query("SELECT * FROM ml_pattern_registry", conn)
    return t.drop(columns=[c for c in _RUN_COLUMNS if c in t]).sort_values("pattern_id").reset_index(drop=True)


@pytest.fixture(scope="module")
def bars():
    return load_ohlcv("EURUSD_1h").iloc[:6000]


def test_collect_mode_writes_nothing_and_keeps_the_registrations_on_the_strategy(bars, tmp_path, monkeypatch):
    from qml_plugin import registry

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(registry.PatternRegistry, "__init__",
                        lambda *a, **k: pytest.fail("collect mode opened a registry"))
    stats = _run(bars, registry_db=None)
    assert os.listdir(tmp_path) == []                       # no results/experiments.db, nothing at all
    regs = stats._strategy.registrations
    pats = detect_patterns(bars)
    assert set(regs.patterns["pattern_id"]) == set(pats["pattern_id"])
    labels = label_patterns(bars, pats).set_index("pattern_id")["label"]     # triple-barrier outcomes ride along
    got = regs.patterns.set_index("pattern_id")["label"]
    assert got.notna().sum() > 30
    pd.testing.assert_series_equal(got.sort_index(), labels.sort_index(), check_names=False)
    (batch,) = regs.batches
    assert len(batch[1]) == len(pats) and batch[1].shape[1] >= 170 and batch[2]   # features, schema hash
    trades = stats._trades
    assert len(trades) > 20 and list(regs.outcomes["pattern_id"]) == list(trades["Tag"])
    assert (regs.outcomes["label_source"] == "trade").all()
    pd.testing.assert_series_equal(regs.outcomes["pnl_pct"], trades["ReturnPct"] * 100, check_names=False,
                                   check_index=False)


def test_the_driver_writing_collected_registrations_gives_the_registry_of_registry_db_mode(bars, tmp_path):
    direct = str(tmp_path / "direct.db")
    stats = _run(bars, registry_db=direct)
    record_run(stats, direct)                              # what every qml command does after a run

    with Scheduler("processes", workers=1, progress=False) as sch:   # the unit runs in another process
        (regs,) = sch.map(work_unit, [len(bars)], label=str)
    assert not (tmp_path / "results").exists()
    driver = str(tmp_path / "driver.db")
    assert write_registrations(regs, driver) == len(detect_patterns(bars))
    pd.testing.assert_frame_equal(registry_table(driver), registry_table(direct))

    via_record_run = str(tmp_path / "record_run.db")      # record_run(stats, db) writes a collected run too
    record_run(_run(bars, registry_db=None), via_record_run)
    pd.testing.assert_frame_equal(registry_table(via_record_run), registry_table(direct))
