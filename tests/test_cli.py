"""The ``qml`` command line: bad input exits 2 with one line; registry commands work with piped stdin."""
from __future__ import annotations

import io
import sqlite3

import pytest

from qml_plugin.cli.main import main as qml
from qml_plugin.patterns import detect_patterns, label_patterns
from qml_plugin.registry import PatternRegistry


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_config_errors_exit_2_with_one_line_naming_key_value_and_allowed(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("ml: {enabled: true, prediction_mode: filtr}\n")
    for cmd in (["run", "--config", str(bad)], ["backtest", "--config", str(bad)]):
        assert qml(cmd) == 2
        err = one_line_error(capsys)
        assert "ml.prediction_mode = 'filtr'" in err and "allowed: filter, replace, score_enhancement" in err
    bad.write_text("strategy: {class: os.system}\n")
    assert qml(["backtest", "--config", str(bad)]) == 2
    assert "strategy.class = 'os.system' is not allowed" in one_line_error(capsys)


def test_unknown_strategy_parameter_is_named(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("strategy: {params: {swing: 3}}\n")
    assert qml(["backtest", "--config", str(bad)]) == 2
    assert "strategy.params.swing is not a parameter of QMLStrategy" in one_line_error(capsys)


@pytest.fixture
def small_registry(tmp_path, eurusd_4h):
    db = str(tmp_path / "reg.db")
    df = eurusd_4h.iloc[:4000]
    lab = label_patterns(df, detect_patterns(df))
    with PatternRegistry(db) as reg:
        reg.register_patterns(lab, None)
    return db, lab


def test_stats_prints_counts_by_symbol_type_label_and_source(small_registry, capsys):
    db, lab = small_registry
    assert qml(["stats", "--db", db]) == 0
    out = capsys.readouterr().out
    assert f"{len(lab):,} patterns" in out
    for word in ("by symbol", "EURUSD", "by pattern_type", "bullish_qml", "by label_source", "triple_barrier"):
        assert word in out


def test_label_takes_piped_answers_and_user_labels_win(small_registry, capsys, monkeypatch):
    db, _ = small_registry
    monkeypatch.setattr("sys.stdin", io.StringIO("w\ns\nl\nq\n"))
    assert qml(["label", "--db", db, "--limit", "5"]) == 0
    out = capsys.readouterr().out
    assert "2 pattern(s) labeled" in out and "quit" in out
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT user_label, label, label_source FROM ml_pattern_registry "
                            "WHERE user_label IS NOT NULL ORDER BY user_label").fetchall()
    assert rows == [("loss", 0, "user"), ("win", 1, "user")]


def test_migrate_and_bad_label_limit(tmp_path, capsys):
    db = str(tmp_path / "new" / "reg.db")
    assert qml(["migrate", "--db", db]) == 0
    assert "reg.db" in capsys.readouterr().out
    assert qml(["label", "--db", db, "--limit", "0"]) == 2
    assert "--limit must be >= 1, got 0" in one_line_error(capsys)


def test_main_job_reports_what_a_canary_would_have_done(tmp_path, monkeypatch, eurusd_4h):
    from qml_plugin.config import load_config
    from qml_plugin.features import FeatureExtractor
    from qml_plugin.job import run_market_job
    from qml_plugin.ml.model import SignalQualityModel

    monkeypatch.chdir(tmp_path)
    early = eurusd_4h[:"2010-12-31"]
    lab = label_patterns(early, detect_patterns(early)).dropna(subset=["label"])
    X = FeatureExtractor().extract(early, lab).drop(columns=["pattern_id", "regime_at_detection"])
    model = SignalQualityModel(n_estimators=50).fit(X, lab["label"].astype(int), times=lab["detection_time"],
                                                    exit_times=lab["exit_time"])
    path = model.save(tmp_path / "canary")
    cfg = load_config({"data": {"source": "EURUSD_1h", "resample": "4h"},
                       "ml": {"enabled": True, "prediction_mode": "filter"},
                       "walk_forward": {"min_train_labels": 50, "random_seeds": 20}})
    with PatternRegistry(cfg["ml_data_collection"]["db_path"]) as reg:
        reg.add_model_version("signal_quality", status="canary", model_path=str(path),
                              trained_on_end=str(model.trained_on_end_), features_used=model.feature_names)
    table = run_market_job(cfg, progress=False).table
    row = table[table["mode"].str.startswith("canary_v1")]
    assert len(row) == 1 and "not acting" in row["mode"].iloc[0] and row["trades"].iloc[0] > 0
    with PatternRegistry(cfg["ml_data_collection"]["db_path"]) as reg:
        assert any(v["status"] == "archived" for v in reg.list_model_versions("walk_forward_EURUSD_4h"))


def test_shipped_configs_are_found_by_name_from_any_folder(tmp_path, monkeypatch, capsys):
    from qml_plugin.cli.common import config_path

    monkeypatch.chdir(tmp_path)
    assert config_path("configs/sweep.yaml", "sweep.yaml").name == "sweep.yaml"
    assert config_path("qml_baseline.yaml", "qml_with_ml.yaml").is_file()
    assert qml(["run", "--config", "/nonexistent.yaml"]) == 2
    err = one_line_error(capsys)
    assert "config file not found: /nonexistent.yaml" in err and "qml_baseline.yaml, qml_with_ml.yaml, sweep.yaml" in err
