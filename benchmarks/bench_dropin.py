"""Benchmark: what the drop-in mixins cost a plain backtesting.py strategy, per backtest.

backtesting.py's SMA cross (10/30) on EURUSD_1h (74k bars, about 2,900 trades), three ways, run
round-robin in one process, best of ``REPEAT`` wall and CPU time each, so the ratios hold on a
shared machine:

1. plain: the strategy as backtesting.py's docs write it;
2. mixins, registration off, ML off: the hooks on ``init()`` / ``next()`` and the order record;
3. mixins, registration on in collect mode (``registry_db=None``): every signal's market features
   and the trades' outcomes kept as frames (nothing written; the features are memoized per series,
   so this is the warm cost).

    PYTHONPATH=$PWD python benchmarks/bench_dropin.py
"""
from __future__ import annotations

import time
import warnings

import pandas as pd
from backtesting import Backtest, Strategy
from backtesting.lib import crossover

from qml_plugin import load_ohlcv
from qml_plugin.mixins import MLFilterMixin, PatternRegistryMixin

REPEAT = 5


class SmaCross(Strategy):
    def init(self):
        close = pd.Series(self.data.Close)
        self.fast = self.I(lambda: close.rolling(10).mean().to_numpy())
        self.slow = self.I(lambda: close.rolling(30).mean().to_numpy())

    def next(self):
        if crossover(self.fast, self.slow):
            self.position.close()
            self.buy()
        elif crossover(self.slow, self.fast):
            self.position.close()
            self.sell()


class WithMixins(PatternRegistryMixin, MLFilterMixin, SmaCross):
    pass


def main() -> None:
    df = load_ohlcv("EURUSD_1h")
    cases = {"plain": (SmaCross, {}),
             "mixins, registration off": (WithMixins, {"register_patterns": False}),
             "mixins, collect mode": (WithMixins, {"register_patterns": True, "registry_db": None})}
    best = {k: (float("inf"), float("inf")) for k in cases}
    trades = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(REPEAT):
            for name, (cls, kw) in cases.items():
                bt = Backtest(df, cls, cash=1_000_000, commission=0.0)
                w, c = time.perf_counter(), time.process_time()
                stats = bt.run(**kw)
                w, c = time.perf_counter() - w, time.process_time() - c
                best[name] = (min(best[name][0], w), min(best[name][1], c))
                trades[name] = len(stats._trades)
    base_w, base_c = best["plain"]
    print(f"{'case':28s} {'trades':>6s} {'wall':>7s} {'ratio':>6s} {'cpu':>7s} {'ratio':>6s}")
    for name, (w, c) in best.items():
        print(f"{name:28s} {trades[name]:6d} {w:6.2f}s {w / base_w:5.2f}x {c:6.2f}s {c / base_c:5.2f}x")


if __name__ == "__main__":
    main()
