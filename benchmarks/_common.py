"""What several benchmarks share: backtesting.py's SMA cross, and round-robin timing.

Run a benchmark as a script (``PYTHONPATH=$PWD python benchmarks/bench_x.py``): Python puts the
script's folder first on ``sys.path``, so ``from _common import ...`` finds this file.

* :class:`SmaCross` is backtesting.py's own example strategy (10/30 moving-average cross, always in
  the market), a plain ``Strategy`` with no QML in it; :class:`SmaCrossMixins` is the same with both
  mixins added (the drop-in case). On EURUSD_1h (74k bars) it closes about 2,900 trades, which is
  what makes it the stress case for anything that grows with the trades closed so far.
* :func:`interleaved` times cases round-robin: a burst of load from a neighbour on this shared
  machine hits every case alike instead of one block of runs, and the best of each is the least
  disturbed run.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import pandas as pd
from backtesting import Strategy
from backtesting.lib import crossover

from qml_plugin.mixins import MLFilterMixin, PatternRegistryMixin

__all__ = ["SmaCross", "SmaCrossMixins", "interleaved"]


class SmaCross(Strategy):
    """backtesting.py's SMA cross 10/30: close and reverse on every cross."""

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


class SmaCrossMixins(PatternRegistryMixin, MLFilterMixin, SmaCross):
    """:class:`SmaCross` with both mixins added and nothing else changed (SPEC §6, drop-in)."""


def interleaved(cases: dict[str, Callable[[], object]], repeat: int) -> dict[str, tuple[float, float, object]]:
    """``{name: (best wall s, best CPU s, last result)}`` of each case, run round-robin ``repeat`` times."""
    wall: dict[str, list[float]] = {k: [] for k in cases}
    cpu: dict[str, list[float]] = {k: [] for k in cases}
    out = {}
    for _ in range(repeat):
        for name, f in cases.items():
            w0, c0 = time.perf_counter(), time.process_time()
            out[name] = f()
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
    return {k: (min(wall[k]), min(cpu[k]), out[k]) for k in cases}
