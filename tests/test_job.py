"""The main job as a library (SPEC §11, §15): its own run folder, visible warnings, registry first."""
from __future__ import annotations

import hashlib
import os
import warnings

import pandas as pd
import pytest
import yaml

from qml_plugin.config import load_config
from qml_plugin.errors import ConfigError, RegistryError
from qml_plugin.features import FeatureExtractor
from qml_plugin.job import new_run_dir, run_market_job
from qml_plugin.job.runs import WarningLog, default_strategy, make_backtest, run_backtest
from qml_plugin.ml.model import SignalQualityModel
from qml_plugin.patterns import detect_patterns, label_patterns

SMALL = {"data": {"source": "EURUSD_1h", "resample": "4h", "start": "2007-01-01", "end": "2014-12-31"},
         "ml": {"enabled": True, "prediction_mode": "filter"},
         "walk_forward": {"min_train_labels": 50, "random_seeds": 20}}


def _job_in(folder: str) -> tuple[str, list]:
    """One job run in ``folder`` (a module-level function, so a process pool can run two at once)."""
    os.chdir(folder)
    res = run_market_job(load_config(SMALL), progress=False)
    return str(res.run.path), res.table.to_dict("records")


def _digest(folder) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_two_jobs_in_one_folder_never_share_models_and_match_a_lone_run(tmp_path, monkeypatch):
    from qml_plugin.compute import Scheduler

    lone, shared = tmp_path / "lone", tmp_path / "shared"
    lone.mkdir()
    shared.mkdir()
    monkeypatch.chdir(tmp_path)  # the workers chdir; keep the test's own cwd restorable
    with Scheduler("processes", workers=3, progress=False) as sch:
        (lone_path, lone_table), *both = sch.map(_job_in, [str(lone), str(shared), str(shared)])
    (a_path, a_table), (b_path, b_table) = both
    assert a_path != b_path
    runs = sorted(p.name for p in (shared / "results" / "runs").iterdir())
    assert len(runs) == 2 and not (shared / "results" / "walk_forward").exists()
    for path in (a_path, b_path):
        assert any(p.name == "model.json" for p in (shared / "results" / "runs" / path.rsplit("/", 1)[1]).rglob("*"))
    # each concurrent run shows exactly what a lone run shows (the bug: 62 filter trades instead of 36)
    lone_df = pd.DataFrame(lone_table)
    assert lone_df.set_index("mode").loc["filter", "trades"] >= 3, lone_df
    pd.testing.assert_frame_equal(pd.DataFrame(a_table), lone_df)
    pd.testing.assert_frame_equal(pd.DataFrame(b_table), lone_df)
    # a third run in the same folder leaves the first two untouched
    monkeypatch.chdir(shared)
    before = _digest(shared / "results" / "runs")
    run_market_job(load_config(SMALL), progress=False)
    after = _digest(shared / "results" / "runs")
    assert {k: v for k, v in after.items() if k in before} == before and len(after) > len(before)


def test_a_run_folder_is_never_reused(tmp_path):
    new_run_dir(tmp_path, run_id="r1")
    with pytest.raises(ConfigError, match="already exists"):
        new_run_dir(tmp_path, run_id="r1")


def test_damaged_registry_fails_before_any_folder_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "experiments.db").write_bytes(b"SQLite format 3\x00" + b"\x13" * 8192)
    with pytest.raises(RegistryError):
        run_market_job(load_config(SMALL), progress=False)
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["experiments.db"]


@pytest.fixture(scope="module")
def small_bt(eurusd_4h):
    return eurusd_4h.loc["2009":"2011"]


def test_ml_filter_off_warning_reaches_the_user_once(tmp_path, small_bt):
    bt = make_backtest(small_bt, default_strategy(), load_config({})["backtest"])
    block = yaml.safe_dump({"enabled": True, "model_path": str(tmp_path / "missing"), "on_model_error": "baseline"})
    log = WarningLog()
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        for where in ("filter", "replace"):
            run_backtest(bt, log=log, where=where, registry_db=str(tmp_path / "r.db"), ml_config=block)
    off = [w for w in log.seen if "ML filter off, trading unfiltered" in w]
    assert len(off) == 1 and off[0].endswith("[filter, replace; 2 times]"), log.seen
    shown = [str(w.message) for w in shown if "ML filter off" in str(w.message)]
    assert len(shown) == 1 and shown[0].startswith("filter: ML filter off")   # shown to the user once
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        log.add("(2020-01-01 10:00:00) A contingent SL/TP order", where="x")
        log.add("(2021-05-01 11:00:00) A contingent SL/TP order", where="y")   # same warning, other bar
    assert len(again) == 1 and log.seen[-1] == "A contingent SL/TP order [x, y; 2 times]"


def test_in_sample_scores_are_named_in_the_warnings(tmp_path, small_bt):
    lab = label_patterns(small_bt, detect_patterns(small_bt)).dropna(subset=["label"])
    X = FeatureExtractor().extract(small_bt, lab)
    model = SignalQualityModel(n_estimators=20).fit(X, lab["label"],
                                                    times=lab["detection_time"], exit_times=lab["exit_time"])
    path = model.save(tmp_path / "m")
    bt = make_backtest(small_bt, default_strategy(), load_config({})["backtest"])
    log = WarningLog()
    block = yaml.safe_dump({"enabled": True, "model_path": str(path), "allow_in_sample": True,
                            "prediction_mode": "filter"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = run_backtest(bt, log=log, where="filter", registry_db=str(tmp_path / "r.db"), ml_config=block)
    assert stats._strategy.ml_status == "IN-SAMPLE"
    assert any(w.startswith("ML scores are IN-SAMPLE") and w.endswith("[filter]") for w in log.seen), log.seen


def test_qml_run_on_a_small_universe_prints_the_verdict_and_writes_its_folder(tmp_path, monkeypatch, capfd):
    from qml_plugin.cli.main import main as qml

    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(
        "data: {source: [EURUSD_1d, GBPUSD_1d, EURGBP_1d], resample: null}\n"
        "ml: {enabled: true, prediction_mode: filter}\n"
        "walk_forward: {min_train_labels: 20, random_seeds: 20, scheme: pooled}\n"
        "report: {output: null}\n")          # the run folder's report only (the copy: test_cli's qml run)
    with warnings.catch_warnings(record=True) as raw:   # what would reach stderr as raw UserWarnings
        warnings.simplefilter("always")
        assert qml(["run", "--config", "tiny.yaml", "--no-progress", "--scheduler", "processes", "--workers", "2"]) == 0
    printed = capfd.readouterr()       # file descriptors: a worker process's stderr is caught as well
    out = printed.out
    assert "Primary test (pooled scheme, filter mode, pattern level)" in out and "model fits" in out
    # each job warning reaches the user once: as its summary line, not again as a raw warning on stderr
    # (market units warn in workers, then the driver merges; walk-forward groups warn in workers)
    shown = out + printed.err + "\n".join(str(w.message) for w in raw)
    assert shown.count("A contingent SL/TP order would execute") == 1, shown[-3000:]
    assert "warning: A contingent SL/TP order would execute" in out
    assert shown.count("head left uncalibrated") == out.count("head left uncalibrated") > 0, shown[-3000:]
    (run,) = (tmp_path / "results" / "runs").iterdir()
    assert {"verdict.csv", "markets.csv", "models", "report.html"} <= {p.name for p in run.iterdir()}
    assert not (tmp_path / "results" / "report.html").exists()          # report.output: null writes no copy
    verdict = pd.read_csv(run / "verdict.csv")
    assert set(verdict["scheme"]) == {"pooled"} and verdict["primary"].sum() == 1
    assert set(pd.read_csv(run / "markets.csv")["dataset"]) == {"EURUSD_1d", "GBPUSD_1d", "EURGBP_1d"}
