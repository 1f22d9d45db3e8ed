"""Benchmark: the cost of the registry and of the ML filter inside a backtesting.py run.

Runs of ``QMLStrategy`` on EURUSD_1h 2013-2018 (37k bars), measured in one process, round-robin,
best of ``REPEAT`` each, wall and CPU time, so the ratios are comparable on a noisy machine:

1. plain: ``register_patterns=False``, no ML;
2. registry: every pattern registered with its 190 features and outcome, trades written back,
   measured three ways: cold (both feature memos cleared before each run: the first run on a
   series), new params (only the pattern-feature memo cleared: another parameter set of
   ``optimize`` on the same bars, so the market features are reused) and warm (as in ``qml run``,
   where the same patterns are backtested again);
3. registry + ML filter (``filter`` mode, a model trained on 2007-2012, backtest from 2013): the
   scores of all patterns are computed in ``init()`` in one batch, so the per-order cost is a
   dictionary lookup;
4. ``score_enhancement`` with ``ml_weight: 0``: the model is loaded and every pattern scored,
   but the blended score equals the technical one, so the run places exactly the orders of run 2
   and the ratio 4 / 2 is the ML filter's own cost per backtest.

    PYTHONPATH=$PWD python benchmarks/bench_strategy.py [--quick]     (--quick: one round, not the best of REPEAT)
"""
from __future__ import annotations

import sys
import tempfile
import time
import warnings
from pathlib import Path

from _common import interleaved
from backtesting import Backtest

from qml_plugin import load_ohlcv
from qml_plugin.features import FeatureExtractor
from qml_plugin.features.cache import _memo, clear
from qml_plugin.ml.model import SignalQualityModel
from qml_plugin.patterns import detect_patterns, label_patterns
from qml_plugin.strategies import QMLStrategy

REPEAT = 7


def main():
    warnings.simplefilter("ignore")
    df = load_ohlcv("EURUSD_1h")
    tmp = Path(tempfile.mkdtemp())
    train = df[:"2012-12-31"]
    lab = label_patterns(train, detect_patterns(train)).dropna(subset=["label"])
    X = FeatureExtractor().extract(train, lab)
    SignalQualityModel().fit(X, lab["label"].astype(int), detection_times=lab["detection_time"],
                             exit_times=lab["exit_time"]).save(tmp / "model")
    ml = f"enabled: true\nmodel_path: {tmp / 'model'}\nprediction_mode: filter\n"
    test = df["2013-01-01":]
    bt = Backtest(test, QMLStrategy, cash=100_000)
    runs = {
        "plain": dict(register_patterns=False),
        "registry": dict(register_patterns=True, registry_db=str(tmp / "reg.db")),
        "registry + ML filter": dict(register_patterns=True, registry_db=str(tmp / "reg.db"), ml_config=ml),
        "registry + ML (w=0)": dict(register_patterns=True, registry_db=str(tmp / "reg.db"),
                                    ml_config=ml.replace("filter", "score_enhancement") + "ml_weight: 0.0\n"),
    }
    bt.run(**runs["plain"])  # warm numba caches
    cases = {"registry (cold)": lambda: (clear(), bt.run(**runs["registry"]))[1]}  # features computed every time
    # as in optimize: new patterns on bars already seen, so only the market-feature memo hits
    cases["registry (new params)"] = lambda: (_memo.clear(), bt.run(**runs["registry"]))[1]
    cases.update({name: (lambda kw=kw: bt.run(**kw)) for name, kw in runs.items()})
    repeat = 1 if "--quick" in sys.argv else REPEAT
    res = interleaved(cases, repeat)
    base_wall, base_cpu, _ = res["plain"]
    print(f"EURUSD_1h 2013-2018, {len(test):,} bars, best of {repeat} interleaved runs; feature memos warm "
          "except as named")
    for name, (w, c, stats) in res.items():
        print(f"{name:<22} wall {w:5.2f} s {w / base_wall:5.2f}x plain   cpu {c:5.2f} s {c / base_cpu:5.2f}x plain"
              f"   trades {stats['# Trades']:>4}")
    same = res["registry + ML (w=0)"][2]._trades["Tag"].tolist() == res["registry"][2]._trades["Tag"].tolist()
    print(f"ML filter cost, same orders as registry-only ({'yes' if same else 'NO'}): "
          f"{res['registry + ML (w=0)'][0] / res['registry'][0]:.2f}x registry only")
    t0 = time.perf_counter()
    FeatureExtractor().extract(test, detect_patterns(test))
    print(f"of which feature extraction alone (cold): {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
