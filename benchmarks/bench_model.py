"""What the three heads and calibration cost to fit, and what calibration buys (SPEC §7).

    PYTHONPATH=. python benchmarks/bench_model.py [--rows 2500] [--repeat 3]

Fits SignalQualityModel on a planted set shaped like a universe training window (rows x 188
features, 40 % wins, a few informative features) in four configurations, round-robin, median of
``--repeat``: label only / three heads, uncalibrated / Platt (3 purged folds). Then the ECE (10
equal-count bins) of the out-of-sample P(win) on a later block, uncalibrated vs Platt vs isotonic.
Compare ratios within one run: the machine may be shared.
"""
from __future__ import annotations

import argparse
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2500)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    X, targets, t, e = planted(args.rows + 1000)
    tr = slice(0, args.rows)
    cases = {"label only, uncalibrated": (None, targets["label"]), "label only, sigmoid": ("sigmoid", targets["label"]),
             "three heads, uncalibrated": (None, targets), "three heads, sigmoid": ("sigmoid", targets)}
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.repeat):
        for name, (cal, y) in cases.items():
            t0 = time.perf_counter()
            SignalQualityModel(calibration=cal).fit(X[tr], y[tr], detection_times=t[tr], exit_times=e[tr])
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["label only, uncalibrated"])
    print(f"fit on {args.rows} rows x 188 features, median of {args.repeat}:")
    for name, v in times.items():
        print(f"  {name:28s} {statistics.median(v):7.2f} s  ({statistics.median(v) / base:4.1f}x)")
    test = slice(args.rows, None)
    y_test = targets["label"][test]
    for cal in (None, "sigmoid", "isotonic"):
        m = SignalQualityModel(calibration=cal).fit(X[tr], targets["label"][tr], detection_times=t[tr],
                                                   exit_times=e[tr])
        p = m.predict_proba(X[test])[:, 1]
        print(f"  ECE out of sample, calibration={cal!s:9s} {expected_calibration_error(y_test, p):.4f}")


if __name__ == "__main__":
    main()
