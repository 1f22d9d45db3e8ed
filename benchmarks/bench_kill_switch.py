"""Benchmark: what sizing bands and an armed kill switch cost a backtesting.py run (SPEC §13).

1. ``QMLStrategy`` on EURUSD_1h 2013-2018 (37k bars) with the ML filter (``filter`` mode, a model
   trained on 2007-2012), three ways, round-robin in one process, best of ``REPEAT`` wall and CPU
   time: no new keys; ``ml.kill_switch`` armed with limits it never reaches (so the check runs on
   every bar and never changes a trade); ``ml.size_bands`` with one full band (every order as asked).
   The three place the same trades (checked).
2. The per-bar check alone (``mixins._kill.check`` on a bar where nothing closed), timed on the
   strategy of a finished run with few closed trades and with many (backtesting.py's SMA cross
   10/30 through the mixins, 74k bars): the check compares ``len(self.closed_trades)`` with the
   count already seen and looks at each closed trade once; ``closed_trades`` is backtesting.py's
   own tuple copy of its list, so that one C-level copy grows with the trades closed so far.

    PYTHONPATH=$PWD python benchmarks/bench_kill_switch.py
"""
from __future__ import annotations

import os
import tempfile
import time
import timeit
import warnings
from pathlib import Path

import pandas as pd
import yaml
from backtesting import Backtest, Strategy
from backtesting.lib import crossover

from qml_plugin import load_ohlcv
from qml_plugin.config import parse_ml_block
from qml_plugin.features import FeatureExtractor
from qml_plugin.mixins import MLFilterMixin, PatternRegistryMixin
from qml_plugin.mixins._kill import KillSwitchState, check
from qml_plugin.ml.model import SignalQualityModel
from qml_plugin.patterns import detect_patterns, label_patterns
from qml_plugin.strategies import QMLStrategy

REPEAT = 5


class SmaCross(PatternRegistryMixin, MLFilterMixin, Strategy):
    def init(self):
        close = pd.Series(self.data.Close)
        self.fast = self.I(lambda: close.rolling(10).mean())
        self.slow = self.I(lambda: close.rolling(30).mean())

    def next(self):
        if crossover(self.fast, self.slow):
            self.position.close()
            self.buy()
        elif crossover(self.slow, self.fast):
            self.position.close()
            self.sell()


def interleaved(cases: dict, repeat: int = REPEAT) -> dict:
    wall = {k: [] for k in cases}
    cpu = {k: [] for k in cases}
    out = {}
    for _ in range(repeat):
        for name, f in cases.items():
            w0, c0 = time.perf_counter(), time.process_time()
            out[name] = f()
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
    return {k: (min(wall[k]), min(cpu[k]), out[k]) for k in cases}


def check_cost(df: pd.DataFrame, n: int = 200_000) -> tuple[int, float]:
    """(closed trades, microseconds per ``check`` call with nothing new) on a finished SMA-cross run."""
    stats = Backtest(df, SmaCross, cash=10_000_000).run(register_patterns=False)
    strategy = stats._strategy
    spec = parse_ml_block("kill_switch: {consecutive_losses: 1000000}").kill_switch
    state = KillSwitchState(spec, 10_000_000, armed_from=0)
    bar = len(strategy.data) - 1
    check(strategy, state, bar)                 # arms and feeds every closed trade once
    assert state.trip is None and state.seen == len(strategy.closed_trades)
    return state.seen, 1e6 * min(timeit.repeat(lambda: check(strategy, state, bar), number=n, repeat=3)) / n


def main():
    warnings.simplefilter("ignore")
    df = load_ohlcv("EURUSD_1h")
    tmp = Path(tempfile.mkdtemp())
    train = df[:"2012-12-31"]
    lab = label_patterns(train, detect_patterns(train)).dropna(subset=["label"])
    X = FeatureExtractor().extract(train, lab)
    SignalQualityModel().fit(X, lab["label"].astype(int), detection_times=lab["detection_time"],
                             exit_times=lab["exit_time"]).save(tmp / "model")
    ml = {"enabled": True, "model_path": str(tmp / "model"), "prediction_mode": "filter"}
    test = df["2013-01-01":]
    bt = Backtest(test, QMLStrategy, cash=100_000)
    runs = {"ML filter": ml,
            "+ kill switch (armed, never trips)": {**ml, "kill_switch": {"consecutive_losses": 1_000_000,
                                                                         "max_drawdown_pct": 100.0}},
            "+ size_bands (one full band)": {**ml, "size_bands": [{"min": 0.0, "size": 1.0}]}}
    bt.run(register_patterns=False, ml_config=yaml.safe_dump(ml))   # warm the feature memo and numba
    blocks = {k: yaml.safe_dump(v) for k, v in runs.items()}
    cases = {k: (lambda b=b: bt.run(register_patterns=False, ml_config=b)) for k, b in blocks.items()}
    res = interleaved(cases)
    base_w, base_c, base_s = res["ML filter"]
    print(f"QMLStrategy, EURUSD_1h {test.index[0]:%Y-%m-%d}..{test.index[-1]:%Y-%m-%d} ({len(test):,} bars), "
          f"best of {REPEAT}, load average {os.getloadavg()[0]:.1f}")
    print(f"{'case':38s} {'wall':>8s} {'ratio':>6s} {'CPU':>8s} {'ratio':>6s} trades")
    for name, (w, c, stats) in res.items():
        same = stats._trades[["EntryBar", "ExitBar", "Size"]].equals(base_s._trades[["EntryBar", "ExitBar", "Size"]])
        assert same and stats._strategy.ml_kill_switch is None, name
        print(f"{name:38s} {w:7.2f}s {w / base_w:5.2f}x {c:7.2f}s {c / base_c:5.2f}x {len(stats._trades)}")
    print("\nper-bar check with nothing new closed (SMA cross 10/30 through the mixins):")
    for bars in (3_000, len(df)):
        closed, us = check_cost(df.iloc[:bars])
        print(f"  {bars:>6,} bars, {closed:>5,} closed trades: {us:.2f} us per bar")


if __name__ == "__main__":
    main()
