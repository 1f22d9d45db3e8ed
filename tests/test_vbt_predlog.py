"""The prediction log on the vectorbt side (issue 14; SPEC §5 ``ml_predictions``, §9).

``vbt.backtest(..., registry_db=)``, ``vbt.sweep`` and ``qml optimize`` (``ml_data_collection``) register
the patterns the model scored and log one row per scored pattern, model version and mode. Real data
(EURUSD 4h, 2013-03 .. 2014-12, after the session model's training window) and the session
``trained_model``; every expected count is computed by hand from ``detect_patterns`` and the model.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from qml_plugin.errors import ConfigError
from qml_plugin.features import FeatureExtractor
from qml_plugin.filter import decide
from qml_plugin.patterns import QMLParams, detect_patterns, label_patterns
from qml_plugin.registry import PatternRegistry
from qml_plugin.scoring import model_id_of
from qml_plugin.vbt import backtest, sweep, trades_table
from qml_plugin.vbt.predlog import backtest_run_id

THRESHOLD = 0.42        # the session model's confidences sit around 0.36 .. 0.48: both decisions occur


@pytest.fixture(scope="module")
def df(eurusd_4h):
    return eurusd_4h.loc["2013-03-01":"2014-12-31"]


def block(path, **kw) -> dict:
    return {"enabled": True, "model_path": str(path), "prediction_mode": "filter",
            "confidence_threshold": THRESHOLD, **kw}


def by_hand(df, model, p: QMLParams):
    """The patterns of ``p``, the model's confidence on each and the filter mode's decision."""
    pats = detect_patterns(df, p)
    conf = model.predict_proba(FeatureExtractor().extract(df, pats).reindex(pats["pattern_id"]))[:, 1]
    take, _ = decide(pats["validity_score"].to_numpy(), conf, mode="filter", min_score=p.min_score,
                     confidence_threshold=THRESHOLD)
    return pats, pd.Series(conf, index=pats["pattern_id"]), pd.Series(np.where(take, "take", "skip"),
                                                                      index=pats["pattern_id"])


def test_backtest_logs_every_scored_pattern_once_with_its_version_decision_and_contributions(df, trained_model,
                                                                                              tmp_path):
    model, path = trained_model
    db = str(tmp_path / "reg.db")
    p = QMLParams()
    pats, conf, want = by_hand(df, model, p)
    assert {"take", "skip"} <= set(want)                       # a test of decisions that can fail
    plain = backtest(df, p, ml=block(path))
    pf = backtest(df, p, ml=block(path), registry_db=db, run_id="vbt-test")
    pd.testing.assert_frame_equal(trades_table(pf), trades_table(plain))       # the Portfolio is unchanged
    with PatternRegistry(db) as reg:
        log = reg.get_predictions(run_id="vbt-test").set_index("pattern_id")
        assert len(log) == len(pats) and set(log.index) == set(pats["pattern_id"])
        assert (log["decision"] == want.reindex(log.index)).all()
        np.testing.assert_allclose(log["ml_confidence"], conf.reindex(log.index), rtol=1e-6)
        assert (log["model_id"] == model_id_of(model)).all() and model_id_of(model).startswith("sha256:")
        assert log["acting"].all() and (log["mode"] == "filter").all()
        assert all(len(c) == 5 for c in log["contributions"])
        assert set(log["contributions"].iloc[0]) <= set(model.feature_names)
        perf = reg.prediction_performance().set_index("model_id").loc[model_id_of(model)]
        resolved = int(label_patterns(df, pats)["label"].notna().sum())
        assert perf["predictions"] == len(pats) and perf["resolved"] == resolved > 0
        assert perf["taken"] == (want == "take").sum() and perf["skipped"] == (want == "skip").sum()
        assert reg.get_statistics()["total"] == len(pats)
        pid = pats["pattern_id"].iloc[0]
        word = "pass" if want[pid] == "take" else "skip"
        assert reg.get_pattern(pid)["ml_decision"] == f"{word}:filter"
        assert set(model.feature_names) <= set(reg.get_features(pid))           # registered with its features
    backtest(df, p, ml=block(path), registry_db=db, run_id="vbt-test")           # the same run again
    backtest(df, p, ml=block(path), registry_db=db)                               # its default id, twice
    backtest(df, p, ml=block(path), registry_db=db)
    with PatternRegistry(db) as reg:
        assert len(reg.get_predictions(run_id="vbt-test")) == len(pats)
        assert len(reg.get_predictions(run_id=backtest_run_id(df, p, block_cfg(path)))) == len(pats)
        assert len(reg.get_predictions()) == 2 * len(pats)


def block_cfg(path):
    from qml_plugin.config import parse_ml_block

    return parse_ml_block(block(path))


def test_without_a_registry_nothing_is_written(df, trained_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    backtest(df, QMLParams(), ml=block(trained_model[1]))
    cfg = sweep_cfg(tmp_path, trained_model[1], enabled=False)
    table = sweep(cfg, ohlcv=df, progress=False)
    assert "predictions" not in table.attrs
    assert sorted(p.name for p in tmp_path.rglob("*.db")) == []


def test_canary_and_shadow_versions_are_logged_not_acting(df, trained_model, tmp_path):
    from qml_plugin.ml.versions import record_version

    model, path = trained_model
    folder = tmp_path / "versions"
    for v in ("v0001", "v0002"):
        shutil.copytree(path, folder / v)
    db = str(tmp_path / "reg.db")
    with PatternRegistry(db) as reg:
        prod = record_version(reg, model, folder / "v0001", model_name="sq", status="production")
        shadow = record_version(reg, model, folder / "v0002", model_name="sq", status="shadow")
    n = len(detect_patterns(df, QMLParams()))
    backtest(df, QMLParams(), ml=block(folder), registry_db=db, run_id="canary")
    with PatternRegistry(db) as reg:
        log = reg.get_predictions(run_id="canary")
        assert log.groupby("model_id")["acting"].agg(["size", "all", "any"]).to_dict("index") == {
            prod: {"size": n, "all": True, "any": True}, shadow: {"size": n, "all": False, "any": False}}
        perf = reg.prediction_performance("sq").set_index("model_id")
        assert perf.loc[shadow, "status"] == "shadow" and perf.loc[shadow, "predictions"] == n


def sweep_cfg(tmp_path, model_path, *, enabled=True, grid=None) -> dict:
    return {"sweep": {"grid": grid or {"swing_n": [3, 5], "min_score": [0.4, 0.6], "max_wait": [10, 20]},
                      "output": str(tmp_path / "out" / "sweep.csv"), "heatmap": None, "verify_top": 1},
            "ml": block(model_path), "compute": {"scheduler": "serial"},
            "ml_data_collection": {"enabled": enabled, "db_path": str(tmp_path / "sweep.db")}}


def test_sweep_logs_each_distinct_pattern_of_the_grid_once(df, trained_model, tmp_path):
    model, path = trained_model
    table = sweep(sweep_cfg(tmp_path, path), ohlcv=df, progress=False)
    info = table.attrs["predictions"]
    # min_score is not in pattern_id: the grid's distinct patterns are those of its 4 (swing_n, max_wait) keys,
    # and the decision is the first combination's (min_score 0.4, the grid's first value)
    want = {}
    for swing_n in (3, 5):
        for max_wait in (10, 20):
            _, _, dec = by_hand(df, model, QMLParams(swing_n=swing_n, max_wait=max_wait, min_score=0.4))
            want.update(dec.to_dict())
    with PatternRegistry(info["db"]) as reg:
        log = reg.get_predictions(run_id=info["run_id"]).set_index("pattern_id")
        assert info["rows"] == len(log) == len(want) and set(log.index) == set(want)
        assert (log["decision"] == pd.Series(want).reindex(log.index)).all()
        assert reg.get_statistics()["total"] == len(want)
    again = sweep(sweep_cfg(tmp_path, path), ohlcv=df, progress=False)
    assert again.attrs["predictions"]["run_id"] == info["run_id"]
    with PatternRegistry(info["db"]) as reg:
        assert len(reg.get_predictions()) == len(want)


def test_bad_registry_db_and_run_id_are_named(df, trained_model, tmp_path):
    ml = block(trained_model[1])
    with pytest.raises(ConfigError, match=r"registry_db = 123 is not allowed; allowed: a registry path or URL"):
        backtest(df, QMLParams(), ml=ml, registry_db=123)
    with pytest.raises(ConfigError, match=r"registry_db = 'mysql://u@h/db' is not allowed \(.*scheme 'mysql'"):
        backtest(df, QMLParams(), ml=ml, registry_db="mysql://u@h/db")
    with pytest.raises(ConfigError, match=r"registry_db = .* is a directory"):
        backtest(df, QMLParams(), ml=ml, registry_db=str(tmp_path))
    with pytest.raises(ConfigError, match=r"run_id = '' is not allowed; allowed: a non-empty string"):
        backtest(df, QMLParams(), ml=ml, registry_db=str(tmp_path / "r.db"), run_id="")
    bare = df.copy()
    bare.attrs = {}
    with pytest.raises(ConfigError, match=r"ohlcv.attrs\['symbol'\] is missing, but registry_db is set"):
        backtest(bare, QMLParams(), ml=ml, registry_db=str(tmp_path / "r.db"))
    cfg = sweep_cfg(tmp_path, trained_model[1])
    with pytest.raises(ConfigError, match=r"ohlcv.attrs\['symbol'\] is missing, but ml_data_collection.db_path is set"):
        sweep(cfg, ohlcv=bare, progress=False)
    cfg["ml_data_collection"]["enabled"] = "yes"
    with pytest.raises(ConfigError, match=r"ml_data_collection.enabled = 'yes' is not allowed; allowed: true or false"):
        sweep(cfg, ohlcv=df, progress=False)
    assert not (tmp_path / "r.db").exists()


def test_contributions_are_json_of_the_five_largest(df, trained_model, tmp_path):
    model, path = trained_model
    db = str(tmp_path / "reg.db")
    backtest(df, QMLParams(swing_n=5), ml=block(path), registry_db=db, run_id="c")
    with PatternRegistry(db) as reg:
        row = reg.get_predictions(run_id="c").iloc[0]
    pats = detect_patterns(df, QMLParams(swing_n=5)).set_index("pattern_id")
    x = FeatureExtractor().extract(df, pats.reset_index()).loc[[row["pattern_id"]]]
    contrib = model.explain(x).drop(columns="bias").iloc[0]
    top = contrib.abs().sort_values(ascending=False).index[:5]
    assert list(row["contributions"]) == list(top)
    np.testing.assert_allclose(list(row["contributions"].values()), contrib[top].to_numpy(), rtol=1e-6)
    assert json.dumps(row["contributions"])


def test_optimize_logs_each_trial_pattern_in_the_periods_it_was_scored_on(df, trained_model, tmp_path):
    from qml_plugin.vbt.optimize import optimize

    cfg = {"optimize": {"space": {"swing_n": [3, 5]}, "trials": 4, "top_k": 2, "seed": 1,
                        "output_dir": str(tmp_path / "opt")},
           "ml": block(trained_model[1]), "compute": {"scheduler": "serial"},
           "ml_data_collection": {"enabled": True, "db_path": str(tmp_path / "opt.db")}}
    res = optimize(cfg, ohlcv=df, progress=False)
    train_end = int(round(len(df) * 0.6))          # the split's first cut: train = bars [0, train_end)
    top = set(res.top["swing_n"])
    want = set()
    for s in set(res.trials["swing_n"]):
        pats = detect_patterns(df, QMLParams(swing_n=int(s)))
        # the top_k were scored on the holdout (all bars), the others on the train period only
        want |= set(pats["pattern_id"] if s in top else pats.loc[pats["detection_bar"] < train_end, "pattern_id"])
    assert len(top) == 2 and len(set(res.trials["swing_n"])) == 3       # both kinds of trial occur
    with PatternRegistry(res.predictions["db"]) as reg:
        log = reg.get_predictions(run_id=res.predictions["run_id"])
    assert res.predictions["rows"] == len(log) == len(want) and set(log["pattern_id"]) == want


@pytest.fixture(scope="module")
def three_heads(eurusd_4h, tmp_path_factory):
    """The session model's data, fitted with ``r_multiple`` too: a model with an ``expected_r`` head."""
    from qml_plugin.ml.model import SignalQualityModel

    train = eurusd_4h[:"2012-12-31"]
    lab = label_patterns(train, detect_patterns(train)).dropna(subset=["label"])
    X = FeatureExtractor().extract(train, lab)
    model = SignalQualityModel(n_estimators=30, max_depth=3, n_jobs=1).fit(
        X, lab[["label", "r_multiple"]].assign(label=lambda d: d["label"].astype(int)),
        detection_times=lab["detection_time"], exit_times=lab["exit_time"])
    path = tmp_path_factory.mktemp("heads") / "m"
    model.save(path)
    return model, path


def test_expected_value_sweeps_decide_on_expected_r_and_log_it(df, three_heads, tmp_path):
    model, path = three_heads
    cfg = sweep_cfg(tmp_path, path, grid={"swing_n": [3, 5]})
    cfg["ml"] = {"enabled": True, "model_path": str(path), "prediction_mode": "expected_value", "min_expected_r": 0.0}
    cfg["sweep"]["verify_top"] = 2                 # the fast path against the Portfolio, expected_r included
    table = sweep(cfg, ohlcv=df, progress=False)
    assert table.attrs["verified"] == 2
    with PatternRegistry(table.attrs["predictions"]["db"]) as reg:
        log = reg.get_predictions().set_index("pattern_id")
    for swing_n in (3, 5):
        pats = detect_patterns(df, QMLParams(swing_n=swing_n))
        er = model.predict_expected_r(FeatureExtractor().extract(df, pats).reindex(pats["pattern_id"]))
        take, _ = decide(pats["validity_score"].to_numpy(), np.nan, mode="expected_value", expected_r=er)
        mine = log.loc[pats["pattern_id"]]
        np.testing.assert_allclose(mine["expected_r"].astype(float), er, rtol=1e-6)
        assert (mine["decision"].to_numpy() == np.where(take, "take", "skip")).all()
        assert {"take", "skip"} <= set(mine["decision"])
