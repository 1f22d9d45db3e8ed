"""Benchmark: what sizing bands and an armed kill switch cost a backtesting.py run (SPEC §13).

1. ``QMLStrategy`` on EURUSD_1h 2013-2018 (37k bars) with the ML filter (``filter`` mode at threshold
   0, a model trained on 2007-2012), round-robin in one process, best of ``REPEAT`` wall and CPU time: no new
   keys; ``ml.kill_switch`` armed with limits it never reaches (so the check runs on every bar and
   never changes a trade), with the per-bar guard on from the first closed trade
   (``KillSwitchState.guard_from``: ``closed_trades`` is read only when an order executed since the
   last ``next()``) and without it (read on every bar, as before the guard); ``ml.size_bands`` with
   one full band (every order as asked). All place the same trades (checked).
2. The per-bar check alone (``mixins._kill.check`` on a bar where nothing closed), timed on the
   strategy of a finished run with few closed trades and with many (backtesting.py's SMA cross
   10/30 through the mixins, 74k bars): without the guard the check copies ``closed_trades``
   (backtesting.py's own tuple copy of its list, which grows with the trades closed so far); with
   it (from ``GUARD_FROM`` closed trades on), the bar hook keeps the pending orders after ``next()``
   and the check compares them: the cost of both is timed.

    PYTHONPATH=$PWD python benchmarks/bench_kill_switch.py [--quick]   (--quick: one round, part 1 skipped)
"""
from __future__ import annotations

import os
import sys
import tempfile
import timeit
import warnings
from pathlib import Path

import pandas as pd
import yaml
from _common import SmaCrossMixins, interleaved
from backtesting import Backtest

from qml_plugin import load_ohlcv
from qml_plugin.config import parse_ml_block
from qml_plugin.features import FeatureExtractor
from qml_plugin.mixins._kill import GUARD_FROM, NOT_ARMED, KillSwitchState, check, remember
from qml_plugin.ml.model import SignalQualityModel
from qml_plugin.patterns import detect_patterns, label_patterns
from qml_plugin.strategies import QMLStrategy

REPEAT = 5
NEVER = {"consecutive_losses": 1_000_000, "max_drawdown_pct": 100.0}


def guarded(run, guard_from: int):
    """``run`` with ``KillSwitchState.guard_from`` set for its duration."""
    def f():
        KillSwitchState.guard_from = guard_from
        try:
            return run()
        finally:
            KillSwitchState.guard_from = GUARD_FROM
    return f


def check_cost(df: pd.DataFrame, n: int = 200_000) -> tuple[int, float, float]:
    """(closed trades, us per bar with nothing new: ``check`` without the guard; ``remember`` + ``check`` with
    it) on a finished run."""
    stats = Backtest(df, SmaCrossMixins, cash=10_000_000).run(register_patterns=False)
    strategy = stats._strategy
    spec = parse_ml_block("kill_switch: {consecutive_losses: 1000000}").kill_switch
    state = KillSwitchState(spec, 10_000_000, armed_from=0)
    bar = len(strategy.data) - 1
    check(strategy, state, bar)                 # arms and feeds every closed trade once
    assert state.trip is None and state.seen == len(strategy.closed_trades)
    off = min(timeit.repeat(lambda: check(strategy, state, bar), number=n, repeat=3))   # no guard: read every bar

    def hook():                                 # what the bar hook does, with the guard at its default threshold
        if state.seen >= state.guard_from:
            remember(strategy, state)
        check(strategy, state, bar)

    on = min(timeit.repeat(hook, number=n, repeat=3))
    return state.seen, 1e6 * off / n, 1e6 * on / n


def qml_runs(df: pd.DataFrame, repeat: int) -> None:
    tmp = Path(tempfile.mkdtemp())
    train = df[:"2012-12-31"]
    lab = label_patterns(train, detect_patterns(train)).dropna(subset=["label"])
    X = FeatureExtractor().extract(train, lab)
    SignalQualityModel().fit(X, lab["label"].astype(int), detection_times=lab["detection_time"],
                             exit_times=lab["exit_time"]).save(tmp / "model")
    # threshold 0: the filter takes every technical candidate (a few hundred trades), so closed_trades grows
    # as in a real run; at 0.5 today's default model passes 3 trades, and the switch would have nothing to read
    ml = {"enabled": True, "model_path": str(tmp / "model"), "prediction_mode": "filter", "confidence_threshold": 0.0}
    test = df["2013-01-01":]
    bt = Backtest(test, QMLStrategy, cash=100_000)
    blocks = {"ML filter": ml, "+ kill switch (armed, never trips)": {**ml, "kill_switch": NEVER},
              "+ size_bands (one full band)": {**ml, "size_bands": [{"min": 0.0, "size": 1.0}]}}
    bt.run(register_patterns=False, ml_config=yaml.safe_dump(ml))   # warm the feature memo and numba
    dumped = {k: yaml.safe_dump(v) for k, v in blocks.items()}
    runs = {k: (lambda b=b: bt.run(register_patterns=False, ml_config=b)) for k, b in dumped.items()}
    cases = {"ML filter": runs["ML filter"],
             "+ kill switch, guard from 1st trade": guarded(runs["+ kill switch (armed, never trips)"], 0),
             "+ kill switch, no guard (every bar)": guarded(runs["+ kill switch (armed, never trips)"], NOT_ARMED),
             "+ size_bands (one full band)": runs["+ size_bands (one full band)"]}
    res = interleaved(cases, repeat)
    base_w, base_c, base_s = res["ML filter"]
    print(f"QMLStrategy, EURUSD_1h {test.index[0]:%Y-%m-%d}..{test.index[-1]:%Y-%m-%d} ({len(test):,} bars), "
          f"best of {repeat}, load average {os.getloadavg()[0]:.1f}")
    print(f"{'case':38s} {'wall':>8s} {'ratio':>6s} {'CPU':>8s} {'ratio':>6s} trades")
    for name, (w, c, stats) in res.items():
        same = stats._trades[["EntryBar", "ExitBar", "Size"]].equals(base_s._trades[["EntryBar", "ExitBar", "Size"]])
        assert same and stats._strategy.ml_kill_switch is None, name
        print(f"{name:38s} {w:7.2f}s {w / base_w:5.2f}x {c:7.2f}s {c / base_c:5.2f}x {len(stats._trades)}")


def main():
    warnings.simplefilter("ignore")
    quick = "--quick" in sys.argv
    df = load_ohlcv("EURUSD_1h")
    if not quick:
        qml_runs(df, REPEAT)
    print("\nper-bar check with nothing new closed (SMA cross 10/30 through the mixins):")
    print(f"  {'bars':>6s}  {'closed':>6s}  {'no guard':>9s}  {f'guard from {GUARD_FROM} trades':>24s}")
    for bars in (3_000,) if quick else (3_000, 8_000, 12_000, 30_000, len(df)):
        closed, off, on = check_cost(df.iloc[:bars], n=20_000 if quick else 200_000)
        print(f"  {bars:>6,}  {closed:>6,}  {off:7.2f}us  {on:22.2f}us")


if __name__ == "__main__":
    main()
