"""Long causality stress: the property tests of the suite, run on thousands of random cases.

Invariant number one: anything known at bar ``c`` uses bars ``<= c`` only. The suite checks it
with hypothesis on ~60 cases per property (CI time); this script checks many more, including
tie-heavy series (prices rounded to a coarse tick, so equal highs and lows are common) and
all-zero volume.

    python benchmarks/stress_causality.py            # 3000 pattern cases, 1200 feature cases
    python benchmarks/stress_causality.py 300 100    # quicker
"""
from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd

from qml_plugin.features import FeatureExtractor
from qml_plugin.patterns import QMLParams, detect_patterns, label_patterns, swing_points
from qml_plugin.synthetic import random_walk_ohlcv


def _frame(rng: np.random.Generator, lo: int, hi: int, ticks: bool) -> pd.DataFrame:
    df = random_walk_ohlcv(int(rng.integers(lo, hi)), int(rng.integers(0, 2**31)),
                           vol=float(rng.choice([0.001, 0.005, 0.02, 0.05])), freq="1h")
    if ticks:  # a coarse tick: many equal highs / lows
        px = ["Open", "High", "Low", "Close"]
        df[px] = (df[px] * 20).round() / 20
        df["High"] = df[["Open", "High", "Close"]].max(axis=1)
        df["Low"] = df[["Open", "Low", "Close"]].min(axis=1)
        df = df[(df[px] > 0).all(axis=1)]
    return df


def patterns(cases: int, rng: np.random.Generator) -> int:
    bad = 0
    for it in range(cases):
        df = _frame(rng, 60, 700, ticks=it % 3 == 0)
        if len(df) < 30:
            continue
        c = int(rng.integers(0, len(df)))
        p = QMLParams(swing_n=int(rng.integers(1, 6)), head_min_atr=float(rng.choice([0.0, 0.3, 1.0])),
                      max_span=int(rng.integers(5, 120)), target=str(rng.choice(["swing", "rr"])))
        full, part = detect_patterns(df, p), detect_patterns(df.iloc[:c + 1], p)
        try:
            pd.testing.assert_frame_equal(part, full[full.detection_bar <= c].reset_index(drop=True))
            sf, sp = swing_points(df, p.swing_n), swing_points(df.iloc[:c + 1], p.swing_n)
            known = sf[sf.confirmed_bar <= c].reset_index(drop=True)
            pd.testing.assert_frame_equal(sp.drop(columns="replaced_at_bar"), known.drop(columns="replaced_at_bar"))
            lf, lp = label_patterns(df, full), label_patterns(df.iloc[:c + 1], part)
            done = lp.exit_bar <= c
            cols = ["pattern_id", "fill_bar", "fill_price", "exit_bar", "exit_price", "exit_reason", "label"]
            pd.testing.assert_frame_equal(lp.loc[done, cols], lf.loc[lp.index[done], cols])
        except AssertionError as e:
            bad += 1
            print(f"FAIL case {it}: cut {c}, {p}: {str(e)[:300]}")
    return bad


def features(cases: int, rng: np.random.Generator) -> int:
    fx, bad = FeatureExtractor(), 0
    for it in range(cases):
        df = _frame(rng, 260, 900, ticks=it % 4 == 0)
        if it % 2 == 0:
            df["Volume"] = 0.0
        c = int(rng.integers(0, len(df)))
        a = fx.compute(df.iloc[:c + 1]).iloc[-1].to_numpy()
        full = fx.compute(df)
        ok = np.isclose(a, full.iloc[c].to_numpy(), rtol=1e-9, atol=0, equal_nan=True)
        if not ok.all():
            bad += 1
            print(f"FAIL case {it}: cut {c}: {list(full.columns[~ok])[:5]}")
    return bad


if __name__ == "__main__":
    n_pat, n_feat = (int(a) for a in (sys.argv[1:3] if len(sys.argv) > 2 else (3000, 1200)))
    rng = np.random.default_rng(12345)
    t0 = time.perf_counter()
    print(f"swings/patterns/outcomes: {n_pat} cases, {patterns(n_pat, rng)} failures, {time.perf_counter() - t0:.0f} s")
    t0 = time.perf_counter()
    print(f"features: {n_feat} cases, {features(n_feat, rng)} failures, {time.perf_counter() - t0:.0f} s")
