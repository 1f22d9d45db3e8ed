"""Benchmark: ``qml run`` with no arguments (the shipped universe, SPEC §11) on this machine.

Runs the CLI in a fresh process from a scratch folder, twice: once with an empty numba cache
(``NUMBA_CACHE_DIR`` pointed at a new folder: the **cold** figure, every kernel compiled) and once
with that cache filled (**warm**, the figure the < 180 s target is about). Prints the wall time, the
number of model fits and their share of the job's time (as the job reports them), and the verdict.

    python benchmarks/bench_universe.py [--scheduler processes|serial|dask]
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_once(cache: str, scheduler: str) -> tuple[float, str]:
    with tempfile.TemporaryDirectory() as d:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "qml_plugin.cli.main", "run", "--no-progress",
                              "--scheduler", scheduler], cwd=d, env=env, check=True, capture_output=True, text=True)
        return time.perf_counter() - t0, out.stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scheduler", default="processes")
    args = ap.parse_args()
    cache = tempfile.mkdtemp(prefix="numba-cache-")
    for label in ("cold", "warm"):
        wall, text = run_once(cache, args.scheduler)
        fits = re.search(r"(\d+) model fits in ([\d.]+) s of ([\d.]+) s", text)
        print(f"{label}: qml run (no args, --scheduler {args.scheduler}) {wall:.1f} s wall", end="")
        if fits:
            n, fit_s, job_s = int(fits[1]), float(fits[2]), float(fits[3])
            print(f"; {n} model fits, {fit_s:.1f} s = {fit_s / job_s:.0%} of the job's {job_s:.1f} s")
        else:
            print()
    print(text)


if __name__ == "__main__":
    main()
