"""Benchmark of the feature extractor (a script, not a test).

    python benchmarks/bench_features.py              # EURUSD_1h + 1M random-walk bars
    python benchmarks/bench_features.py --bars 200000 --repeat 1

Measures, each case in a fresh Python process so peak memory (``ru_maxrss``) belongs to it alone:

- ``FeatureExtractor().compute`` on the shipped EURUSD_1h (74k bars; goal < 1 s), and ``extract``
  on its detected patterns;
- ``compute`` on a 1M-bar geometric random walk (goal < 15 s, peak RSS < 3 GB); tracemalloc's peak
  (numpy and pandas buffers) is measured in a separate run, because tracing slows the timing.

Times are wall-clock, best of ``--repeat`` runs after one warm-up call on a small frame (which loads
the numba kernels from their on-disk cache; the first ever call also compiles them, a few seconds).
On a VM, memory touched for the first time is slow to fault in, so the first large run of a fresh
machine can be noticeably slower than the next ones.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qml_plugin import load_ohlcv  # noqa: E402
from qml_plugin.features import FeatureExtractor  # noqa: E402


def random_walk(n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` one-minute bars of a geometric random walk with valid OHLC and random volume."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    open_ = np.r_[100.0, close[:-1]]
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.0005, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.0005, n)))
    volume = rng.integers(0, 10_000, n).astype(float)
    index = pd.date_range("2010-01-01", periods=n, freq="1min")
    return pd.DataFrame({"Open": open_, "High": high, "Low": low, "Close": close, "Volume": volume}, index=index)


def _best(fn, repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        result = None
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def run_case(case: str, bars: int, repeat: int) -> dict:
    fx = FeatureExtractor()
    fx.compute(random_walk(500))  # load the numba kernels
    if case == "eurusd":
        from qml_plugin.patterns import detect_patterns

        df = load_ohlcv("EURUSD_1h")
        seconds, X = _best(lambda: fx.compute(df), repeat)
        patterns = detect_patterns(df)
        extract_s, _ = _best(lambda: fx.extract(df, patterns), repeat)
        return {"case": "EURUSD_1h compute", "bars": len(df), "features": X.shape[1], "seconds": seconds,
                "extract_seconds": extract_s, "patterns": len(patterns), "peak_rss_mb": _rss_mb()}
    df = random_walk(bars)
    rss_before = _rss_mb()
    if case == "random":
        seconds, X = _best(lambda: fx.compute(df), repeat)
        values = X.to_numpy()
        return {"case": f"random walk compute ({bars:,} bars)", "bars": bars, "features": X.shape[1],
                "seconds": seconds, "peak_rss_mb": _rss_mb(), "rss_before_mb": rss_before,
                "output_mb": values.nbytes / 2**20, "any_inf": bool(np.isinf(values).any()),
                "nan_share_after_250": float(np.isnan(values[250:]).mean())}
    tracemalloc.start()
    fx.compute(df)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"case": f"random walk compute ({bars:,} bars), tracemalloc", "bars": bars,
            "tracemalloc_peak_mb": peak / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=1_000_000, help="bars of the random walk (default 1M)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per case; the best is kept")
    parser.add_argument("--case", choices=["eurusd", "random", "tracemalloc"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.bars, args.repeat)))
        return
    print(f"# bench_features  {dt.date.today()}  python {platform.python_version()}  "
          f"numpy {np.__version__}  pandas {pd.__version__}  cpus {os.cpu_count()}  {platform.machine()}")
    for case, repeat in (("eurusd", args.repeat), ("random", max(1, args.repeat - 1)), ("tracemalloc", 1)):
        out = subprocess.run([sys.executable, __file__, "--case", case, "--bars", str(args.bars),
                              "--repeat", str(repeat)], capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print("  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
