"""The sweep's fast path: same trades as backtesting.py, checked against vectorbt's Portfolio on every run,
the same table on every scheduler, and its overfitting statistics (DSR, PBO)."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from backtesting import Backtest
from conftest import random_walk

from qml_plugin import load_ohlcv
from qml_plugin.patterns import QMLParams
from qml_plugin.strategies import QMLStrategy
from qml_plugin.vbt import EngineMismatchError, EventBook, expand_grid, sweep
from qml_plugin.vbt.fast import FAST_METRICS

GRID = {"swing_n": [2, 3, 5], "head_min_atr": [0.3, 0.5, 0.8], "target": ["swing", "rr"], "rr": [1.5, 2.5],
        "max_wait": [10, 20], "stop_buffer_atr": [0.1, 0.25, 0.5], "entry_offset_atr": [0.0, 0.1],
        "max_hold": [50, 100], "min_score": [0.3, 0.5]}


def config(grid: dict, start="2011-01-01", end="2012-06-30", **sweep_kw) -> dict:
    return {"data": {"source": "EURUSD_1h", "resample": None, "start": start, "end": end},
            "sweep": {"grid": grid, "heatmap": None, **sweep_kw}, "compute": {"scheduler": "serial"}}


@pytest.fixture(scope="module")
def markets() -> dict[str, pd.DataFrame]:
    eur = load_ohlcv("EURUSD_1h")
    eur, attrs = eur.iloc[:30_000], eur.attrs
    eur.attrs.update(attrs)
    return {"EURUSD_1h": eur, "BTCUSD_1h": load_ohlcv("BTCUSD_1h")}


@pytest.mark.parametrize("market", ["EURUSD_1h", "BTCUSD_1h"])
def test_fast_path_trades_equal_backtesting_py_qmlstrategy_for_five_random_combinations(markets, market):
    df = markets[market]
    grid = expand_grid(GRID)
    picks = np.random.default_rng(13).choice(len(grid), 5, replace=False)
    book = EventBook(df)
    for i in picks:
        p = grid[i]
        _, eb, xb, ep, xp, d, _ = book.simulate(p)
        closed = xb >= 0                                       # backtesting.py leaves an open last trade out
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bt = Backtest(df, QMLStrategy, cash=1e9, commission=0.0).run(
                register_patterns=False, **{f: getattr(p, f) for f in QMLParams.fields()})._trades
        assert len(bt) >= 10, p
        np.testing.assert_array_equal(eb[closed], bt["EntryBar"], err_msg=str(p))
        np.testing.assert_array_equal(xb[closed], bt["ExitBar"], err_msg=str(p))
        np.testing.assert_array_equal(d[closed], np.sign(bt["Size"]), err_msg=str(p))
        np.testing.assert_allclose(ep[closed], bt["EntryPrice"], rtol=1e-12, err_msg=str(p))
        np.testing.assert_allclose(xp[closed], bt["ExitPrice"], rtol=1e-12, err_msg=str(p))


def test_every_sweep_checks_its_top_rows_against_the_portfolio_and_a_broken_fast_path_raises(monkeypatch):
    grid = {"swing_n": [3, 5], "target": ["rr"], "rr": [1.5, 2.0, 3.0]}
    table = sweep(config(grid, verify_top=4), progress=False, write=False)
    assert table.attrs["verified"] == 4
    levels = EventBook.levels

    def off_by_a_tick(self, p):          # the fast path's targets one pip too far: a plausible bug
        arr, *rest = levels(self, p)
        return ({**arr, "target": arr["target"] + arr["direction"] * 1e-4}, *rest)

    monkeypatch.setattr(EventBook, "levels", off_by_a_tick)
    with pytest.raises(EngineMismatchError, match=r"sweep fast path != vectorbt Portfolio for QMLParams\(.*"
                                                  r"(exit|trades|metric|total_return|sharpe)"):
        sweep(config(grid, verify_top=4), progress=False, write=False)
    monkeypatch.undo()
    sweep(config(grid, verify_top=0), progress=False, write=False)   # verify_top: 0 turns the check off


def test_the_check_also_compares_the_metrics_not_only_the_trades(monkeypatch):
    import qml_plugin.vbt.fast as fast

    real = fast.simulate_nb

    def wrong_sharpe(*args):
        out, *rest = real(*args)
        out = out.copy()
        out[FAST_METRICS.index("sharpe")] *= 1 + 1e-6
        return (out, *rest)

    monkeypatch.setattr(fast, "simulate_nb", wrong_sharpe)
    with pytest.raises(EngineMismatchError, match="sharpe"):
        sweep(config({"swing_n": [3, 5]}, verify_top=2), progress=False, write=False)


def test_the_table_is_the_same_on_serial_processes_and_a_two_worker_dask_cluster():
    grid = {"swing_n": [2, 3], "head_min_atr": [0.3, 0.5], "target": ["rr"], "rr": [1.5, 2.5], "max_wait": [10, 20]}
    tables = {s: sweep({**config(grid), "compute": {"scheduler": s, "workers": 2}}, progress=False, write=False)
              for s in ("serial", "processes", "dask")}
    for s in ("processes", "dask"):
        pd.testing.assert_frame_equal(tables[s], tables["serial"], check_exact=True)
        assert tables[s].attrs["pbo"] == tables["serial"].attrs["pbo"]


def test_pbo_of_a_grid_over_random_walks_is_high():
    grid = {"swing_n": [2, 3, 4], "head_min_atr": [0.3, 0.6], "target": ["rr"], "rr": [1.0, 2.0],
            "max_wait": [5, 20], "stop_buffer_atr": [0.1, 0.5]}
    for seed in (1, 2):
        df = random_walk(40_000, seed=seed)
        table = sweep(config(grid), ohlcv=df, progress=False, write=False)
        assert table.attrs["pbo"] >= 0.4, (seed, table.attrs["pbo"])
        assert table["dsr"].iloc[0] < 0.95          # and the "best" row is not significant once deflated


def test_sweep_prints_pbo_and_dsr_and_the_heatmap_title_carries_them(tmp_path, capsys):
    import yaml

    from qml_plugin.cli.main import main

    cfg = config({"swing_n": [3, 5], "head_min_atr": [0.3, 0.5]}, heatmap=["swing_n", "head_min_atr"],
                 output=str(tmp_path / "s.csv"))
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({**cfg, "data": {**cfg["data"], "start": "2011-01-01", "end": "2012-06-30"}}))
    assert main(["sweep", "--config", str(path), "--no-progress", "--scheduler", "serial"]) == 0
    out = capsys.readouterr().out
    assert "overfitting: PBO " in out and "best row's DSR " in out and "verified through vectorbt" in out
    assert (tmp_path / "s_heatmap.png").stat().st_size > 1000
