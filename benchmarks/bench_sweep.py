"""Benchmark: the sweep's event-level fast path on EURUSD_1h against Backtest.optimize and vectorbt's Portfolio.

What it measures, all in one run on the full EURUSD_1h (74k hourly bars), warm (numba caches loaded,
data in memory), wall and CPU time:

1. ``qml_plugin.vbt.sweep`` (serial, ``verify_top: 10`` included, PBO and DSR included) on a
   1,000-combination grid in which every combination trades differently (``target: rr`` with varied
   ``rr``, ``max_wait``, ``stop_buffer_atr``, ``entry_offset_atr``, ``swing_n``; the script checks that the
   1,000 daily-return series are distinct), per combination;
2. ``Backtest.optimize`` on ``QMLStrategy`` over a 12-combination subset of that grid, per combination
   (backtesting.py's own process pool), and the trade counts of those 12 against the sweep's;
3. the same 1,000 combinations simulated bar by bar through vectorbt's Portfolio (``PatternBook``
   plans into ``Portfolio.from_orders``, 64 columns per call, then ``pf.value()`` and the metrics), per
   combination: what the sweep cost before the fast path;
4. where the fast path's time goes: detection, levels and walk order, the kernel (walk, fills,
   exits, daily equity, score; split into selection + labelling and metrics by re-running the
   metrics alone on the kernel's trades), PBO, DSR, the Portfolio check of the top 10;
5. ``run_grid`` (the sweep's work units, no verify / PBO) on the §12 schedulers, serial, processes (2)
   and a Dask LocalCluster (2, started once outside the timing and reached by address), on the
   1,000-combination grid and on the 10,000-combination grid of step 6; the bars go to each worker once
   (``Scheduler.map(shared=)``), the combinations in about four blocks per worker;
6. ``--rss N``: an N-combination sweep (serial, with its progress bar) in a fresh process, and its
   peak RSS (``ru_maxrss``);
7. ``qml optimize`` (``configs/optimize.yaml``, 60 trials) on serial, processes (2) and Dask (2), and
   where a serial search's time goes (TPE's ``ask`` on the driver, the trials, importance).

    python benchmarks/bench_sweep.py                  # 1-5 and 7 (several minutes on 2 shared cores)
    python benchmarks/bench_sweep.py --only-schedulers  # 5 and 7
    python benchmarks/bench_sweep.py --rss 10000      # 6 only
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
GRID_1000 = {"swing_n": [2, 3], "target": ["rr"], "rr": [1.25, 1.5, 1.75, 2.0, 2.5],
             "max_wait": [5, 10, 20, 30, 40], "stop_buffer_atr": [0.0, 0.25, 0.5, 0.75, 1.0],
             "entry_offset_atr": [0.0, 0.05, 0.1, 0.15]}
GRID_10000 = {"swing_n": [2, 3], "target": ["rr"], "rr": [1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0, 3.5],
              "max_wait": [3, 5, 8, 10, 15, 20, 25, 30, 35, 40],
              "stop_buffer_atr": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.75, 0.9, 1.0],
              "max_hold": [30, 50, 100, 200, 300]}
SUBSET_12 = {"swing_n": [2, 3], "target": ["rr"], "rr": [1.5, 2.0], "max_wait": [10, 20, 30],
             "stop_buffer_atr": [0.25], "entry_offset_atr": [0.05]}


class Clock:
    """Wall and CPU seconds of a block."""

    def __enter__(self):
        self.w, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.w, time.process_time() - self.c


def config(grid: dict, **sweep_kw) -> dict:
    return {"data": {"source": "EURUSD_1h"}, "sweep": {"grid": grid, "heatmap": None, **sweep_kw},
            "compute": {"scheduler": "serial"}}


def per(clock: Clock, n: int) -> str:
    return f"{clock.wall:8.2f} s wall ({clock.wall / n * 1e3:7.2f} ms/combo), {clock.cpu:8.2f} s CPU " \
           f"({clock.cpu / n * 1e3:7.2f} ms/combo)"


def _no_registry_strategy() -> type:
    """QMLStrategy with register_patterns=False and ml_config=None as class attributes (module level, so the
    optimize() workers can unpickle it)."""
    global NoRegistry
    from qml_plugin.strategies import QMLStrategy

    class NoRegistry(QMLStrategy):
        register_patterns = False
        ml_config = None

    NoRegistry.__qualname__ = "NoRegistry"
    return NoRegistry


def bench_optimize(df) -> tuple[Clock, object]:
    from backtesting import Backtest

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bt = Backtest(df, _no_registry_strategy(), cash=1e9, commission=0.0)
        with Clock() as clk:
            _, heat = bt.optimize(**SUBSET_12, maximize="# Trades", return_heatmap=True)
    return clk, heat


def bench_portfolio(df, grid) -> Clock:
    import pandas as pd

    from qml_plugin.vbt.engine import PatternBook, portfolio_metrics, run_portfolio

    with Clock() as clk:
        book = PatternBook(df)
        for lo in range(0, len(grid), 64):
            block = grid[lo:lo + 64]
            pf = run_portfolio(df, [book.plan(p) for p in block], pd.RangeIndex(len(block)))
            portfolio_metrics(pf, df)
    return clk


def breakdown(df, grid) -> dict[str, Clock]:
    from qml_plugin.patterns.qml import detect_structure
    from qml_plugin.vbt.fast import EventBook
    from qml_plugin.vbt.grid import returns_digest, trial_count, verify_rows
    from qml_plugin.vbt.overfit import deflated_sharpe, pbo

    h, l, c = (df[k].to_numpy(np.float64) for k in ("High", "Low", "Close"))
    out = {}
    skeys = list(dict.fromkeys(EventBook.structure_key(p) for p in grid))
    with Clock() as out["detection (once per structure key)"]:
        for p in [next(q for q in grid if EventBook.structure_key(q) == k) for k in skeys]:
            detect_structure(h, l, c, p)
    book = EventBook(df)
    order = sorted(grid, key=lambda p: repr(EventBook.level_key(p)))
    with Clock() as clk:
        for p in order:
            book.levels(p)                       # detection + levels + walk order, each once per key
    out["levels and walk order (once per level key)"] = clk
    clk.wall -= out["detection (once per structure key)"].wall
    clk.cpu -= out["detection (once per structure key)"].cpu
    with Clock() as kernel:
        results = [book.simulate(p) for p in order]
    out["kernel: walk, fills, exits, daily equity, score"] = kernel
    from qml_plugin import tradesim as ts

    close, days_per_year = c, book.market.days_per_year
    with Clock() as metrics:                     # the kernel's last step again, on the trades it found
        for _, eb, xb, ep, xp, d, _ in results:
            daily = ts.account_nb(close, book.sample, eb, xb, ep, xp, d, np.full(len(eb), ts.FULL_SIZE), 0.0, 1e5)
            ts.equity_stats_nb(daily, 1e5, days_per_year)
            ts.trade_stats_nb(ep, xp, d, 0.0)
    walk = Clock()
    walk.wall, walk.cpu = kernel.wall - metrics.wall, kernel.cpu - metrics.cpu
    out["  of which selection + labelling (walk, lazy fills, exits)"] = walk
    out["  of which metrics (daily equity, Sharpe, drawdown, trades)"] = metrics
    returns = np.column_stack([r[-1] / np.r_[1e5, r[-1][:-1]] - 1 for r in results])
    with Clock() as out["PBO (CSCV, 12,870 splits)"]:
        pbo(returns)
    m = np.array([r[0] for r in results])
    with Clock() as out["DSR (trial count, variance, formula)"]:
        n, v = trial_count([returns_digest(r) for r in returns.T], m[:, 7])
        deflated_sharpe(m[:, 7], n_obs=m[:, 10], skew=m[:, 8], kurtosis=m[:, 9], n_trials=n, sr_variance=v)
    with Clock() as out["Portfolio check of the top 10 (verify_top)"]:
        verify_rows(df, grid[:10])
    return out


def bench_schedulers(df, grids: dict[str, list]) -> dict[str, Clock]:
    """run_grid on each scheduler, per grid. The Dask cluster is started once, outside the timing (its two
    spawned workers import qml_plugin and vectorbt first), and reached by address, as a user's cluster would be.
    A process pool is started by each run_grid call, as `qml sweep --scheduler processes` does (forked from
    this process: its start is in the timing)."""
    from dask.distributed import LocalCluster

    from qml_plugin.vbt.grid import run_grid

    out = {}
    with Clock() as out["dask cluster start (2 workers, not in the runs)"]:
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    try:
        first = next(iter(grids.values()))
        for name, extra in SCHEDULERS:
            extra = {**extra, "address": cluster.scheduler_address} if name == "dask" else extra
            run_grid(df, first[:8], compute={"scheduler": name, **extra}, progress=False)    # warm each side
        for label, grid in grids.items():
            for name, extra in SCHEDULERS:
                extra = {**extra, "address": cluster.scheduler_address} if name == "dask" else extra
                kids = resource.getrusage(resource.RUSAGE_CHILDREN)
                with Clock() as out[f"{label}: {name}"]:
                    run_grid(df, grid, compute={"scheduler": name, **extra}, progress=False)
                done = resource.getrusage(resource.RUSAGE_CHILDREN)     # the pool's workers, reaped at its end
                out[f"{label}: {name}"].workers_cpu = done.ru_utime + done.ru_stime - kids.ru_utime - kids.ru_stime
                out[f"{label}: {name}"].load = os.getloadavg()[0]
    finally:
        cluster.close()
    return out


SCHEDULERS = (("serial", {}), ("processes", {"workers": 2}), ("dask", {"workers": 2}))


def bench_optimize_schedulers(df, trials: int = 60) -> dict[str, Clock]:
    """`qml optimize` on the shipped config: each scheduler, then a profile of where a serial search's time goes."""
    import cProfile
    import pstats

    from dask.distributed import LocalCluster

    from qml_plugin.vbt.optimize import optimize

    cfg = str(REPO / "configs" / "optimize.yaml")
    out = {}
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    try:
        for name, extra in SCHEDULERS:
            extra = {**extra, "address": cluster.scheduler_address} if name == "dask" else extra
            optimize(cfg, trials=4, ohlcv=df, progress=False, write=False, compute={"scheduler": name, **extra})
            with Clock() as out[name]:
                optimize(cfg, trials=trials, ohlcv=df, progress=False, write=False,
                         compute={"scheduler": name, **extra})
            out[name].load = os.getloadavg()[0]
    finally:
        cluster.close()
    prof = cProfile.Profile()
    prof.runcall(optimize, cfg, trials=trials, ohlcv=df, progress=False, write=False,
                 compute={"scheduler": "serial"})
    stats = pstats.Stats(prof).stats
    total = sum(v[2] for v in stats.values())
    cum = {f"{k[0].rsplit('/', 1)[-1]}:{k[2]}": v[3] for k, v in stats.items()}
    out["profile"] = {"TPE ask (driver)": cum.get("study.py:ask", float("nan")),
                      "trials: the fast path (train + top 10 on validation and holdout)":
                          cum.get("optimize.py:_evaluate", float("nan")),
                      "importance (fANOVA)": cum.get("optimize.py:_importance", float("nan")),
                      "all (profiled, serial)": cum.get("optimize.py:optimize", total)}
    return out


RSS_SCRIPT = """
import resource, sys, time
from qml_plugin.vbt import sweep
sys.path.insert(0, {bench!r})
from bench_sweep import GRID_10000, config
n = int(sys.argv[1])
t0 = time.perf_counter()
table = sweep(config(GRID_10000), progress=True, write=False)
assert len(table) >= n
print(f"RESULT combos={{len(table)}} wall_s={{time.perf_counter() - t0:.1f}} "
      f"peak_rss_mb={{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}} "
      f"pbo={{table.attrs['pbo']:.3f}} distinct={{table.attrs['n_trials']}}")
"""


def bench_rss(n: int) -> None:
    script = RSS_SCRIPT.format(bench=str(Path(__file__).parent))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-c", script, str(n)], env=env, cwd=REPO, text=True,
                         stdout=subprocess.PIPE, check=True)
    print(res.stdout.strip().splitlines()[-1])


def report_schedulers(df, grid) -> None:
    from qml_plugin.vbt import expand_grid

    print("5. run_grid (the work units, no verify/PBO) on the schedulers, 2 workers:")
    s = bench_schedulers(df, {"1,000": grid, "10,000": expand_grid(GRID_10000)})
    for name, clk in s.items():
        base = s.get(f"{name.split(':')[0]}: serial")
        ratio = f"speed-up vs serial {base.wall / clk.wall:4.2f}x" if base is not None else ""
        load = f"  load {clk.load:.1f}" if hasattr(clk, "load") else ""
        kids = f" {clk.workers_cpu:6.2f} s pool CPU" if getattr(clk, "workers_cpu", 0) > 0 else " " * 16
        print(f"   {name:<40} {clk.wall:7.2f} s wall {clk.cpu:6.2f} s driver CPU{kids}  {ratio}{load}")
    print("7. qml optimize, configs/optimize.yaml, 60 trials, 2 workers:")
    o = bench_optimize_schedulers(df)
    prof = o.pop("profile")
    for name, clk in o.items():
        print(f"   {name:<48} {clk.wall:7.2f} s wall {clk.cpu:6.2f} s driver CPU  "
              f"speed-up vs serial {o['serial'].wall / clk.wall:4.2f}x  load {clk.load:.1f}")
    print("   where a serial search's time goes (cProfile, cumulative):")
    for name, sec in prof.items():
        print(f"     {name:<66} {sec:6.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rss", type=int, default=0, help="only the peak-RSS run of an N-combination sweep")
    ap.add_argument("--skip-optimize", action="store_true")
    ap.add_argument("--skip-schedulers", action="store_true")
    ap.add_argument("--only-schedulers", action="store_true", help="step 5 only")
    args = ap.parse_args()
    if args.rss:
        bench_rss(args.rss)
        return

    from qml_plugin import load_ohlcv
    from qml_plugin.vbt import expand_grid, sweep

    df = load_ohlcv("EURUSD_1h")
    grid = expand_grid(GRID_1000)
    print(f"EURUSD_1h: {len(df):,} bars; {os.cpu_count()} cores (shared); load average {os.getloadavg()[0]:.1f}")
    if args.only_schedulers:
        report_schedulers(df, grid)
        return

    if not args.skip_optimize:    # first: its process pool forks before numba and vectorbt start threads
        t_opt, heat = bench_optimize(df)
    sweep(config(GRID_1000), ohlcv=df, progress=False, write=False)              # warm-up
    with Clock() as t_fast:
        table = sweep(config(GRID_1000), ohlcv=df, progress=False, write=False)
    n = len(table)
    print(f"\n1. sweep, {n} combinations (serial, verify_top 10, PBO, DSR): {per(t_fast, n)}")
    print(f"   distinct daily-return series: {table.attrs['n_trials']} of {n}; PBO {table.attrs['pbo']:.3f}; "
          f"verified {table.attrs['verified']}")
    if not args.skip_optimize:
        k = len(heat)
        print(f"2. Backtest.optimize, {k} combinations: {per(t_opt, k)}")
        print(f"   speed-up per combination: {t_opt.wall / k / (t_fast.wall / n):.0f}x wall, "
              f"{t_opt.cpu / k / (t_fast.cpu / n):.0f}x CPU of the driver (optimize's pool CPU not counted)")
        keys = [k_ for k_, v in SUBSET_12.items() if len(v) > 1]
        ours = table.set_index(list(SUBSET_12))["n_trades"]
        sub = ours[[tuple(r) for r in heat.reset_index()[list(SUBSET_12)].to_numpy()]]
        same = (sub.to_numpy() == heat.to_numpy().astype(int)).all()
        print(f"   trades per combination equal to the sweep's for the 12 ({keys} varied): {same}")
    t_pf = bench_portfolio(df, grid)
    print(f"3. the same {n} combinations bar by bar through vectorbt's Portfolio: {per(t_pf, n)}")
    print(f"   speed-up per combination: {t_pf.wall / t_fast.wall:.1f}x wall, {t_pf.cpu / t_fast.cpu:.1f}x CPU")
    print("4. where the fast path's time goes (the same 1,000 combinations):")
    for name, clk in breakdown(df, grid).items():
        print(f"   {name:<48} {clk.wall:7.2f} s wall {clk.cpu:7.2f} s CPU")
    if not args.skip_schedulers:
        report_schedulers(df, grid)
    print(f"\npeak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
