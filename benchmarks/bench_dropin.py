"""Benchmark: what the drop-in mixins cost a plain backtesting.py strategy, per backtest.

backtesting.py's SMA cross (10/30) on EURUSD_1h (74k bars, about 2,900 trades), three ways, run
round-robin in one process, best of ``REPEAT`` wall and CPU time each, so the ratios hold on a
shared machine:

1. plain: the strategy as backtesting.py's docs write it;
2. mixins, registration off, ML off: the hooks on ``init()`` / ``next()`` and the order record;
3. mixins, registration on in collect mode (``registry_db=None``): every signal's market features
   and the trades' outcomes kept as frames (nothing written; the features are memoized per series,
   so this is the warm cost).

    PYTHONPATH=$PWD python benchmarks/bench_dropin.py [--quick]     (--quick: one round, not the best of REPEAT)
"""
from __future__ import annotations

import sys
import warnings

from _common import SmaCross, interleaved
from _common import SmaCrossMixins as WithMixins
from backtesting import Backtest

from qml_plugin import load_ohlcv

REPEAT = 5


def main() -> None:
    df = load_ohlcv("EURUSD_1h")
    cases = {"plain": (SmaCross, {}),
             "mixins, registration off": (WithMixins, {"register_patterns": False}),
             "mixins, collect mode": (WithMixins, {"register_patterns": True, "registry_db": None})}
    bts = {name: Backtest(df, cls, cash=1_000_000, commission=0.0) for name, (cls, _) in cases.items()}
    runs = {name: (lambda name=name, kw=kw: bts[name].run(**kw)) for name, (_, kw) in cases.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = interleaved(runs, 1 if "--quick" in sys.argv else REPEAT)
    best = {name: (w, c) for name, (w, c, _) in res.items()}
    trades = {name: len(stats._trades) for name, (_, _, stats) in res.items()}
    base_w, base_c = best["plain"]
    print(f"{'case':28s} {'trades':>6s} {'wall':>7s} {'ratio':>6s} {'cpu':>7s} {'ratio':>6s}")
    for name, (w, c) in best.items():
        print(f"{name:28s} {trades[name]:6d} {w:6.2f}s {w / base_w:5.2f}x {c:6.2f}s {c / base_c:5.2f}x")


if __name__ == "__main__":
    main()
