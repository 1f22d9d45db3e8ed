"""Benchmark of the data layer (a script, not a test).

    python benchmarks/bench_data.py            # every shipped dataset, best of 3

Measures wall-clock, best of ``--repeat`` runs after one warm-up (which loads the bad-print numba
kernel from its on-disk cache; the first call ever also compiles it):

- ``load_universe("all")``: read, parse and validate the 18 shipped datasets (~300k bars);
- the same with ``bad_prints="repair"`` (judge every bar, repair what is flagged);
- ``find_bad_prints`` alone over the loaded frames, and ``bar_close_utc`` over them;
- ``load_universe("hourly", resample="4h")``.

It also prints the bad prints found per dataset, so the figures in BENCHMARKS.md can be checked.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qml_plugin.badprints import find_bad_prints  # noqa: E402
from qml_plugin.data import bar_close_utc  # noqa: E402
from qml_plugin.universe import load_universe  # noqa: E402


def best(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    find_bad_prints(load_universe(["EURUSD_1d"])["EURUSD_1d"])  # warm-up: numba cache
    print(f"python {platform.python_version()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    t_load, frames = best(lambda: load_universe("all"), args.repeat)
    bars = sum(len(f) for f in frames.values())
    print(f"load_universe('all'): {len(frames)} datasets, {bars:,} bars, {t_load:.2f} s")
    t_rep, _ = best(lambda: load_universe("all", bad_prints="repair"), args.repeat)
    print(f"load_universe('all', bad_prints='repair'): {t_rep:.2f} s")
    t_find, found = best(lambda: {k: find_bad_prints(f) for k, f in frames.items()}, args.repeat)
    print(f"find_bad_prints over all: {t_find:.3f} s ({bars / t_find / 1e6:.1f} M bars/s), "
          f"{sum(len(v) for v in found.values())} flagged")
    t_clock, _ = best(lambda: {k: bar_close_utc(f) for k, f in frames.items()}, args.repeat)
    print(f"bar_close_utc over all: {t_clock:.3f} s")
    t_4h, four = best(lambda: load_universe("hourly", resample="4h"), args.repeat)
    print(f"load_universe('hourly', resample='4h'): {len(four)} datasets, {t_4h:.2f} s")
    for k, v in found.items():
        if len(v):
            print(f"  {k}: {', '.join(str(t) for t in v['time'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
