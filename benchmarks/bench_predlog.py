"""Benchmark: what the prediction log (SPEC §5, ``ml_predictions``) adds to ``qml run``.

Two runs in this process, each timed as a whole and in the parts that exist only for the log:

* **universe** (``run_universe_job`` on a planted universe, serial): the job's own
  ``timings["predlog_s"]`` (recording the versions, one ``explain`` batch per model over the rows it
  scored, the decisions per mode, and the one ``log_predictions`` transaction) against ``total_s``;
* **single market** (``run_market_job``, EURUSD 4h 2007-2014, the mode backtests through the mixins):
  the time spent in ``Scorer.prediction_frame`` (contributions, rows), ``PatternRegistry.log_predictions``,
  the canary / shadow logging and the report's mean |contribution|, against the job's wall time.

    python benchmarks/bench_predlog.py [--markets 8]

Figures go to BENCHMARKS.md with the load average (``uptime``); compare the ratio, not the seconds.
"""
from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
import warnings

from qml_plugin.config import load_config
from qml_plugin.job import market as market_mod
from qml_plugin.job import run_market_job, run_universe_job
from qml_plugin.registry import PatternRegistry
from qml_plugin.scoring import Scorer
from qml_plugin.synthetic import planted_universe

SPENT = {"s": 0.0}


def _timed(fn):
    @functools.wraps(fn)
    def inner(*a, **k):
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            SPENT["s"] += time.perf_counter() - t0
    return inner


def universe(markets: int) -> None:
    cfg = load_config({"ml": {"enabled": True, "prediction_mode": "filter"},
                       "walk_forward": {"min_train_labels": 40, "retrain_every_months": 6, "random_seeds": 200}})
    frames, _ = planted_universe(markets, 10_000, strength=1.5, seed=0)
    res = run_universe_job(cfg, universe=frames, scheduler="serial", progress=False, model_params={"n_estimators": 60})
    t = res.timings
    print(f"universe ({markets} planted markets, serial): {t['predictions']:,} rows logged in {t['predlog_s']:.2f} s "
          f"of {t['total_s']:.1f} s = {t['predlog_s'] / t['total_s']:.1%} ({res.fits} model fits)")


def market() -> None:
    cfg = load_config({"data": {"source": "EURUSD_1h", "resample": "4h", "start": "2007-01-01", "end": "2014-12-31"},
                       "ml": {"enabled": True, "prediction_mode": "filter"},
                       "walk_forward": {"min_train_labels": 50, "random_seeds": 20}})
    Scorer.prediction_frame = _timed(Scorer.prediction_frame)
    PatternRegistry.log_predictions = _timed(PatternRegistry.log_predictions)
    for name in ("log_shadow_predictions", "mean_abs_contribution", "log_backtest_predictions"):
        setattr(market_mod, name, _timed(getattr(market_mod, name)))
    t0 = time.perf_counter()
    res = run_market_job(cfg, progress=False)
    total = time.perf_counter() - t0
    with PatternRegistry(cfg["ml_data_collection"]["db_path"]) as reg:
        n = len(reg.get_predictions(run_id=res.run.run_id))
    print(f"single market (EURUSD 4h 2007-2014, 3 mode backtests): {n:,} rows; prediction log and contributions "
          f"{SPENT['s']:.2f} s of {total:.1f} s = {SPENT['s'] / total:.1%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--markets", type=int, default=8)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    os.chdir(tempfile.mkdtemp(prefix="bench-predlog-"))
    print(f"load average: {os.getloadavg()[0]:.1f}")
    universe(args.markets)
    market()
    print(f"load average: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
