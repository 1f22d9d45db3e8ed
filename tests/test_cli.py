"""The ``qml`` command line: bad input exits 2 with one line; registry commands work with piped stdin."""
from __future__ import annotations

import io
import json
import re
import sqlite3

import numpy as np
import pytest

from qml_plugin.cli.main import main as qml
from qml_plugin.patterns import detect_patterns, label_patterns
from qml_plugin.registry import PatternRegistry

BAR = re.compile(r"Backtest\.run|\d+%\|")
"""What a tqdm bar leaves on stderr: backtesting.py's ``Backtest.run`` label or a ``12%|`` gauge."""


def keep_bars(monkeypatch) -> None:
    """Undo, after the test, what ``--no-progress`` changes for the whole process (cli.common.silence_progress)."""
    import backtesting._util
    import backtesting.backtesting
    import backtesting.lib

    for mod in (backtesting._util, backtesting.backtesting, backtesting.lib):
        monkeypatch.setattr(mod, "_tqdm", mod._tqdm)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)


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


def test_label_shows_the_logged_prediction_and_its_top_contributions_largest_first(small_registry, capsys,
                                                                                   monkeypatch):
    db, _ = small_registry
    with PatternRegistry(db) as reg:
        first, second = (p["pattern_id"] for p in reg.get_unlabeled_patterns(limit=2))
        reg.log_predictions({"pattern_id": first, "model_id": "wf-v1", "mode": "filter", "ml_confidence": 0.3,
                             "decision": "skip", "contributions": json.dumps({"a": 0.1, "b": -0.7})}, run_id="r1")
        reg.log_predictions({"pattern_id": first, "model_id": "wf-v2", "mode": "filter", "ml_confidence": 0.62,
                             "expected_r": 0.25, "decision": "take", "predicted_at": "2030-01-01",
                             "contributions": json.dumps({"geo_rr": 0.05, "ctx_rsi_14": -0.4, "mom_ret_20": 0.9})},
                            run_id="r2")
    with sqlite3.connect(db) as conn:    # as if an ML backtest had registered the second pattern
        conn.execute("UPDATE ml_pattern_registry SET ml_confidence = 0.409 WHERE pattern_id = ?", (second,))
    monkeypatch.setattr("sys.stdin", io.StringIO("s\ns\n"))
    assert qml(["label", "--db", db, "--limit", "2"]) == 0
    out = capsys.readouterr().out
    one, two = out.split(f"] {first}")[1].split(f"] {second}")
    assert ("latest logged prediction by wf-v2 (filter, run r2): ml_confidence 0.620  expected_r 0.250  "
            "stop_risk n/a  decision take") in one                        # the newest of the pattern's predictions
    # the stored confidence is named as the one from registration, so it cannot be read as a second opinion
    assert "ml_confidence at registration: none (no model acted)" in one and "ml_confidence None" not in out
    assert "ml_confidence at registration 0.409" in two
    assert "top contributions (log-odds): mom_ret_20 +0.900  ctx_rsi_14 -0.400  geo_rr +0.050" in one
    assert "prediction: none logged" in two and "top contributions" not in two


def test_migrate_and_absurd_label_limits_are_one_line_errors(tmp_path, capsys):
    db = str(tmp_path / "new" / "reg.db")
    assert qml(["migrate", "--db", db]) == 0
    assert "reg.db" in capsys.readouterr().out
    for limit in ("0", "-5", str(10**12), "many"):
        assert qml(["label", "--db", db, "--limit", limit]) == 2
        assert (f"qml label: error: argument --limit: must be an integer in [1, 10000], got '{limit}'"
                in one_line_error(capsys))


@pytest.mark.parametrize("argv,message", [
    (["detect", "--swing-n", "0"], "qml detect: error: argument --swing-n: must be an integer in [1, 1000], got '0'"),
    (["detect", "--head-min-atr", "nan"],
     "qml detect: error: argument --head-min-atr: must be a finite number >= 0, got 'nan'"),
    (["train", "--folds", "1"], "qml train: error: argument --folds: must be an integer in [2, 50], got '1'"),
    (["train", "--min-labels", "0"], "qml train: error: argument --min-labels: must be an integer >= 10, got '0'"),
    (["config", "schema", "bogus"], "qml config schema: error: argument kind: invalid choice: 'bogus'"),
    (["nosuchcommand"], "qml: error: argument COMMAND: invalid choice: 'nosuchcommand'"),
])
def test_bad_flags_are_one_line_and_exit_2(argv, message, capsys):
    assert qml(argv) == 2
    assert message in one_line_error(capsys)


def _labels(db):
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT user_label FROM ml_pattern_registry WHERE user_label IS NOT NULL").fetchall()


def test_label_with_stdin_closed_early_exits_2_in_one_line_and_keeps_the_labels_given(
        small_registry, capsys, monkeypatch):
    db, _ = small_registry
    monkeypatch.setattr("sys.stdin", io.StringIO("w\nbogus\nl\n"))    # EOF before 'q'; 'bogus' is asked again
    assert qml(["label", "--db", db, "--limit", "5"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.count("\n") == 0 and err.startswith("qml label: error: stdin closed after 2 of 5 pattern(s)")
    assert "2 label(s) given before were saved" in err and "answer w, l, i, s or q" in captured.out
    assert sorted(_labels(db)) == [("loss",), ("win",)]
    closed = io.StringIO("")
    closed.close()                                                     # a closed stdin, not just an empty one
    monkeypatch.setattr("sys.stdin", closed)
    assert qml(["label", "--db", db, "--limit", "3"]) == 2
    assert "stdin closed after 0 of 3 pattern(s)" in one_line_error(capsys)
    assert len(_labels(db)) == 2


def _inject(monkeypatch, exc):
    def boom(*args, **kwargs):
        raise exc
    monkeypatch.setattr("qml_plugin.cli.config.load_any_config", boom)


@pytest.mark.parametrize("exc", [ZeroDivisionError("division by zero"), ValueError("an internal ValueError"),
                                 FileNotFoundError(2, "No such file", "/tmp/x"), KeyError("ml")])
def test_an_unexpected_exception_is_a_bug_with_its_traceback_and_exit_1(exc, monkeypatch, capsys):
    _inject(monkeypatch, exc)
    assert qml(["config", "check", "qml_baseline.yaml"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and type(exc).__name__ in err
    assert "load_any_config" in err                                    # the traceback shows where it happened
    assert err.strip().splitlines()[-1].startswith("qml config: internal error: this is a bug in qml-plugin")


def test_qml_errors_are_one_bounded_line_and_interrupts_and_closed_pipes_keep_their_codes(monkeypatch, capsys):
    from qml_plugin.errors import DataError

    _inject(monkeypatch, DataError("bad\nprint at 2020-01-01 " + "x" * 10_000))
    assert qml(["config", "check", "qml_baseline.yaml"]) == 2
    err = one_line_error(capsys)
    assert err.startswith("qml config: error: bad print at 2020-01-01 xxx") and len(err) < 2100
    _inject(monkeypatch, KeyboardInterrupt())
    assert qml(["config", "check", "qml_baseline.yaml"]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_main_job_reports_what_a_canary_would_have_done_and_logs_every_prediction(tmp_path, monkeypatch, eurusd_4h,
                                                                                  capsys):
    from qml_plugin.config import load_config
    from qml_plugin.features import FeatureExtractor
    from qml_plugin.job import run_market_job
    from qml_plugin.ml.model import SignalQualityModel
    from qml_plugin.report import format_table

    monkeypatch.chdir(tmp_path)
    keep_bars(monkeypatch)
    early = eurusd_4h[:"2010-12-31"]
    lab = label_patterns(early, detect_patterns(early)).dropna(subset=["label"])
    X = FeatureExtractor().extract(early, lab)
    model = SignalQualityModel(n_estimators=50).fit(X, lab["label"].astype(int), detection_times=lab["detection_time"],
                                                    exit_times=lab["exit_time"])
    path = model.save(tmp_path / "canary")
    text = ("data: {source: EURUSD_1h, resample: 4h}\n"
            "ml: {enabled: true, prediction_mode: filter, regime_models: true, min_regime_labels: 40}\n"
            "walk_forward: {min_train_labels: 50, random_seeds: 20}\n")
    (tmp_path / "run.yaml").write_text(text)
    cfg = load_config(str(tmp_path / "run.yaml"))
    with PatternRegistry(cfg["ml_data_collection"]["db_path"]) as reg:
        reg.add_model_version("signal_quality", status="canary", model_path=str(path),
                              trained_on_end=str(model.trained_on_end_), features_used=model.feature_names)
    seen = []
    monkeypatch.setattr("qml_plugin.cli.run.run_market_job", lambda *a, **k: seen.append(run_market_job(*a, **k))
                        or seen[-1])                                 # the real job; the test keeps its result
    assert qml(["run", "--config", "run.yaml", "--no-progress"]) == 0
    printed, err = capsys.readouterr()
    assert not BAR.search(err), err[-300:]              # not one bar, backtesting.py's Backtest.run included
    (res,) = seen
    table = res.table
    # counts are integers in every row, the random filter's median and 5 % / 95 % band included (job.market)
    assert table["trades"].dtype.kind == "i" and table["mode"].str.startswith("random filter").sum() == 3
    shown = format_table(table)
    assert shown.to_string(index=False) in printed and shown["trades"].str.fullmatch(r"\d+").all(), printed
    # ml.regime_models: qml run shows which regimes had their own model, and what they gained out of sample
    rc = res.regimes
    assert rc is not None and rc.regimes == res.walk_forward.regime_models and len(rc.regimes) >= 1
    assert "regime models beside the pooled model (out of sample):" in printed and rc.sentence() in printed
    for name in rc.regimes:
        assert rc.table.set_index("regime").loc[name, "own model"] == "yes"
    assert rc.ci[0] <= rc.diff <= rc.ci[1] and f"difference {rc.diff:+.3f}" in rc.sentence()
    report = (res.run.path / "report.html").read_text()
    assert (tmp_path / "results" / "report.html").read_text() == report       # and its copy at report.output
    assert rc.sentence() in report and "<h2>Feature contributions</h2>" in report and "gain share" in report
    row = table[table["mode"].str.startswith("canary_v1")]
    assert len(row) == 1 and "not acting" in row["mode"].iloc[0] and row["trades"].iloc[0] > 0
    with PatternRegistry(cfg["ml_data_collection"]["db_path"]) as reg:
        assert any(v["status"] == "archived" for v in reg.list_model_versions("walk_forward_EURUSD_4h"))
        log = reg.get_predictions(run_id=res.run.run_id)
        versions = {v["model_id"]: v for v in reg.list_model_versions("walk_forward_EURUSD_4h")}
    # the prediction log (SPEC §5): one acting row per out-of-sample pattern and mode, by the version that scored it
    oos = res.walk_forward.oos_proba
    acting = log[log["acting"]]
    assert acting.groupby("mode").size().to_dict() == {m: int(oos.notna().sum()) for m in ("filter", "replace",
                                                                                          "score_enhancement")}
    assert set(acting["model_id"]) <= set(versions) and not acting.duplicated(["pattern_id", "mode"]).any()
    assert acting["decision"].isin(["take", "skip"]).all() and acting["contributions"].map(len).eq(5).all()
    np.testing.assert_allclose(np.sort(acting[acting["mode"] == "filter"]["ml_confidence"].to_numpy()),
                               np.sort(oos.dropna().to_numpy()))        # the regime-aware scores of the walk-forward
    filt = acting[acting["mode"] == "filter"].set_index("pattern_id")
    assert (filt["decision"] == "take").sum() < len(filt)         # filter mode skipped some patterns
    # the canary scored too, never acting (once, in the configured mode)
    quiet = log[~log["acting"]]
    assert set(quiet["model_id"]) == {"signal_quality-v1"} and set(quiet["mode"]) == {"filter"} and len(quiet) > 0
    assert qml(["learn", "--status", "--db", cfg["ml_data_collection"]["db_path"]]) == 0
    out = capsys.readouterr().out
    assert "signal_quality-v1 (canary): " in out and re.search(r"walk_forward_EURUSD_4h-v\d+ \(archived\): \d+ pr", out)


def test_shipped_configs_are_found_by_name_from_any_folder(tmp_path, monkeypatch, capsys):
    from qml_plugin.cli.common import config_path

    monkeypatch.chdir(tmp_path)
    assert config_path("configs/sweep.yaml", "sweep.yaml").name == "sweep.yaml"
    assert config_path("qml_baseline.yaml", "qml_with_ml.yaml").is_file()
    assert qml(["run", "--config", "/nonexistent.yaml"]) == 2
    err = one_line_error(capsys)
    assert "config file not found: /nonexistent.yaml" in err
    assert "qml_baseline.yaml, qml_with_ml.yaml, sweep.yaml" in err


def test_strategy_params_refuse_methods_properties_and_mixin_settings():
    from qml_plugin.cli.common import strategy_params
    from qml_plugin.errors import ConfigError
    from qml_plugin.strategies import QMLStrategy

    assert strategy_params(QMLStrategy, {"swing_n": 5, "min_score": 0.6}) == {"swing_n": 5, "min_score": 0.6}
    for key, message in [("ml_status", r"strategy.params.ml_status is not a parameter of QMLStrategy "
                                       r"\(a method or property\); allowed: entry_offset_atr, head_min_atr"),
                         ("init", r"strategy.params.init is not a parameter of QMLStrategy \(a method or property\)"),
                         ("swng_n", r"strategy.params.swng_n is not a parameter of QMLStrategy \(not an attribute\)"),
                         ("registry_db", r"strategy.params.registry_db is a mixin setting, not a strategy parameter; "
                                         r"set it with ml_data_collection.db_path")]:
        with pytest.raises(ConfigError, match=message):
            strategy_params(QMLStrategy, {key: 1})


@pytest.mark.parametrize("argv", [["learn", "--status", "--top", "-1"], ["sweep", "--top", "-3"]])
def test_a_negative_top_is_one_line_and_exit_2(argv, capsys):
    assert qml(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--top" in err and "must be an integer in [1," in err



def test_no_progress_silences_backtesting_pys_own_bars_and_every_long_command_offers_it(tmp_path, monkeypatch, capsys):
    from qml_plugin.cli.main import build_parser

    keep_bars(monkeypatch)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bt.yaml").write_text("data: {source: EURUSD_1h, resample: 4h, start: 2012-01-01, end: 2012-07-01}\n"
                                      "ml_data_collection: {enabled: false}\nml: {enabled: false}\n")
    assert qml(["backtest", "--config", "bt.yaml"]) == 0
    assert BAR.search(capsys.readouterr().err)            # without the flag the bar shows (the check can fail)
    assert qml(["backtest", "--config", "bt.yaml", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "# Trades" in captured.out and not BAR.search(captured.err), captured.err[-300:]
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in ("run", "backtest", "sweep", "optimize"):
        assert "--no-progress" in sub.choices[name].format_help(), name
