"""Benchmark one model-lifecycle cycle (``qml learn --cycle --force``) on the shipped data.

Not a test: it prints numbers for BENCHMARKS.md. Run from the repository root::

    python benchmarks/bench_learn.py                      # EURUSD_1h, hourly bars
    python benchmarks/bench_learn.py --resample 4h --repeat 3

Preparation (timed separately, not part of the cycle): load ``EURUSD_1h``, detect the QML
patterns, label them with the triple barrier, extract the features, and register everything with
its labels in a fresh registry file in a temporary folder.

Then it times, in this process, ``qml learn --cycle --force`` through the CLI entry point:

1. the first cycle: no production model yet, so no drift check; train a candidate before the
   holdout, score it, gate, promote;
2. the second cycle: drift check of the recent patterns against the production model's training
   window (170+ features, PSI + KS + BH), then retrain, gate, promote or reject.

The goal is a whole cycle under 60 s on 2 cores.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from qml_plugin import load_ohlcv  # noqa: E402
from qml_plugin.cli.main import main  # noqa: E402
from qml_plugin.features import FeatureExtractor  # noqa: E402
from qml_plugin.patterns import QMLParams, detect_patterns, label_patterns  # noqa: E402
from qml_plugin.registry import PatternRegistry  # noqa: E402


def prepare(db: Path, resample: str | None) -> dict[str, float]:
    """Fill ``db`` with the shipped data's patterns, features and triple-barrier labels."""
    t0 = time.perf_counter()
    ohlcv = load_ohlcv("EURUSD_1h", resample=resample)
    params = QMLParams()
    patterns = detect_patterns(ohlcv, params)
    labeled = label_patterns(ohlcv, patterns, max_wait=params.max_wait, max_hold=params.max_hold)
    fx = FeatureExtractor()
    features = fx.extract(ohlcv, patterns)
    rows = labeled.assign(regime_at_detection=fx.regimes(ohlcv, patterns).to_numpy())
    t1 = time.perf_counter()
    with PatternRegistry(db) as reg:
        reg.register_patterns(rows, features, feature_schema=fx.schema_hash)
        stats = reg.get_statistics()
    t2 = time.perf_counter()
    return {"bars": len(ohlcv), "patterns": len(patterns), "labeled": stats["labeled"],
            "features": len(fx.feature_names), "prepare_s": t1 - t0, "register_s": t2 - t1}


def main_bench() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resample", default=None, help="e.g. 4h (default: hourly bars, as shipped)")
    ap.add_argument("--repeat", type=int, default=2, help="cycles to time (the first has no drift check)")
    ap.add_argument("--n-jobs", type=int, default=1, help="XGBoost threads (learn.n_jobs)")
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"python {platform.python_version()}, {platform.platform()}")
    with tempfile.TemporaryDirectory() as tmp:
        db, models = Path(tmp, "bench.db"), Path(tmp, "models")
        info = prepare(db, args.resample)
        print(f"data: EURUSD_1h{' -> ' + args.resample if args.resample else ''}, {info['bars']:,} bars, "
              f"{info['patterns']:,} patterns ({info['labeled']:,} labeled), {info['features']} features")
        print(f"prepare (detect + label + features): {info['prepare_s']:.1f} s, register: {info['register_s']:.1f} s")
        cfg = Path(tmp, "learn.yaml")
        cfg.write_text(f"ml_data_collection: {{db_path: {db}}}\n"
                       f"learn: {{models_dir: {models}, n_jobs: {args.n_jobs}}}\n")
        for i in range(args.repeat):
            t0 = time.perf_counter()
            rc = main(["learn", "--cycle", "--force", "--config", str(cfg), "--top", "5"])
            dt = time.perf_counter() - t0
            print(f"--- cycle {i + 1}: {dt:.1f} s (exit {rc}){' [goal < 60 s]' if dt < 60 else ' [SLOWER than 60 s]'}")
        main(["learn", "--status", "--config", str(cfg)])


if __name__ == "__main__":
    main_bench()
