"""Benchmark and evidence for the main job (``qml run``).

1. Wall time of ``qml run`` with the shipped config (EURUSD_1h, walk-forward yearly), in a fresh
   process, from a scratch folder (goal: under 3 minutes, stretch 2).
2. The planted-signal scenario of ``tests/test_planted.py`` with the numbers printed: the known
   ceiling AUC, the out-of-sample AUC reached, and ``filter`` against the random band.

    python benchmarks/bench_main_job.py
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score


def time_qml_run() -> float:
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "qml_plugin.cli.main", "run", "--no-progress"], cwd=d, check=True,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
        return time.perf_counter() - t0


def planted() -> None:
    from qml_plugin.config import load_config
    from qml_plugin.job import run_market_job
    from qml_plugin.patterns import detect_patterns, label_patterns
    from qml_plugin.synthetic import ceiling_auc, plant_volume_signal, random_walk_ohlcv

    with tempfile.TemporaryDirectory() as d:
        os.chdir(d)
        df = random_walk_ohlcv(40_000, seed=3, freq="4h")
        labeled = label_patterns(df, detect_patterns(df))
        planted_df, signal = plant_volume_signal(df, labeled, strength=1.5, seed=3)
        planted_df.to_csv(Path(d) / "PLANTED_4h.csv", index_label="timestamp")
        cfg = load_config({"data": {"source": str(Path(d) / "PLANTED_4h.csv"), "resample": None},
                           "ml": {"enabled": True}})
        res = run_market_job(cfg, progress=False)
        y = labeled["label"].to_numpy()
        ok = ~np.isnan(res.walk_forward.oos_proba.to_numpy()) & ~np.isnan(y)
        print(f"planted: theoretical ceiling AUC {ceiling_auc(1.5):.3f}, realized ceiling "
              f"{roc_auc_score(y[ok], signal[ok]):.3f}, walk-forward OOS AUC {res.walk_forward.metrics['auc']:.3f} "
              f"on {ok.sum()} patterns")
        print(res.table.to_string(index=False))


if __name__ == "__main__":
    print(f"qml run (shipped config), fresh process: {time_qml_run():.1f} s")
    planted()
