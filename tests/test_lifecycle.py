"""The model lifecycle (SPEC §8) on a real registry file with real XGBoost models.

The registry is filled with synthetic patterns whose outcome depends on two features (a planted
signal), detected every 12 hours with exits 4-72 hours later, so purging matters.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qml_plugin.cli.main import main
from qml_plugin.errors import RegistryError
from qml_plugin.ml.lifecycle import (
    LearnSettings,
    gate,
    previous_production,
    retrain,
    rollback,
    run_cycle,
    shadow_scores,
)
from qml_plugin.ml.model import SignalQualityModel
from qml_plugin.registry import PatternRegistry

N_FEATURES = 8
REPO = Path(__file__).resolve().parent.parent


def synthetic(n, seed, start="2020-01-01", shift=0.0, shift_from=None):
    """Patterns + features with a planted signal: P(win) = sigmoid(1.5 f0 + f1)."""
    rng = np.random.default_rng(seed)
    det = pd.date_range(start, periods=n, freq="12h")
    feats = rng.normal(size=(n, N_FEATURES))
    label = (rng.random(n) < 1 / (1 + np.exp(-(1.5 * feats[:, 0] + feats[:, 1])))).astype(int)
    if shift:
        feats[(shift_from or 0):, 2:5] += shift          # drift in three features that carry no signal
    direction = np.where(rng.random(n) < 0.5, 1, -1)
    patterns = pd.DataFrame({
        "pattern_id": [f"s{seed}-{i}" for i in range(n)], "symbol": "EURUSD", "timeframe": "1h",
        "detection_time": det, "pattern_type": np.where(direction > 0, "bullish_qml", "bearish_qml"),
        "direction": direction, "validity_score": rng.random(n), "label": label,
        "exit_time": det + pd.to_timedelta(rng.integers(4, 72, n), "h"),
        "r_multiple": np.where(label == 1, 1.5, -1.0), "pnl_pct": np.where(label == 1, 0.6, -0.4)})
    return patterns, pd.DataFrame(feats, columns=[f"ctx_f{j}" for j in range(N_FEATURES)])


def small_model():
    return SignalQualityModel(n_estimators=60, max_depth=2, n_jobs=1)


def stump():
    return SignalQualityModel(n_estimators=1, max_depth=1, colsample_bytree=0.2, n_jobs=1)


@pytest.fixture
def settings(tmp_path):
    return LearnSettings(models_dir=str(tmp_path / "models"), min_samples=100, min_holdout_samples=30)


@pytest.fixture
def reg(tmp_path):
    with PatternRegistry(tmp_path / "reg.db") as r:
        r.register_patterns(*synthetic(500, seed=1))
        yield r


def install(reg, model, settings, status="production"):
    """Register an externally trained model version (as `qml train` would)."""
    path = model.save_version(settings.models_dir)
    meta = json.loads((path / "metadata.json").read_text())
    return reg.add_model_version(settings.model_name, status=status, trained_on_start=model.trained_on_start_,
                                 trained_on_end=model.trained_on_end_, features_used=model.feature_names,
                                 training_samples=model.training_samples_, model_path=str(path),
                                 model_sha256=meta["model_sha256"])


def fit_on(patterns, features, factory=small_model, shuffle=False):
    y = patterns["label"].to_numpy()
    if shuffle:
        y = np.random.default_rng(0).permutation(y)
    return factory().fit(features, y, detection_times=patterns["detection_time"], exit_times=patterns["exit_time"])


def statuses(reg, settings):
    return {v["version"]: v["status"] for v in reg.list_model_versions(settings.model_name)}


# -- gates ------------------------------------------------------------------------------------------
def test_gate_without_production_needs_better_than_chance(settings):
    ok, lines = gate({"n": 100, "auc": 0.5, "brier": 0.25}, None, training_samples=500, settings=settings)
    assert not ok and any(line.startswith("FAIL") and "> 0.5" in line for line in lines)
    assert gate({"n": 100, "auc": 0.6, "brier": 0.25}, None, training_samples=500, settings=settings)[0]


def test_gate_needs_auc_improvement_and_no_worse_brier(settings):
    strict = LearnSettings(min_samples=100, min_auc_improvement=0.02)
    prod = {"n": 100, "auc": 0.60, "brier": 0.22}
    assert gate({"n": 100, "auc": 0.63, "brier": 0.21}, prod, training_samples=500, settings=strict)[0]
    ok, lines = gate({"n": 100, "auc": 0.61, "brier": 0.21}, prod, training_samples=500, settings=strict)
    assert not ok and any("FAIL: candidate AUC" in line for line in lines)
    ok, lines = gate({"n": 100, "auc": 0.70, "brier": 0.23}, prod, training_samples=500, settings=strict)
    assert not ok and any("FAIL: candidate Brier" in line for line in lines)
    ok, lines = gate({"n": 10, "auc": 0.70, "brier": 0.2}, prod, training_samples=500, settings=strict)
    assert not ok and any("FAIL: comparable holdout patterns 10" in line for line in lines)


# -- retrain ----------------------------------------------------------------------------------------
def test_first_candidate_trains_before_a_purged_holdout_and_is_promoted(reg, settings):
    d = retrain(reg, settings, model_factory=small_model)
    assert d.decision == "promote" and d.production_version == 1
    prod = reg.production_model(settings.model_name)
    holdout_start = pd.Timestamp(d.metrics["holdout_start"])
    assert pd.Timestamp(prod["trained_on_end"]) < holdout_start          # every training label known before it
    assert d.metrics["n_holdout"] == 100 and prod["validation_samples"] == 100
    assert prod["training_samples"] < 400                                 # rows exiting after the start purged
    assert prod["model_sha256"] and Path(prod["model_path"], "model.json").is_file()
    assert prod["metrics"]["holdout"]["auc"] > 0.7 and "score_reference" in prod["metrics"]
    (event,) = reg.eval_history(settings.model_name)
    assert event["decision"] == "promote" and event["candidate_version"] == 1 and "pass:" in event["notes"]


def test_better_candidate_replaces_a_weaker_production(reg, settings):
    early, early_f = synthetic(300, seed=2, start="2019-01-01")
    install(reg, fit_on(early, early_f, shuffle=True), settings)          # trained on noise: AUC ~ 0.5
    d = retrain(reg, settings, model_factory=small_model)
    assert d.decision == "promote", d.reasons
    assert d.metrics["candidate"]["auc"] > d.metrics["production"]["auc"] + 0.1
    assert statuses(reg, settings) == {1: "archived", 2: "production"}


def test_worse_candidate_is_rejected_and_the_reason_recorded(reg, settings):
    early, early_f = synthetic(3000, seed=3, start="2015-01-01")
    install(reg, fit_on(early, early_f), settings)                        # strong model, trained before
    d = retrain(reg, settings, model_factory=stump)
    assert d.decision == "reject"
    assert statuses(reg, settings) == {1: "production", 2: "failed"}
    (event,) = reg.eval_history(settings.model_name)
    assert event["decision"] == "reject" and event["baseline_version"] == 1
    assert "FAIL: candidate AUC" in event["notes"] and event["metrics"]["production"]["auc"] > 0.7


def test_too_few_training_samples_are_rejected_with_the_reason(reg, settings):
    few = LearnSettings(models_dir=settings.models_dir, min_samples=1000)
    d = retrain(reg, few, model_factory=small_model)
    assert d.decision == "reject" and d.candidate_version is None
    (event,) = reg.eval_history(few.model_name)
    assert event["decision"] == "reject" and "< min_samples 1000" in event["notes"]
    assert reg.production_model(few.model_name) is None


def test_refit_after_promotion_puts_a_model_trained_on_all_labels_in_production(reg, settings):
    refit = LearnSettings(models_dir=settings.models_dir, min_samples=100, refit_after_promotion=True)
    d = retrain(reg, refit, model_factory=small_model)
    assert d.decision == "promote" and (d.candidate_version, d.production_version) == (1, 2)
    assert statuses(reg, refit) == {1: "archived", 2: "production"}
    cand, prod = (reg.get_model_version(f"signal_quality-v{v}") for v in (1, 2))
    assert prod["training_samples"] == 500 and pd.Timestamp(prod["trained_on_end"]) > pd.Timestamp(
        cand["trained_on_end"])


def test_promotion_is_rejected_when_production_changed_during_evaluation(reg, settings):
    early, early_f = synthetic(200, seed=4, start="2019-01-01")
    other = fit_on(early, early_f)

    def racing_factory():                  # another process promotes while this candidate trains
        if reg.production_model(settings.model_name) is None:
            install(reg, other, settings)
        return small_model()

    d = retrain(reg, settings, model_factory=racing_factory)
    assert d.decision == "reject" and "production version changed during evaluation" in d.reasons[-1]
    assert statuses(reg, settings) == {1: "production", 2: "failed"}


def test_shadow_candidate_is_registered_and_scored_but_never_acts(reg, settings):
    d = retrain(reg, settings, status="shadow", model_factory=small_model)
    assert d.decision == "registered" and reg.production_model(settings.model_name) is None
    assert statuses(reg, settings) == {1: "shadow"} and reg.eval_history(settings.model_name) == []
    X, _ = reg.get_training_data(min_labels=0)
    scores = shadow_scores(reg.path, settings.model_name, X)
    assert list(scores.columns) == ["shadow_v1"]
    end = pd.Timestamp(reg.get_model_version("signal_quality-v1")["trained_on_end"])
    seen = X.index.get_level_values("detection_time") <= end
    assert scores["shadow_v1"][seen].isna().all() and scores["shadow_v1"][~seen].between(0, 1).all()


# -- rollback ---------------------------------------------------------------------------------------
def test_rollback_restores_the_previous_production_version_and_walks_back(reg, settings):
    for _ in range(3):                     # the same data and seed: each candidate ties and is promoted
        assert retrain(reg, settings, model_factory=small_model).decision == "promote"
    assert statuses(reg, settings) == {1: "archived", 2: "archived", 3: "production"}
    assert rollback(reg, settings).production_version == 2
    assert statuses(reg, settings) == {1: "archived", 2: "production", 3: "archived"}
    assert previous_production(reg, settings.model_name)["version"] == 1
    rollback(reg, settings)
    assert reg.production_model(settings.model_name)["version"] == 1
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        rollback(reg, settings)
    decisions = [(e["decision"], e["candidate_version"]) for e in reg.eval_history(settings.model_name)]
    assert decisions == [("promote", 1), ("promote", 2), ("promote", 3), ("rollback", 2), ("rollback", 1)]


# -- cycle ------------------------------------------------------------------------------------------
def test_cycle_keeps_production_without_drift_and_retrains_when_drift_is_flagged(tmp_path, settings):
    with PatternRegistry(tmp_path / "drift.db") as reg:
        reg.register_patterns(*synthetic(500, seed=5))
        first = run_cycle(reg, settings, model_factory=small_model)
        assert first.drift is None and first.decision.decision == "promote"
        calm = run_cycle(reg, settings, model_factory=small_model)
        assert calm.decision is None and not calm.drift.flagged and "kept" in calm.why
        reg.register_patterns(*synthetic(200, seed=6, start="2020-09-01", shift=1.5))
        moved = run_cycle(reg, settings, model_factory=small_model)
        assert moved.drift.flagged and sorted(moved.drift.drifting) == ["ctx_f2", "ctx_f3", "ctx_f4"]
        assert moved.decision is not None
        assert moved.decision.decision in ("promote", "reject")
        assert reg.eval_history(settings.model_name)[-1]["drift"]["flagged"] is True


# -- command line -----------------------------------------------------------------------------------
def test_status_on_an_empty_registry_explains_what_to_do(tmp_path, capsys):
    rc = main(["learn", "--status", "--db", str(tmp_path / "empty.db"), "--models-dir", str(tmp_path / "m")])
    out = capsys.readouterr().out
    assert rc == 0 and "no production model yet" in out and "qml learn --retrain --force" in out
    assert not (tmp_path / "empty.db").exists()  # looking does not create a registry


def write_config(tmp_path, db):
    cfg = tmp_path / "learn.yaml"
    cfg.write_text(f"ml_data_collection: {{db_path: {db}}}\nlearn: {{min_samples: 100, min_holdout_samples: 30, "
                   f"n_jobs: 1, models_dir: {tmp_path / 'models'}}}\n")
    return str(cfg)


def test_history_prints_the_decisions_in_order_and_status_shows_production(reg, settings, tmp_path, capsys):
    retrain(reg, settings, model_factory=small_model)
    retrain(reg, LearnSettings(models_dir=settings.models_dir, min_samples=1000), model_factory=small_model)
    retrain(reg, settings, model_factory=small_model)
    rollback(reg, settings)
    cfg = write_config(tmp_path, reg.path)
    assert main(["learn", "--check-drift", "--config", cfg]) == 0
    assert main(["learn", "--history", "--config", cfg]) == 0
    out = capsys.readouterr().out
    decisions = [line.split()[1] for line in out.splitlines() if line[:4].isdigit()]
    assert decisions == ["promote", "reject", "promote", "rollback"]
    assert main(["learn", "--status", "--config", cfg]) == 0
    out = capsys.readouterr().out
    assert "production v1" in out and "labeled patterns detected since training" in out
    assert "last drift check" in out and "last decision: rollback" in out


def _qml_in_process(argv: list[str], cwd: str, log: str) -> None:
    """``qml <argv>`` in a process of its own, run from ``cwd``; stdout and stderr go to ``log``."""
    import os

    os.chdir(cwd)
    with open(log, "w") as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        code = main(argv)
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def test_two_concurrent_cycles_leave_exactly_one_production_version(tmp_path, registry_db):
    import multiprocessing as mp

    # end to end: two real cycles run at once and agree. Whether they overlap inside transition_models
    # is chance (it passes with the models lock removed), so the lock itself is guarded by the next test.
    db = registry_db                                 # an SQLite file, or a PostgreSQL database
    with PatternRegistry(db) as reg:
        reg.register_patterns(*synthetic(400, seed=7))
    cfg = write_config(tmp_path, db)
    # two processes running `qml learn --cycle` at once, forked from a fork server (a clean interpreter
    # that has imported the CLI once, as compute.Scheduler's workers are) rather than two new
    # interpreters that spend seconds each importing pandas, scikit-learn, bokeh and XGBoost
    ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
    if ctx.get_start_method() == "forkserver":      # effective only if this test starts the server
        ctx.set_forkserver_preload(["qml_plugin.cli.main", "qml_plugin.ml.lifecycle", _qml_in_process.__module__])
    argv = ["learn", "--cycle", "--force", "--config", cfg]
    logs = [str(tmp_path / f"cycle{i}.log") for i in range(2)]
    procs = [ctx.Process(target=_qml_in_process, args=(argv, str(tmp_path), log)) for log in logs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    results = [Path(log).read_text() for log in logs]
    assert [p.exitcode for p in procs] == [0, 0], results
    with PatternRegistry(db) as reg:
        versions = reg.list_model_versions("signal_quality")
        history = reg.eval_history("signal_quality")
    assert sum(v["status"] == "production" for v in versions) == 1
    assert len(versions) == 2 and len(history) == 2 and history[0]["decision"] == "promote"


def _lock_waiters(conn) -> int:
    """PostgreSQL: how many backends of this database wait for a lock right now (pg_locks is read
    live at each query, unlike pg_stat_activity, which a transaction sees as of its first look)."""
    return conn.execute("SELECT count(*) FROM pg_locks WHERE NOT granted AND pid IN "
                        "(SELECT pid FROM pg_stat_activity WHERE datname = current_database())").fetchone()[0]


def test_a_promotion_waits_for_a_competing_model_write_and_then_loses_the_race(registry_db):
    """The serialisation behind "exactly one production version", made to matter on each backend.

    Two `qml learn --cycle` processes (the test above) rarely overlap in the few milliseconds of
    ``transition_models``, so that test passes with the lock removed. Here the overlap is forced:
    a second, real connection is another writer in the middle of promoting ``v2`` (its write
    transaction open, the models lock taken, production read as "none"), and this process then asks
    to promote ``v1`` if production is still "none". It must wait for the other writer (PostgreSQL:
    seen in ``pg_locks``; SQLite, which cannot show waiters: still not done after 0.5 s), then see
    ``v2`` and write nothing. Without the advisory lock (or with a deferred ``BEGIN`` on SQLite) the
    promotion runs at once: it finishes, or the two writers collide on the unique index.
    """
    import threading
    import time

    from qml_plugin.registry.connection import connect, write_transaction

    pg = registry_db.startswith("postgresql")
    with PatternRegistry(registry_db) as reg:
        first, second = (reg.add_model_version("signal_quality") for _ in range(2))
        locked, done, seen = threading.Event(), threading.Event(), {}

        def other_writer() -> None:        # another cycle's promotion of v2, halted half-way
            conn, where = connect(registry_db)
            try:
                with write_transaction(conn, where):
                    conn.lock("models")
                    seen["production"] = conn.execute("SELECT model_id FROM ml_model_versions WHERE "
                                                      "status = 'production'").fetchall()
                    locked.set()
                    deadline = time.monotonic() + (10.0 if pg else 0.5)
                    while not done.is_set() and time.monotonic() < deadline and not (pg and _lock_waiters(conn)):
                        time.sleep(0.005)
                    seen["promotion_waited"] = not done.is_set()
                    conn.execute("UPDATE ml_model_versions SET status = 'production' WHERE model_id = ?", (second,))
            except Exception as exc:       # reported below: a collision is a failure of this test
                seen["error"] = repr(exc)
            finally:
                locked.set()
                conn.close()

        writer = threading.Thread(target=other_writer)
        writer.start()
        assert locked.wait(15)
        try:
            eval_id = reg.transition_models("signal_quality", "promote", expect_production=None,
                                            production=first, candidate_version=1)
        finally:
            done.set()
            writer.join(15)
        assert seen.get("production") == [] and seen.get("promotion_waited"), seen
        assert "error" not in seen, seen
        assert eval_id is None                                        # it lost the race and said so
        assert statuses(reg, LearnSettings()) == {1: "staging", 2: "production"}
        assert reg.eval_history("signal_quality") == []


def test_rollback_without_recorded_promotions_falls_back_to_the_newest_archived_version(reg, settings):
    early, early_f = synthetic(200, seed=8, start="2019-01-01")
    install(reg, fit_on(early, early_f), settings)
    install(reg, fit_on(early, early_f, shuffle=True), settings)      # promoted outside the lifecycle
    assert statuses(reg, settings) == {1: "archived", 2: "production"}
    assert rollback(reg, settings).production_version == 1
    assert reg.eval_history(settings.model_name)[-1]["decision"] == "rollback"


def test_rollback_refuses_a_version_whose_model_file_was_modified(reg, settings):
    from qml_plugin.errors import ModelError

    early, early_f = synthetic(200, seed=9, start="2019-01-01")
    first = install(reg, fit_on(early, early_f), settings)
    install(reg, fit_on(early, early_f, shuffle=True), settings)
    model_file = Path(reg.get_model_version(first)["model_path"], "model.json")
    model_file.write_text(model_file.read_text().replace("0", "1", 1))
    with pytest.raises(ModelError, match="sha256"):
        rollback(reg, settings)
    assert reg.production_model(settings.model_name)["version"] == 2


def test_retrain_on_an_empty_registry_is_a_one_line_error(tmp_path, capsys):
    rc = main(["learn", "--retrain", "--force", "--db", str(tmp_path / "empty.db"), "--models-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "registry has 0" in err and len(err.strip().splitlines()) == 1


def test_status_shows_the_prediction_log_per_model_version(reg, settings, tmp_path, capsys):
    retrain(reg, settings, model_factory=small_model)
    mid = reg.production_model(settings.model_name)["model_id"]
    X, y = reg.get_training_data(min_labels=1)
    ids = X.index.get_level_values("pattern_id")[-40:]
    conf = np.r_[np.full(20, 0.9), np.full(20, 0.1)]
    take = np.where(conf > 0.5, "take", "skip")
    reg.log_predictions(pd.DataFrame({"pattern_id": ids, "ml_confidence": conf, "decision": take}),
                        model_id=mid, mode="filter", run_id="r1")
    assert main(["learn", "--status", "--config", write_config(tmp_path, reg.path)]) == 0
    out = capsys.readouterr().out
    perf = reg.prediction_performance(settings.model_name).iloc[0]
    assert f"{mid} (production): 40 predictions of 40 patterns, 40 resolved; AUC {perf['auc']:.3f}" in out
    assert f"taken 20: win rate {perf['win_rate_taken']:.1%}" in out
