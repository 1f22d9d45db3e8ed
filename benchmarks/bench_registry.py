"""Benchmark the pattern registry: batched inserts, similarity search, training-data reads.

Not a test: it prints numbers for BENCHMARKS.md. Run from the repository root::

    python benchmarks/bench_registry.py                   # 100k patterns x 170 features
    python benchmarks/bench_registry.py --n 20000 --batch 500

What it measures, on a fresh file in a temporary folder (WAL, synchronous=NORMAL):

1. feature encoding alone, per pattern: the packed float32 BLOB the registry stores, against
   ``json.dumps`` of a list and of a name -> value object (the ``features_json`` alternative);
2. ``register_patterns`` throughput (patterns/s), one transaction per batch, each row with
   ``--features`` features: 20k patterns in batches of 500 (a sweep worker's flush), then the
   whole set in batches of ``--batch``, ``--repeat`` times on fresh files (this machine is shared
   and noisy: every run is printed, and the median is the number to quote);
3. upsert throughput: the same patterns registered again (every row hits ON CONFLICT);
4. ``record_outcomes`` throughput (one transaction for all rows);
5. ``find_similar_patterns`` over all (labeled) patterns: the cold call (reads and standardizes
   the matrix), warm calls (median and p95 of ``--queries``), and the call after one new labeled
   row (the cache is brought up to date, never stale);
6. ``get_training_data`` for every labeled pattern;
7. with ``--postgres postgresql://user@host:port/db`` (a server where that user may create databases):
   batched inserts/s and ``find_similar_patterns`` latency on PostgreSQL beside SQLite, the same
   patterns, in the same run, alternating backend per round (``--backend-n`` patterns, ``--repeat``
   rounds; a fresh SQLite file and a fresh PostgreSQL database each round)::

    python benchmarks/bench_registry.py --postgres postgresql://qml@127.0.0.1:5432/qml_test --only-backends
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from qml_plugin.registry import PatternRegistry  # noqa: E402
from qml_plugin.registry._frames import pack_rows  # noqa: E402


def make_patterns(n: int, n_features: int, seed: int = 0, offset: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``n`` synthetic patterns with detect_patterns' columns, and their feature frame."""
    rng = np.random.default_rng(seed)
    direction = np.where(rng.random(n) < 0.5, 1, -1)
    entry = 1.1 + rng.normal(0, 0.01, n)
    stop = entry - direction * np.abs(rng.normal(0.005, 0.001, n))
    patterns = pd.DataFrame({
        # 16 hex digits of a 64-bit hash, like detect_patterns' ids: random order in the key index
        "pattern_id": [f"{x:016x}" for x in np.random.default_rng(10_000 + seed + offset).integers(0, 2**63, n)],
        "symbol": np.where(rng.random(n) < 0.5, "EURUSD", "GBPUSD"),
        "timeframe": "4h",
        "pattern_type": np.where(direction > 0, "bullish_qml", "bearish_qml"),
        "direction": direction,
        "detection_bar": np.arange(offset, offset + n),
        "detection_time": pd.date_range("2005-01-01", periods=n, freq="4h") + pd.Timedelta(hours=4 * offset),
        "entry": entry, "stop": stop, "target": entry + direction * 0.01, "rr": 2.0,
        "validity_score": rng.random(n),
    })
    features = pd.DataFrame(rng.normal(size=(n, n_features)), columns=[f"ctx_f{i:03d}" for i in range(n_features)])
    return patterns, features


def outcomes_for(patterns: pd.DataFrame, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = len(patterns)
    r = rng.normal(0.1, 1.2, n)
    return pd.DataFrame({"pattern_id": patterns["pattern_id"], "label": (r > 0).astype(float), "r_multiple": r,
                         "pnl_pct": r * 0.5, "exit_time": patterns["detection_time"] + pd.Timedelta("2D")})


def bench_encoding(features: pd.DataFrame, rows: int = 5000) -> dict[str, float]:
    m = features.to_numpy()[:rows]
    names = list(features.columns)
    out = {}
    t = time.perf_counter()
    pack_rows(m)
    out["blob_us"] = (time.perf_counter() - t) / len(m) * 1e6
    t = time.perf_counter()
    for row in m.tolist():
        json.dumps(row).replace("NaN", "null")
    out["json_list_us"] = (time.perf_counter() - t) / len(m) * 1e6
    t = time.perf_counter()
    for row in m.tolist():
        json.dumps(dict(zip(names, row, strict=True))).replace("NaN", "null")
    out["json_object_us"] = (time.perf_counter() - t) / len(m) * 1e6
    out["blob_bytes"] = len(pack_rows(m[:1])[0])
    out["json_object_bytes"] = len(json.dumps(dict(zip(names, m[0].tolist(), strict=True))))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="patterns to register (default 100000)")
    ap.add_argument("--features", type=int, default=170, help="features per pattern (default 170)")
    ap.add_argument("--batch", type=int, default=5000, help="patterns per register_patterns call")
    ap.add_argument("--queries", type=int, default=50, help="warm similarity queries")
    ap.add_argument("--repeat", type=int, default=3, help="fresh-file runs of the main insert measurement")
    ap.add_argument("--postgres", default=None, help="PostgreSQL server URL: also compare the two backends")
    ap.add_argument("--backend-n", type=int, default=20_000, help="patterns per backend round (default 20000)")
    ap.add_argument("--only-backends", action="store_true", help="run only the SQLite vs PostgreSQL comparison")
    args = ap.parse_args()
    if args.only_backends:
        if not args.postgres:
            ap.error("--only-backends needs --postgres URL")
        bench_backends(args.postgres, args.backend_n, args.features, args.batch, args.queries, args.repeat)
        return

    print(f"python {platform.python_version()}, sqlite {__import__('sqlite3').sqlite_version}, "
          f"numpy {np.__version__}, pandas {pd.__version__}, {os.cpu_count()} cpus, {platform.machine()}")
    patterns, features = make_patterns(args.n, args.features)
    enc = bench_encoding(features)
    print(f"encoding per pattern: blob {enc['blob_us']:.2f} us ({enc['blob_bytes']} B), "
          f"json list {enc['json_list_us']:.1f} us, json object {enc['json_object_us']:.1f} us "
          f"({enc['json_object_bytes']} B)")

    with tempfile.TemporaryDirectory() as tmp:
        small = min(args.n, 20_000)
        with PatternRegistry(Path(tmp) / "small.db") as reg:
            t = time.perf_counter()
            for lo in range(0, small, 500):
                reg.register_patterns(patterns.iloc[lo:lo + 500], features.iloc[lo:lo + 500])
            dt = time.perf_counter() - t
            print(f"register_patterns: {small} patterns in batches of 500: {small / dt:,.0f} patterns/s")

        rates = []
        for run in range(args.repeat):
            db = Path(tmp) / f"bench{run}.db"
            with PatternRegistry(db) as reg:
                t = time.perf_counter()
                for lo in range(0, args.n, args.batch):
                    reg.register_patterns(patterns.iloc[lo:lo + args.batch], features.iloc[lo:lo + args.batch])
                rates.append(args.n / (time.perf_counter() - t))
            if run < args.repeat - 1:
                for p in Path(tmp).glob(f"bench{run}.db*"):
                    p.unlink()
        print(f"register_patterns: {args.n} patterns x {args.features} features in batches of "
              f"{args.batch}: median {statistics.median(rates):,.0f} patterns/s "
              f"(runs: {', '.join(f'{r:,.0f}' for r in rates)})")
        with PatternRegistry(db) as reg:
            t = time.perf_counter()
            for lo in range(0, args.n, args.batch):
                reg.register_patterns(patterns.iloc[lo:lo + args.batch], features.iloc[lo:lo + args.batch])
            dt = time.perf_counter() - t
            print(f"re-register (upsert, all conflicts): {args.n / dt:,.0f} patterns/s")

            outcomes = outcomes_for(patterns)
            t = time.perf_counter()
            reg.record_outcomes(outcomes)
            dt = time.perf_counter() - t
            print(f"record_outcomes: {args.n} rows in {dt:.2f} s = {args.n / dt:,.0f} rows/s")
            wal = db.with_name(db.name + "-wal")
            print(f"file size: {db.stat().st_size / 1e6:.0f} MB (+ wal {wal.stat().st_size / 1e6:.0f} MB)")

            rng = np.random.default_rng(7)
            queries = [dict(zip(features.columns, rng.normal(size=args.features), strict=True))
                       for _ in range(args.queries)]
            cold, warm = similarity_latency(reg, queries)
            warm_ms = sorted(w * 1e3 for w in warm)
            print(f"find_similar_patterns over {args.n} labeled: cold {cold * 1e3:.0f} ms, warm median "
                  f"{statistics.median(warm_ms):.1f} ms, p95 {warm_ms[int(0.95 * (len(warm_ms) - 1))]:.1f} ms")

            extra_p, extra_f = make_patterns(1, args.features, seed=9, offset=args.n)
            reg.register_patterns(extra_p, extra_f)
            reg.record_outcomes(outcomes_for(extra_p))
            t = time.perf_counter()
            res = reg.find_similar_patterns(extra_f.iloc[0].to_dict(), n=5)
            dt = time.perf_counter() - t
            assert res[0]["pattern_id"] == extra_p["pattern_id"].iloc[0], "cache went stale"
            print(f"find_similar_patterns after 1 new labeled row (incremental refresh): {dt * 1e3:.0f} ms")

            t = time.perf_counter()
            X, y = reg.get_training_data()
            dt = time.perf_counter() - t
            print(f"get_training_data: X {X.shape}, y {y.shape} in {dt:.2f} s")
    if args.postgres:
        bench_backends(args.postgres, args.backend_n, args.features, args.batch, args.queries, args.repeat)


def similarity_latency(reg: PatternRegistry, queries: list[dict]) -> tuple[float, list[float]]:
    """Seconds of the first ``find_similar_patterns`` (it builds the cache) and of each warm query after it."""
    t = time.perf_counter()
    reg.find_similar_patterns(queries[0], n=5)
    cold = time.perf_counter() - t
    warm = []
    for q in queries:
        t = time.perf_counter()
        reg.find_similar_patterns(q, n=5)
        warm.append(time.perf_counter() - t)
    return cold, warm


def _one_backend(db: str, patterns: pd.DataFrame, features: pd.DataFrame, batch: int,
                 queries: list[dict]) -> dict[str, float]:
    with PatternRegistry(db) as reg:
        t = time.perf_counter()
        for lo in range(0, len(patterns), batch):
            reg.register_patterns(patterns.iloc[lo:lo + batch], features.iloc[lo:lo + batch])
        insert = len(patterns) / (time.perf_counter() - t)
        reg.record_outcomes(outcomes_for(patterns))
        cold, warm = similarity_latency(reg, queries)
        extra_p, extra_f = make_patterns(1, features.shape[1], seed=9, offset=len(patterns))
        reg.register_patterns(extra_p, extra_f)
        reg.record_outcomes(outcomes_for(extra_p))
        t = time.perf_counter()
        reg.find_similar_patterns(extra_f.iloc[0].to_dict(), n=5)
        refresh = time.perf_counter() - t
    return {"insert": insert, "cold_ms": cold * 1e3, "warm_ms": statistics.median(warm) * 1e3,
            "refresh_ms": refresh * 1e3}


def bench_backends(server: str, n: int, n_features: int, batch: int, n_queries: int, repeat: int) -> None:
    """SQLite and PostgreSQL on the same patterns, alternating per round (see the module docstring)."""
    import uuid
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    patterns, features = make_patterns(n, n_features, seed=3)
    rng = np.random.default_rng(8)
    queries = [dict(zip(features.columns, rng.normal(size=n_features), strict=True)) for _ in range(n_queries)]
    with psycopg.connect(server, autocommit=True) as admin:
        version = admin.execute("SHOW server_version").fetchone()[0]
    print(f"\nbackends: {n} patterns x {n_features} features in batches of {batch}, {repeat} rounds; "
          f"PostgreSQL {version} (psycopg {psycopg.__version__}), SQLite {__import__('sqlite3').sqlite_version}")
    results: dict[str, list[dict[str, float]]] = {"sqlite": [], "postgresql": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeat):
            for backend in (("sqlite", "postgresql") if r % 2 == 0 else ("postgresql", "sqlite")):
                if backend == "sqlite":
                    results[backend].append(_one_backend(str(Path(tmp) / f"b{r}.db"), patterns, features, batch,
                                                         queries))
                    continue
                name = f"qml_bench_{uuid.uuid4().hex[:12]}"
                with psycopg.connect(server, autocommit=True) as admin:
                    admin.execute(f'CREATE DATABASE "{name}"')             # a generated name, never input
                try:
                    url = urlunsplit(urlsplit(server)._replace(path=f"/{name}"))
                    results[backend].append(_one_backend(url, patterns, features, batch, queries))
                finally:
                    with psycopg.connect(server, autocommit=True) as admin:
                        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    for backend, runs in results.items():
        med = {k: statistics.median(run[k] for run in runs) for k in runs[0]}
        each = ", ".join(f"{run['insert']:,.0f}" for run in runs)
        print(f"{backend:<10} inserts median {med['insert']:,.0f} patterns/s (runs: {each}); "
              f"find_similar_patterns cold "
              f"{med['cold_ms']:.0f} ms, warm median {med['warm_ms']:.1f} ms, after 1 new label "
              f"{med['refresh_ms']:.0f} ms")


if __name__ == "__main__":
    main()
