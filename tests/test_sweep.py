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


def test_the_table_is_the_same_on_serial_processes_and_a_two_worker_dask_cluster(dask_address):
    grid = {"swing_n": [2, 3], "head_min_atr": [0.3, 0.5], "target": ["rr"], "rr": [1.5, 2.5], "max_wait": [10, 20]}
    compute = {"serial": {"workers": 2}, "processes": {"workers": 2}, "dask": {"address": dask_address}}
    tables = {s: sweep({**config(grid), "compute": {"scheduler": s, **compute[s]}}, progress=False, write=False)
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


def _plant_winners(df: pd.DataFrame, p: QMLParams, *, share: float, seed: int, ramp: int = 4) -> pd.DataFrame:
    """A copy of the random walk ``df`` in which ``share`` of the trades that ``p`` takes are made to win.

    Walking ``p``'s own trades in time order (the fast path's one-position rule): a trade picked (with
    probability ``share``) gets a fill on the bar after detection and a straight run to just past its
    target over ``ramp`` bars; the walk after it is the original walk, rescaled to continue from there.
    A trade not picked is left as it is. Detection is causal, so rewriting bars after a pattern's
    detection never changes that pattern; later patterns are detected again on the rewritten bars.
    Only ``p`` (and neighbours that find the same patterns and a nearer target) can exploit this.
    """
    from qml_plugin.filter import decide

    rng = np.random.default_rng(seed)
    cols = ["Open", "High", "Low", "Close"]
    o, h, l, c = (df[k].to_numpy(float).copy() for k in cols)
    cursor, n = 0, len(df)
    while True:
        cur = df.copy()
        cur[cols] = np.column_stack([o, h, l, c])
        book = EventBook(cur)
        arr, ok, _, _, order, _ = book.levels(p)
        take, _ = decide(arr["validity_score"], np.nan, mode=None, min_score=p.min_score)
        bars = arr["detection_bar"][order]
        nxt = order[(take & ok)[order] & (bars >= cursor) & (bars + ramp + 2 < n)]
        if len(nxt) == 0:
            return cur
        k = nxt[0]
        t, d, entry, stop, target = (int(arr["detection_bar"][k]), arr["direction"][k], arr["entry"][k],
                                     arr["stop"][k], arr["target"][k])
        if not min(stop, target) < c[t] < max(stop, target) or rng.random() >= share:     # p trades it as it is
            _, eb, xb, *_ = book.simulate(p)
            own = np.flatnonzero((eb > t) & (eb <= t + p.max_wait))
            cursor = (int(xb[own[0]]) if xb[own[0]] >= 0 else n) if len(own) else t + p.max_wait
            continue
        unit = abs(entry - stop)
        o[t + 1], c[t + 1] = c[t], entry            # opens at the last close, trades through the entry, no stop
        h[t + 1] = max(o[t + 1], entry) + (0.05 * unit if d < 0 else 0.0)
        l[t + 1] = min(o[t + 1], entry) - (0.05 * unit if d > 0 else 0.0)
        for j, px in enumerate(entry + (target - entry) * 1.02 * np.arange(1, ramp + 1) / ramp, start=t + 2):
            o[j], c[j] = c[j - 1], px
            h[j], l[j] = max(o[j], px) + 0.01 * unit, min(o[j], px) - 0.01 * unit
        x = t + 1 + ramp                               # the exit bar: the target is hit here
        scale = c[x] / df["Close"].to_numpy()[x]
        for a, k_ in zip((o, h, l, c), cols):
            a[x + 1:] = df[k_].to_numpy()[x + 1:] * scale
        df, cursor = cur.copy(), x
        df[cols] = np.column_stack([o, h, l, c])


def test_pbo_of_a_swept_market_is_low_when_one_combination_exploits_a_planted_effect_and_high_without_it():
    grid = {"swing_n": [2, 3, 4], "head_min_atr": [0.3, 0.6], "target": ["rr"], "rr": [1.0, 2.0],
            "max_wait": [5, 20], "stop_buffer_atr": [0.1, 0.5], "min_score": [0.3]}
    star = QMLParams(swing_n=3, head_min_atr=0.3, target="rr", rr=2.0, max_wait=20, stop_buffer_atr=0.5,
                     min_score=0.3)
    for seed in (1, 2):
        walk = random_walk(8_000, seed=seed)
        planted = _plant_winners(walk, star, share=0.5, seed=seed)
        null = sweep(config(grid, verify_top=3), ohlcv=walk, progress=False, write=False)
        table = sweep(config(grid, verify_top=3), ohlcv=planted, progress=False, write=False)
        assert null.attrs["pbo"] >= 0.4, (seed, null.attrs["pbo"])            # the same grid on the bare walk
        assert table.attrs["pbo"] <= 0.1, (seed, table.attrs["pbo"])
        assert table["swing_n"].iloc[0] == 3 and table["rr"].iloc[0] == 2.0      # the exploiting family wins
        assert table["dsr"].iloc[0] > 0.99 > null["dsr"].iloc[0]


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
