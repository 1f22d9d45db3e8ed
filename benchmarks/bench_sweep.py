"""Benchmark: the configs/sweep.yaml grid (27 combinations) on EURUSD_1h, vectorbt vs backtesting.py.

Three numbers:

1. ``qml_plugin.vbt.sweep`` per combination, warm (numba caches loaded, data in memory);
2. ``Backtest.optimize`` on ``QMLStrategy`` over the same grid (``register_patterns=False``,
   ``ml_config=None``), per combination, with backtesting.py's default process pool;
   the ratio of the two is the speed-up (goal: >= 50x);
3. cold start: a fresh process that imports ``qml_plugin.vbt`` and runs a small sweep, first with
   an empty numba cache (everything compiles), then twice with the cache in place.

As a cross-check, the number of trades per combination must be equal in both engines.
The shipped grid varies ``rr`` with ``target: swing``, where ``rr`` changes nothing: the vectorbt
sweep detects and simulates once per (swing_n, head_min_atr), backtesting.py runs all 27. So the
benchmark also times the same grid with ``target: rr``, where all 27 combinations differ.

    python benchmarks/bench_sweep.py                 # everything (~2 min on 2 cores)
    python benchmarks/bench_sweep.py --skip-optimize # vectorbt and cold start only
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "configs" / "sweep.yaml"

COLD_SCRIPT = """
import json, sys, time
t0 = time.perf_counter()
from qml_plugin.vbt import sweep
t1 = time.perf_counter()
cfg = {"data": {"source": "EURUSD_1h", "resample": None, "start": "2015-01-01", "end": "2015-12-31"},
       "sweep": {"grid": {"swing_n": [2, 3], "head_min_atr": [0.5]}, "output": sys.argv[1]}}
sweep(cfg, progress=False, write=False)
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "sweep_s": t2 - t1}))
"""


def time_vbt(cfg: dict, df, repeat: int) -> tuple[float, object]:
    from qml_plugin.vbt import sweep

    sweep(cfg, ohlcv=df, progress=False, write=False)  # warm-up: caches, first-call compilation
    times, table = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        table = sweep(cfg, ohlcv=df, progress=False, write=False)
        times.append(time.perf_counter() - t0)
    return min(times), table


def _no_registry_strategy() -> type:
    """QMLStrategy with register_patterns=False and ml_config=None as class attributes (module level, so the
    optimize() workers can unpickle it; as optimize() arguments they would land in its heatmap index)."""
    global NoRegistry
    from qml_plugin.strategies import QMLStrategy

    class NoRegistry(QMLStrategy):
        register_patterns = False
        ml_config = None

    NoRegistry.__qualname__ = "NoRegistry"
    return NoRegistry


def time_optimize(cfg: dict, df) -> tuple[float, object]:
    from backtesting import Backtest

    grid = cfg["sweep"]["grid"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bt = Backtest(df, _no_registry_strategy(), cash=1e9, commission=cfg["sweep"]["commission"])
        t0 = time.perf_counter()
        _, heat = bt.optimize(**grid, maximize="# Trades", return_heatmap=True)
        return time.perf_counter() - t0, heat


def cold_start(runs: int = 2) -> list[dict]:
    out = []
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for k in range(runs + 1):
            t0 = time.perf_counter()
            res = subprocess.run([sys.executable, "-c", COLD_SCRIPT, str(Path(tmp) / "s.csv")], env=env, check=True,
                                 capture_output=True, text=True, cwd=REPO)
            wall = time.perf_counter() - t0
            out.append({"run": "empty numba cache" if k == 0 else f"second process #{k}", "wall_s": wall,
                        **json.loads(res.stdout.strip().splitlines()[-1])})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="timed vectorbt repeats (best is reported)")
    ap.add_argument("--skip-optimize", action="store_true", help="skip Backtest.optimize")
    args = ap.parse_args()

    from qml_plugin.cli.common import load_data
    from qml_plugin.config import load_sweep_config

    shipped = load_sweep_config(CONFIG)
    distinct = load_sweep_config(CONFIG)
    distinct["sweep"]["grid"] = {**shipped["sweep"]["grid"], "target": ["rr"]}  # rr now matters: 27 distinct runs
    grids = {"shipped grid (target: swing, rr inert)": shipped, "same grid with target: rr": distinct}
    df = load_data(shipped["data"])
    print(f"EURUSD_1h: {len(df):,} bars; {os.cpu_count()} cores; grid {shipped['sweep']['grid']}")

    optimized = {}
    if not args.skip_optimize:  # first: its process pool forks before vectorbt and numba start threads
        optimized = {name: time_optimize(cfg, df) for name, cfg in grids.items()}
    for name, cfg in grids.items():
        n = int(np.prod([len(v) for v in cfg["sweep"]["grid"].values()]))
        t_vbt, table = time_vbt(cfg, df, args.repeat)
        print(f"\n{name}: {n} combinations")
        print(f"  vectorbt sweep (warm, best of {args.repeat}): {t_vbt:.3f} s, "
              f"{t_vbt / n * 1e3:.1f} ms per combination")
        if name in optimized:
            t_bt, heat = optimized[name]
            print(f"  Backtest.optimize: {t_bt:.1f} s, {t_bt / n * 1e3:.0f} ms per combination")
            print(f"  speed-up (per combination, warm): {t_bt / t_vbt:.0f}x")
            keys = list(cfg["sweep"]["grid"])
            ours = table.set_index(keys)["n_trades"].sort_index()
            theirs = heat.reorder_levels(keys).sort_index().astype(int)
            same = (ours.to_numpy() == theirs.to_numpy()).all()
            print(f"  trades per combination equal in both engines: {same} ({int(ours.sum())} trades in all)")

    print("\ncold start (a new process: import qml_plugin.vbt + a 2-combination sweep on one year of EURUSD_1h):")
    for r in cold_start():
        print(f"  {r['run']:<20} wall {r['wall_s']:6.2f} s   import {r['import_s']:5.2f} s   "
              f"sweep {r['sweep_s']:5.2f} s")


if __name__ == "__main__":
    main()
