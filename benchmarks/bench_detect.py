"""Benchmark: QML detection (swings + patterns + levels + ids) on random-walk bars.

Shows linear time: the time per bar should stay flat from 100k to 4M bars.

    python benchmarks/bench_detect.py            # 100k, 1M, 4M bars
    python benchmarks/bench_detect.py 200000     # custom sizes
"""
from __future__ import annotations

import sys
import time

import pandas as pd

from qml_plugin.patterns import detect_patterns, label_patterns
from qml_plugin.synthetic import random_walk_ohlcv


def random_walk(n: int, seed: int = 0) -> pd.DataFrame:
    return random_walk_ohlcv(n, seed, vol=0.002, freq="min", start="2000-01-01")


def best_of(f, repeat=3):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main(sizes):
    detect_patterns(random_walk(5_000))  # load the numba cache / compile once
    print(f"{'bars':>10} {'patterns':>9} {'detect s':>9} {'ns/bar':>7} {'label s':>8}")
    for n in sizes:
        df = random_walk(n)
        t, pats = best_of(lambda df=df: detect_patterns(df))
        tl, _ = best_of(lambda df=df, pats=pats: label_patterns(df, pats))
        print(f"{n:>10,} {len(pats):>9,} {t:>9.3f} {t / n * 1e9:>7.0f} {tl:>8.3f}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [100_000, 1_000_000, 4_000_000])
