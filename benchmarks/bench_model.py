"""What the three heads and calibration cost to fit, and what calibration buys (SPEC §7).

    PYTHONPATH=. python benchmarks/bench_model.py [--rows 2500] [--repeat 3]
    PYTHONPATH=. python benchmarks/bench_model.py universe [--cache /tmp/qml-pool] [--configs a,b,...]

``universe``: the shipped universe's pool (every dataset's patterns, features, label, R net of costs,
stop first, UTC clocks: the market units of ``qml run``, built once and cached as CSV), then
the ``pooled`` and ``per_market`` walk-forward schemes of ``configs/universe.yaml`` under several model
configurations, one after the other in this process (so their ratios compare): fits, fit seconds,
out-of-sample AUC, ECE (10 equal-count bins) with its bootstrap SD and a perfectly calibrated
model's 95th percentile, the ECE before calibration, and what ``expected_r`` picks (mean R net of
the patterns with ``expected_r > 0`` against all).

Fits SignalQualityModel on a planted set shaped like a universe training window (rows x 188
features, 40 % wins, a few informative features) in seven configurations, round-robin, median of
``--repeat``: label only / three heads, uncalibrated / Platt (3 purged folds or a 40 % hold-out),
today's trees and the session-3 ones. Then the ECE (10
equal-count bins) of the out-of-sample P(win) on a later block, uncalibrated vs Platt vs isotonic.
Compare ratios within one run: the machine may be shared.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import numpy as np
import pandas as pd

from qml_plugin.ml import SignalQualityModel, expected_calibration_error


def planted(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, 188)), columns=[f"ctx_f{i}" for i in range(188)])
    logit = -0.4 + 0.6 * X["ctx_f0"] - 0.4 * X["ctx_f1"] + 0.3 * X["ctx_f2"] * X["ctx_f3"]
    win = rng.random(n) < 1 / (1 + np.exp(-logit.to_numpy()))
    rr = np.where(rng.random(n) < 0.5, 1.5, 3.0)
    r = np.where(win, rr, -1.0)
    targets = pd.DataFrame({"label": win.astype(int), "r_multiple": r, "stop_first": (~win).astype(int)})
    t = pd.date_range("2012-01-01", periods=n, freq="8h", tz="UTC")
    return X, targets, t, t + pd.Timedelta("3D")


OLD_TREES = {"n_estimators": 300, "learning_rate": 0.05, "max_bin": 256}
"""The session-3 defaults of SignalQualityModel (now 150 trees at 0.1 with 64 bins)."""
NEW_TREES = {"n_estimators": 150, "learning_rate": 0.1, "max_bin": 64}
CONFIGS = {
    "main": ("label", {"calibration_cv": 3, **OLD_TREES}),         # main before this branch: label-only models
    "heads_cv3": ("targets", {"calibration_cv": 3, **OLD_TREES}),   # three heads, the same trees
    "heads_holdout": ("targets", {"calibration_cv": 0.2, **OLD_TREES}),
    "heads_holdout_150_bin64": ("targets", {"calibration_cv": 0.2, **NEW_TREES}),
    "heads_holdout40_150_bin64": ("targets", {"calibration_cv": 0.4, **NEW_TREES}),
    "label_cv3_150_bin64": ("label", {"calibration_cv": 3, **NEW_TREES}),
    "heads_cv3_150_bin64": ("targets", {"calibration_cv": 3, **NEW_TREES}),      # this branch's defaults
}


def universe_pool(cache: str):
    """The shipped universe's pool and features (``qml run``'s market units), cached under ``cache``."""
    from pathlib import Path

    from qml_plugin.compute import Scheduler
    from qml_plugin.config import dataset_costs, load_config
    from qml_plugin.job.runs import default_strategy, strategy_params
    from qml_plugin.job.unit import MarketSpec, market_unit
    from qml_plugin.job.universe import _pool, load_universe_data

    folder = Path(cache)
    if (folder / "pool.csv").exists():           # plain CSV + a list of the time columns (no pickle)
        times = json.loads((folder / "times.json").read_text())
        return (pd.read_csv(folder / "pool.csv", parse_dates=times),
                pd.read_csv(folder / "X.csv", dtype=np.float64))
    cfg = load_config(Path(__file__).resolve().parent.parent / "configs" / "universe.yaml")
    cls = default_strategy()
    params = strategy_params(cls, cfg["strategy"]["params"])
    frames = load_universe_data(cfg["data"])
    specs = [MarketSpec(k, df, cls, params, cfg["backtest"], **dataset_costs(cfg["backtest"], k))
             for k, df in frames.items()]
    with Scheduler("processes", progress=False) as sch:
        results = sch.map(market_unit, specs, label=lambda s: s.dataset, desc="markets")
    pool, X = _pool(results)
    folder.mkdir(parents=True, exist_ok=True)
    pool.to_csv(folder / "pool.csv", index=False)
    X.to_csv(folder / "X.csv", index=False)
    times = [c for c in pool.columns if pd.api.types.is_datetime64_any_dtype(pool[c])]
    (folder / "times.json").write_text(json.dumps(times))
    return universe_pool(cache)              # read back, so a first run and a cached one see the same data


def bench_universe(cache: str, names: list[str]) -> None:
    from qml_plugin.job.schemes import scheme_targets, score_scheme

    t0 = time.perf_counter()
    pool, X = universe_pool(cache)
    n_lab = int(pool["label"].notna().sum())
    print(f"pool: {len(pool):,} patterns, {n_lab:,} labeled ({time.perf_counter() - t0:.0f} s)")
    wf = {"retrain_every_months": 12, "min_train_labels": 100}     # configs/universe.yaml
    targets = scheme_targets(pool)
    r = targets["r_multiple"].to_numpy(float)
    for name in names:
        kind, params = CONFIGS[name]
        y = targets if kind == "targets" else targets["label"].to_numpy(float)
        for scheme in ("pooled", "per_market"):
            t0 = time.perf_counter()
            sc = score_scheme(scheme, pool, X, y, every_months=wf["retrain_every_months"],
                              min_train_labels=wf["min_train_labels"], embargo=pd.Timedelta("1D"),
                              model_params=params)
            wall = time.perf_counter() - t0
            nan = float("nan")
            e, auc, per = sc.ece_report, sc.metrics.get("auc", nan), sc.fit_seconds / max(sc.fits, 1)
            line = (f"{name:24s} {scheme:10s} fits {sc.fits:3d} {sc.fit_seconds:7.1f} s ({per:5.2f} s/model) "
                    f"AUC {auc:.3f} n {e.get('n', 0):5d} ECE {e.get('ece', nan):.4f} (sd {e.get('ece_sd', nan):.4f}, "
                    f"perfect p95 {e.get('ece_calibrated_p95', nan):.4f}) uncal {e.get('ece_uncalibrated', nan):.4f}")
            if sc.expected_r is not None:
                ok = ~np.isnan(sc.expected_r) & np.isfinite(r)
                pick = ok & (sc.expected_r > 0)
                line += f" | E[R]>0 picks {pick.sum()} mean R {r[pick].mean():+.3f} vs all {r[ok].mean():+.3f}"
            print(line + f" [{wall:.0f} s wall]", flush=True)


def main() -> None:
    import sys

    if len(sys.argv) > 1 and sys.argv[1] == "universe":
        ap = argparse.ArgumentParser()
        ap.add_argument("mode")
        ap.add_argument("--cache", default="/tmp/qml-universe-pool")
        ap.add_argument("--configs", default="main,heads_cv3_150_bin64")
        args = ap.parse_args()
        warnings.simplefilter("ignore")
        bench_universe(args.cache, args.configs.split(","))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2500)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    X, targets, t, e = planted(args.rows + 1000)
    tr = slice(0, args.rows)
    old = {"n_estimators": 300, "learning_rate": 0.05, "max_bin": 256}        # the session-3 trees
    cases = {"label only, uncalibrated": (None, targets["label"], {}),
             "label only, sigmoid": ("sigmoid", targets["label"], {}),
             "three heads, uncalibrated": (None, targets, {}), "three heads, sigmoid": ("sigmoid", targets, {}),
             "three heads, sigmoid, hold-out 0.4": ("sigmoid", targets, {"calibration_cv": 0.4}),
             "label only, sigmoid, 300x0.05/256": ("sigmoid", targets["label"], old),
             "three heads, sigmoid, 300x0.05/256": ("sigmoid", targets, old)}
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.repeat):
        for name, (cal, y, kw) in cases.items():
            t0 = time.perf_counter()
            SignalQualityModel(calibration=cal, **kw).fit(X[tr], y[tr], detection_times=t[tr], exit_times=e[tr])
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["label only, uncalibrated"])
    print(f"fit on {args.rows} rows x 188 features, median of {args.repeat} (defaults: 150 trees at 0.1, 64 bins):")
    for name, v in times.items():
        print(f"  {name:36s} {statistics.median(v):7.2f} s  ({statistics.median(v) / base:4.1f}x)")
    test = slice(args.rows, None)
    y_test = targets["label"][test]
    for cal in (None, "sigmoid", "isotonic"):
        m = SignalQualityModel(calibration=cal).fit(X[tr], targets["label"][tr], detection_times=t[tr],
                                                   exit_times=e[tr])
        p = m.predict_proba(X[test])[:, 1]
        print(f"  ECE out of sample, calibration={cal!s:9s} {expected_calibration_error(y_test, p):.4f}")


if __name__ == "__main__":
    main()
