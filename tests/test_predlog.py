"""The prediction log in backtests (SPEC §5, §13): every scoring event, by the version that scored it.

One model trained on 2007-2010 scores the 2011-2013 backtest; the log must hold one row per pattern it
scored, under its ``model_id``, with the mode's decision and five contributions, written with the
registrations (registry) or left on the strategy (collect mode) for the driver.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import yaml
from backtesting import Backtest

from qml_plugin.features import FeatureExtractor
from qml_plugin.mixins import record_run
from qml_plugin.ml.model import SignalQualityModel
from qml_plugin.ml.versions import record_version
from qml_plugin.patterns import detect_patterns, label_patterns
from qml_plugin.registry import PatternRegistry
from qml_plugin.scoring import model_id_of
from qml_plugin.strategies import QMLStrategy


@pytest.fixture(scope="module")
def early_models(eurusd_4h, tmp_path_factory):
    """Two versions trained on data before 2011 (the second on half the labels), in one folder."""
    early = eurusd_4h[:"2010-12-31"]
    lab = label_patterns(early, detect_patterns(early)).dropna(subset=["label"])
    X = FeatureExtractor().extract(early, lab)
    root = tmp_path_factory.mktemp("versions") / "wf"
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for rows in (slice(None), slice(None, len(lab) // 2)):
            m = SignalQualityModel(n_estimators=40, calibration=None).fit(
                X.iloc[rows], lab["label"].iloc[rows].astype(int), detection_times=lab["detection_time"].iloc[rows],
                exit_times=lab["exit_time"].iloc[rows])
            out.append((m, m.save_version(root)))
    return root, out


def _run(df, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Backtest(df, QMLStrategy, cash=1_000_000, finalize_trades=True).run(**kw)


def _ml(path, mode="filter"):
    return yaml.safe_dump({"enabled": True, "model_path": str(path), "prediction_mode": mode})


def test_collect_mode_leaves_the_predictions_on_the_strategy_and_the_driver_writes_them(eurusd_4h, early_models,
                                                                                       tmp_path):
    _, [(model, path), _] = early_models
    stats = _run(eurusd_4h["2011":"2013"], registry_db=None, register_patterns=True, ml_config=_ml(path))
    s = stats._strategy
    pred, dec = s.predictions, s.pattern_decisions
    scored = s.patterns["pattern_id"][dec["ml_confidence"].notna().to_numpy()]
    assert len(pred) == len(scored) > 50 and set(pred["pattern_id"]) == set(scored)
    assert set(pred["model_id"]) == {model_id_of(model)} and model_id_of(model).startswith("sha256:")
    assert pred["acting"].all() and set(pred["mode"]) == {"filter"}
    take = dec.set_index(s.patterns["pattern_id"])["take"]
    assert (pred.set_index("pattern_id")["decision"] == np.where(take[pred["pattern_id"]], "take", "skip")).all()
    assert 0 < (pred["decision"] == "skip").sum() < len(pred)
    assert pred["contributions"].map(lambda j: len(yaml.safe_load(j))).eq(5).all()
    db = str(tmp_path / "r.db")
    assert not (tmp_path / "r.db").exists()                             # collect mode wrote nothing
    record_run(stats, db)
    with PatternRegistry(db) as reg:
        log = reg.get_predictions()
        perf = reg.prediction_performance()
    assert len(log) == len(pred) and set(log["run_id"]) == {s.registrations.run_id}
    assert perf["resolved"].iloc[0] > 0 and np.isfinite(perf["auc"].iloc[0])


def test_a_canary_in_the_model_folder_scores_and_is_logged_never_acting(eurusd_4h, early_models, tmp_path):
    root, [(m1, p1), (m2, p2)] = early_models
    db = str(tmp_path / "r.db")
    with PatternRegistry(db) as reg:
        acting = record_version(reg, m1, p1, model_name="sq", status="staging")
        canary = record_version(reg, m2, p2, model_name="sq", status="canary")
    stats = _run(eurusd_4h["2011":"2013"], registry_db=db, register_patterns=True, ml_config=_ml(root), run_id="bt1")
    with PatternRegistry(db) as reg:
        log = reg.get_predictions(run_id="bt1")
    by = log.groupby("model_id")
    assert set(by.groups) == {acting, canary}
    assert by["acting"].all().to_dict() == {acting: True, canary: False}
    assert by.size()[canary] == by.size()[acting]                        # the canary scored every pattern too
    dec = stats._strategy.pattern_decisions["ml_confidence"].to_numpy()
    np.testing.assert_allclose(np.sort(log[log["model_id"] == acting]["ml_confidence"]), np.sort(dec[~np.isnan(dec)]))
    assert not np.allclose(np.sort(log[log["model_id"] == canary]["ml_confidence"]), np.sort(dec[~np.isnan(dec)]))


def test_signals_a_strategy_scores_at_run_time_are_logged_with_their_decision(eurusd_4h, early_models):
    from backtesting import Strategy

    from qml_plugin.mixins import MLFilterMixin, PatternRegistryMixin

    _, [(model, path), _] = early_models
    df = eurusd_4h["2011":"2011"]
    pats = detect_patterns(df)
    rows = pd.concat([pats.set_index("pattern_id"), FeatureExtractor().extract(df, pats)], axis=1).reset_index()
    by_bar = {int(r["detection_bar"]): r for r in rows.to_dict("records")}

    class OwnSignals(PatternRegistryMixin, MLFilterMixin, Strategy):
        def init(self):
            pass

        def next(self):
            row = by_bar.get(len(self.data) - 1)
            if row is not None and not self.position and not self.orders:
                (self.buy if row["direction"] == 1 else self.sell)(tag=dict(row))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = Backtest(df, OwnSignals, cash=1_000_000).run(registry_db=None, ml_config=_ml(path))
    pred = stats._strategy.predictions
    signals = {s["row"]["pattern_id"]: s for s in stats._strategy._signals}
    assert len(pred) == len(signals) > 5 and set(pred["model_id"]) == {model_id_of(model)}
    want = ["take" if signals[p]["take"] else "skip" for p in pred["pattern_id"]]
    assert pred["decision"].tolist() == want and {"take", "skip"} == set(want)
    np.testing.assert_allclose(pred["ml_confidence"], [signals[p]["ml_confidence"] for p in pred["pattern_id"]])
    assert pred["contributions"].notna().all()
