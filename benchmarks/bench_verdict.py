"""Verdict benchmarks (SPEC §11, issue 12): the statistics' speed, and the end-to-end null on random walks.

    PYTHONPATH=$PWD python benchmarks/bench_verdict.py speed
    PYTHONPATH=$PWD python benchmarks/bench_verdict.py null [--seeds 20] [--markets 12] [--bars 8000]

``speed``: random filters per market (:func:`qml_plugin.comparison.random_keep_sums`) and the whole
pattern-level verdict on a synthetic universe of ~2,500 out-of-sample patterns.

``null``: the issue's null calibration, end to end on the real pipeline: per seed a universe of
random-walk markets (nothing in them is predictable), detect -> label -> features -> a pooled
walk-forward (6-month periods, purged, embargo one bar, on the UTC clock) of
:class:`qml_plugin.ml.SignalQualityModel` (``ml_confidence``) with its three heads
(``ml_confidence`` and ``expected_r`` = ``predict_expected_r``, trained on label / R / stop-first),
the four modes' decisions (:func:`qml_plugin.filter.decide`; ``expected_value`` = technical rule and
``expected_r > 0``), the one-position trades (:func:`qml_plugin.tradesim.select_trades`), then
:func:`qml_plugin.job.verdict.verdict_table`. Counts the (seed, mode) pairs with ``p_random < 0.05`` at the
pattern and the trade level: at most 9 of 80 (the binomial 99th percentile of a 5 % rate) may pass.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from scipy import stats

from qml_plugin.comparison import placeable, random_keep_sums
from qml_plugin.features.extractor import FeatureExtractor
from qml_plugin.filter import decide
from qml_plugin.job.verdict import MODES, pattern_rows, verdict_table
from qml_plugin.ml import SignalQualityModel, walk_forward_by_period
from qml_plugin.patterns import detect_patterns, label_patterns
from qml_plugin.synthetic import random_walk_ohlcv
from qml_plugin.tradesim import select_trades

BAR = pd.Timedelta("4h")


def _synthetic_patterns(n_markets: int = 18, per: int = 140, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for m in range(n_markets):
        t = pd.Timestamp("2019-01-01", tz="UTC") + pd.to_timedelta(np.sort(rng.uniform(0, 1460, per)), unit="D")
        r = np.where(rng.random(per) < 1 / 3, 2.0, -1.0)
        v, c = rng.random(per), rng.random(per)
        ok = rng.random(per) < 0.97
        df = pd.DataFrame({"scheme": "pooled", "dataset": f"M{m}_1h", "market": f"M{m}", "known_at_utc": t,
                           "r_net": r, "placeable": ok, "technical": v >= 0.5})
        df["taken_filter"] = ok & (v >= 0.5) & (c >= 0.5)
        df["taken_score_enhancement"] = ok & (0.7 * v + 0.3 * c >= 0.5)
        df["taken_replace"] = ok & (c >= 0.5)
        df["taken_expected_value"] = ok & (v >= 0.5) & (rng.random(per) < 0.5)
        rows.append(df)
    return pd.concat(rows, ignore_index=True)


def speed() -> None:
    pats = _synthetic_patterns()
    codes = pd.factorize(pats["market"], sort=True)[0]
    pool = pats["placeable"].to_numpy() & pats["technical"].to_numpy()
    keep = np.bincount(codes[pats["taken_filter"].to_numpy()], minlength=codes.max() + 1)
    r = pats["r_net"].to_numpy()
    random_keep_sums(r, pool, codes, keep, seeds=10, rng=np.random.default_rng(0))      # warm the numba cache
    print(f"{len(pats)} patterns, {codes.max() + 1} markets, filter keeps {keep.sum()} of {pool.sum()}")
    for seeds in (200, 1000, 2000):
        t0 = time.perf_counter()
        for _ in range(5):
            random_keep_sums(r, pool, codes, keep, seeds=seeds, rng=np.random.default_rng(1))
        print(f"random_keep_sums, {seeds:5d} seeds: {(time.perf_counter() - t0) / 5 * 1000:7.1f} ms")
    for seeds, n_boot in ((200, 0), (2000, 0), (2000, 2000)):
        t0 = time.perf_counter()
        rows = pattern_rows(pats, seeds=seeds, n_boot=n_boot)
        print(f"pattern_rows (5 modes x {codes.max() + 2} rows), seeds {seeds}, n_boot {n_boot}: "
              f"{time.perf_counter() - t0:6.2f} s ({len(rows)} rows)")


def _universe(seed: int, n_markets: int, n_bars: int) -> pd.DataFrame:
    """Every pattern of a random-walk universe, with features, outcomes and UTC instants."""
    ex = FeatureExtractor()
    parts = []
    for k in range(n_markets):
        sym = f"RW{k:02d}"
        df = random_walk_ohlcv(n_bars, seed=seed * 1009 + k, freq="4h", symbol=sym,
                               start_price=float(np.random.default_rng(seed * 7 + k).uniform(20, 200)))
        lab = label_patterns(df, detect_patterns(df)).reset_index(drop=True)
        feats = ex.extract(df, lab).reset_index(drop=True)
        lab["dataset"], lab["market"] = f"{sym}_4h", sym
        lab["known_at_utc"] = pd.DatetimeIndex(lab["detection_time"]).tz_localize("UTC") + BAR
        lab["exit_known_at_utc"] = pd.DatetimeIndex(lab["exit_time"]).tz_localize("UTC") + BAR
        lab["fill_time_utc"] = pd.Series(df.index, dtype="datetime64[ns]").reindex(
            lab["fill_bar"].fillna(-1).astype(int)).dt.tz_localize("UTC").to_numpy()
        parts.append(pd.concat([lab, feats.drop(columns=[c for c in feats.columns if c in lab.columns])], axis=1))
    return pd.concat(parts, ignore_index=True)


def _walk_forward(u: pd.DataFrame, features: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Pooled walk-forward out-of-sample ``ml_confidence`` and ``expected_r`` (NaN before the first model)."""
    conf, er = np.full(len(u), np.nan), np.full(len(u), np.nan)
    labeled = u["label"].notna().to_numpy()
    folds = walk_forward_by_period(u["known_at_utc"], u["exit_known_at_utc"], freq=6, embargo=BAR, min_labels=150)
    X = u[features]
    for f in folds:
        tr = f.train_idx[labeled[f.train_idx]]
        targets = u[["label", "r_multiple", "stop_first"]].iloc[tr]
        clf = SignalQualityModel(n_jobs=1).fit(X.iloc[tr], targets,
                                               detection_times=u["known_at_utc"].iloc[tr],
                                               exit_times=u["exit_known_at_utc"].iloc[tr])
        conf[f.test_idx] = clf.predict_proba(X.iloc[f.test_idx])[:, 1]
        er[f.test_idx] = clf.predict_expected_r(X.iloc[f.test_idx])
    return conf, er


def _verdict_inputs(u: pd.DataFrame, conf: np.ndarray, er: np.ndarray):
    oos = ~np.isnan(conf)
    u = u[oos].reset_index(drop=True)
    conf, er = conf[oos], er[oos]
    v = u["validity_score"].to_numpy(float)
    ok = placeable(u)
    pats = u[["dataset", "market", "known_at_utc", "detection_bar", "p1_bar", "fill_bar", "exit_bar",
              "validity_score"]].assign(scheme="pooled", r_net=u["r_multiple"].to_numpy(float), placeable=ok,
                                        technical=v >= 0.5)
    for mode in ("filter", "score_enhancement", "replace"):
        pats[f"taken_{mode}"] = decide(v, conf, mode=mode)[0] & ok
    pats["taken_expected_value"] = (v >= 0.5) & (er > 0.0) & ok
    trades = []
    for mode in MODES:
        score = decide(v, conf, mode=mode)[1] if mode != "expected_value" else er
        for ds, idx in pats.groupby("dataset").indices.items():
            sub = u.iloc[idx]
            chosen = select_trades(sub, pats[f"taken_{mode}"].to_numpy()[idx], score[idx], max_wait=20)
            t = sub[chosen & sub["r_multiple"].notna().to_numpy()]
            trades.append(pd.DataFrame({"scheme": "pooled", "mode": mode, "dataset": ds, "market": t["market"],
                                        "entry_time_utc": t["fill_time_utc"], "r_net": t["r_multiple"]}))
    return pats, pd.concat(trades, ignore_index=True)


def null(n_seeds: int, n_markets: int, n_bars: int) -> None:
    hits = {"pattern": 0, "trade": 0}
    pairs = {"pattern": 0, "trade": 0}
    gaps: dict[str, list] = {"pattern": [], "trade": []}
    t_all = time.perf_counter()
    for seed in range(n_seeds):
        t0 = time.perf_counter()
        u = _universe(seed, n_markets, n_bars)
        t1 = time.perf_counter()
        features = [c for c in FeatureExtractor().feature_names if c in u.columns]
        conf, er = _walk_forward(u, features)
        t2 = time.perf_counter()
        pats, trades = _verdict_inputs(u, conf, er)
        table = verdict_table(pats, trades=trades, primary_mode="score_enhancement", seeds=2000, trade_seeds=500,
                              n_boot=0, seed=seed)
        t3 = time.perf_counter()
        pooled = table[(table["market"] == "all") & table["mode"].isin(MODES)]
        line = []
        for level in ("pattern", "trade"):
            rows = pooled[pooled["level"] == level].set_index("mode")
            for mode in MODES:
                p = rows.loc[mode, "p_random"]
                if np.isfinite(p):
                    pairs[level] += 1
                    hits[level] += int(p < 0.05)
            line.append(level[0] + ":" + " ".join(f"{rows.loc[m, 'p_random']:.3f}" for m in MODES))
            gaps[level].append([rows.loc[m, "mean_r"] - rows.loc[m, "random_median"] for m in MODES])
        known = pats["r_net"].notna()
        print(f"seed {seed:2d}: {len(u)} patterns, {int(known.sum())} OOS with outcome, kept "
              + "/".join(str(int((pats[f'taken_{m}'] & known).sum())) for m in MODES)
              + f"; p_random {' | '.join(line)}; "
              f"data {t1 - t0:.1f} s, models {t2 - t1:.1f} s, verdict {t3 - t2:.1f} s", flush=True)
    for level in ("pattern", "trade"):
        k, n = hits[level], pairs[level]
        lo, hi = stats.binomtest(k, n).proportion_ci(0.95) if n else (np.nan, np.nan)
        print(f"{level} level: p_random < 0.05 in {k} of {n} (seed, mode) pairs = {k / max(n, 1):.3f} "
              f"(95 % CI {lo:.3f}-{hi:.3f}); allowed <= {int(stats.binom.ppf(0.99, n, 0.05))}")
        g = np.array(gaps[level], float)
        print("  mean R of the mode minus the random median, averaged over seeds: "
              + ", ".join(f"{m} {np.nanmean(g[:, i]):+.3f}" for i, m in enumerate(MODES)))
    print(f"total {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["speed", "null"])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--markets", type=int, default=12)
    ap.add_argument("--bars", type=int, default=8000)
    a = ap.parse_args()
    speed() if a.what == "speed" else null(a.seeds, a.markets, a.bars)
