"""The registry under several writing processes, and after a writer is killed mid-transaction.

These are the SPEC §5 promises a sweep relies on, on both backends (``registry_db``, see
``conftest.py``): processes that write to one registry at once lose nothing and never see "database
is locked"; a process killed with SIGKILL leaves a registry that is intact and holds only whole
committed batches.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest

from qml_plugin.registry import PatternRegistry
from qml_plugin.registry.connection import connect

PER_WRITER, BATCH, N_FEATURES = 5_000, 500, 20
WRITERS = {"sqlite": 4, "postgresql": 8}
"""Processes writing at once: a sweep's workers on one machine; a cluster's (or a team's) on PostgreSQL."""


def count(db: str, sql: str) -> list[tuple]:
    conn = connect(db)[0]
    try:
        return [tuple(r) for r in conn.execute(sql).fetchall()]
    finally:
        conn.close()


def intact(db: str) -> bool:
    """SQLite's own integrity check; a PostgreSQL server guards its pages itself."""
    return not db.endswith(".db") or count(db, "PRAGMA integrity_check") == [("ok",)]


def batch_frames(writer: int, batch: int, size: int, n_features: int = N_FEATURES):
    """One batch of patterns (ids unique across writers and batches) and their features."""
    start = (writer * 1_000 + batch) * size
    ids = [f"w{writer}-b{batch}-{i}" for i in range(size)]
    patterns = pd.DataFrame({
        "pattern_id": ids, "symbol": f"SYM{writer}", "timeframe": "1h", "pattern_type": "bullish_qml",
        "direction": 1, "detection_bar": np.arange(start, start + size),
        "detection_time": pd.Timestamp("2020-01-01") + pd.to_timedelta(np.arange(start, start + size), "h"),
        "entry": 1.1, "stop": 1.0, "target": 1.3, "rr": 2.0, "validity_score": 0.5,
    })
    rng = np.random.default_rng(start)
    feats = pd.DataFrame(rng.normal(size=(size, n_features)), columns=[f"f{j}" for j in range(n_features)])
    return patterns, feats


def _writer(db: str, writer: int, barrier, errors) -> None:
    try:
        barrier.wait()                                   # all open the fresh file at the same moment
        with PatternRegistry(db) as reg:
            barrier.wait()                               # and all write at the same moment
            for b in range(PER_WRITER // BATCH):
                reg.register_patterns(*batch_frames(writer, b, BATCH), run_id=f"w{writer}-b{b}")
    except Exception as exc:                             # reported to the parent, never swallowed
        errors.put(f"writer {writer}: {type(exc).__name__}: {exc}")


def writer_context():
    """Fresh writer processes as the sweep's own workers get them (``compute.Scheduler("processes")``).

    A fork server where the platform has one: a clean interpreter that imports the registry once,
    from which each writer is forked, so the writers hold no state of the test process and the test
    does not spend its time in eight interpreters importing pandas and scikit-learn at once (that
    was 30 of the 43 s on PostgreSQL). ``spawn`` elsewhere. The preload takes effect only if this
    test starts the server; one already started (by ``compute``) has imported ``qml_plugin`` already.
    """
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["qml_plugin.registry", _writer.__module__])
    return ctx


def test_processes_writing_at_once_lose_no_rows(tmp_path, registry_db):
    sqlite = registry_db.endswith(".db")
    db = str(tmp_path / "shared" / "sweep.db") if sqlite else registry_db   # SQLite: no folder yet either
    writers = WRITERS["sqlite" if sqlite else "postgresql"]
    ctx = writer_context()
    barrier, errors = ctx.Barrier(writers), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(db, w, barrier, errors)) for w in range(writers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    problems = []
    while not errors.empty():
        problems.append(errors.get())
    assert not problems, problems
    assert [p.exitcode for p in procs] == [0] * writers
    assert intact(db)
    assert count(db, "SELECT COUNT(*) FROM ml_pattern_registry") == [(writers * PER_WRITER,)]
    per_symbol = dict(count(db, "SELECT symbol, COUNT(*) FROM ml_pattern_registry GROUP BY symbol"))
    assert per_symbol == {f"SYM{w}": PER_WRITER for w in range(writers)}
    assert count(db, "SELECT COUNT(*), COUNT(DISTINCT version) FROM schema_migrations")[0][0] == 5   # migrated once
    with PatternRegistry(db) as reg:                       # and every row is whole
        assert reg.get_features("w3-b9-499") == pytest.approx(
            dict(batch_frames(3, 9, BATCH)[1].iloc[-1].astype(np.float32).astype(float)))


CRASH_BATCH = 2_000
_CRASH_WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from test_registry_concurrency import batch_frames
    from qml_plugin.registry import PatternRegistry
    reg = PatternRegistry({db!r})
    if reg.backend == "sqlite":
        reg._db().execute("PRAGMA cache_size=40")   # 640 kB: a batch spills into the WAL before its commit
    for b in range(10_000):
        reg.register_patterns(*batch_frames(0, b, {size}, 60), run_id=f"batch-{{b}}")
        print(b, flush=True)
""")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_writer_killed_mid_batch_leaves_only_whole_committed_batches(tmp_path, registry_db):
    db = str(tmp_path / "crash.db") if registry_db.endswith(".db") else registry_db
    code = _CRASH_WRITER.format(tests=os.path.dirname(__file__), db=db, size=CRASH_BATCH)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    committed, stamps = -1, []
    try:
        while committed < 3:                              # let a few batches commit first
            line = proc.stdout.readline()
            assert line, "writer died before committing"
            committed = int(line)
            stamps.append(time.monotonic())
        per_batch = float(np.mean(np.diff(stamps)))
        time.sleep(np.random.default_rng().uniform(0.3, 0.9) * per_batch)   # land inside the next batch
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        committed = max([committed] + [int(x) for x in proc.stdout.read().split()])
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    assert intact(db)
    per_batch = dict(count(db, "SELECT run_id, COUNT(*) FROM ml_pattern_registry GROUP BY run_id"))
    assert set(per_batch.values()) == {CRASH_BATCH}                   # each batch all or nothing
    batches = sorted(int(k.split("-")[1]) for k in per_batch)
    assert batches == list(range(len(batches)))                       # no holes
    assert len(batches) in (committed + 1, committed + 2)             # + one committed but not yet printed
    with PatternRegistry(db) as reg:                                  # and the next open just works
        reg.register_patterns(*batch_frames(1, 0, 10), run_id="after")
        assert reg.get_statistics()["total"] == len(batches) * CRASH_BATCH + 10
