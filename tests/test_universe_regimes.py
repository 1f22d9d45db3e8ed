"""Regime models in the universe run (SPEC §13, issue 14): one model per regime with enough labels in each
walk-forward family of a scheme, the family's pooled model elsewhere, judged against the pooled models alone.

Synthetic pool frames go straight into ``group_tasks`` / ``fit_group`` / ``collect_scheme`` and the
comparison (the full universe job takes minutes). The generator plants a known effect: a win is likely
when ``ctx_a > 0`` (P = 0.8 against 0.2). With ``flip`` the effect reverses in the ``ranging`` regime, so
one pooled model averages two opposite rules and must lose to a model per regime; without it the regimes
do not matter. ``volatile`` holds ~4 % of the rows: under ``min_regime_labels`` it never gets a model.

A step effect, not a smooth one, is deliberate for the null: with a smooth logistic effect a regime model
trained on half the labels is measurably worse than the pooled one (on this generator the CI lies below
0, and the sentence says "did worse"), a real cost of regime models rather than noise; the null test asks
whether, when regimes do not matter and data is not the bottleneck, the comparison reports no gain.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO

from qml_plugin.config import load_config
from qml_plugin.errors import ConfigError
from qml_plugin.job.predlog import scheme_predictions
from qml_plugin.job.regimes import compare_scheme_regimes, scheme_regime_sections, weighted_auc
from qml_plugin.job.schemes import collect_scheme, fit_group, group_tasks
from qml_plugin.registry import PatternRegistry

EMBARGO = pd.Timedelta("1D")
WF = {"every_months": 12, "min_train_labels": 200, "embargo": EMBARGO, "regimes": True, "min_regime_labels": 100,
      "model_params": {"n_estimators": 40, "calibration": None}}


def _pool(flip: bool, n: int = 2400, seed: int = 0, label_from: pd.Timestamp | None = None):
    """Five years of patterns of two markets, with UTC clocks, regimes, levels and three-head targets."""
    rng = np.random.default_rng(seed)
    regime = rng.choice(["trending", "ranging", "volatile"], size=n, p=[0.48, 0.48, 0.04])
    X = pd.DataFrame(rng.normal(size=(n, 4)), columns=["ctx_a", "ctx_b", "ctx_c", "ctx_d"])
    sign = np.where((regime == "ranging") & flip, -1.0, 1.0)
    y = (rng.random(n) < np.where(sign * X["ctx_a"].to_numpy() > 0, 0.8, 0.2)).astype(float)
    known = pd.Timestamp("2015-01-01") + pd.to_timedelta(np.sort(rng.uniform(0, 5 * 365, n)), unit="D")
    exits = known + pd.to_timedelta(rng.uniform(0.5, 6, n), unit="D")
    if label_from is not None:         # every label known from label_from on is flipped
        y = np.where(exits >= label_from, 1 - y, y)
    pool = pd.DataFrame({"pattern_id": [f"p{i}" for i in range(n)], "market": rng.choice(["AAA", "BBB"], n),
                         "known_at_utc": known, "exit_known_at_utc": exits, "regime_at_detection": regime,
                         "label": y, "validity_score": 0.7, "direction": 1, "entry": 100.0, "stop": 99.0,
                         "target": 102.0})
    targets = pd.DataFrame({"label": y, "r_multiple": np.where(y == 1, 2.0, -1.0), "stop_first": 1 - y})
    return pool, X, targets


def _scheme(pool, X, y, scheme: str = "pooled", root=None, **kw):
    groups = group_tasks(scheme, pool, X, y, **(WF | kw))
    results = [fit_group(task) for _, _, task in groups]
    return groups, results, collect_scheme(scheme, pool, y, groups, results, root=root)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    pool, X, y = _pool(flip=True)
    groups, results, sc = _scheme(pool, X, y, root=tmp_path_factory.mktemp("regimes") / "models")
    return pool, X, y, groups, results, sc


@pytest.fixture(scope="module")
def null():
    pool, X, y = _pool(flip=False)
    return pool, _scheme(pool, X, y["label"].to_numpy())[2]


def test_regime_models_beat_the_pooled_one_out_of_sample_where_the_effect_flips(planted):
    pool, *_, sc = planted
    rc = compare_scheme_regimes(sc, pool)
    assert rc.regimes == ["ranging", "trending"]
    assert rc.auc_regime > 0.75 and rc.auc_pooled < 0.6 and rc.ci[0] > 0.15, (rc.auc_regime, rc.auc_pooled, rc.ci)
    assert "regime models gained over the pooled model" in rc.sentence()
    table = rc.table.set_index("regime")
    assert table.loc["ranging", "own model"] == table.loc["trending", "own model"] == "yes"
    assert table.loc["all", "own model"] == "2 of 3" and table.loc["all", "versions"] == sc.fits
    for name in ("ranging", "trending"):            # each of their out-of-sample rows scored by its own model
        assert table.loc[name, "versions"] >= 3
        assert table.loc[name, "by own model"] == table.loc[name, "oos patterns"] > 500
        assert table.loc[name, "auc (used)"] > table.loc[name, "auc (pooled only)"] + 0.1


def test_where_regimes_do_not_matter_the_report_says_no_gain_beyond_noise(null):
    pool, sc = null
    rc = compare_scheme_regimes(sc, pool)
    assert rc.regimes == ["ranging", "trending"] and rc.auc_pooled > 0.75
    assert rc.ci[0] < 0 < rc.ci[1] and abs(rc.diff) < 0.02, (rc.diff, rc.ci)
    s = rc.sentence()
    assert s.endswith("no gain beyond noise.") and f"difference {rc.diff:+.3f}" in s
    assert f"{rc.ci[0]:+.3f} to {rc.ci[1]:+.3f}" in s
    # the run's note and report section for this scheme carry the same table and sentence
    comparisons, notes, tables = scheme_regime_sections({"pooled": sc}, pool)
    assert notes == [f"Scheme pooled: {s}"] and tables[0][1] == s
    pd.testing.assert_frame_equal(tables[0][2], rc.table)
    assert comparisons["pooled"].ci == rc.ci


def test_a_regime_under_min_regime_labels_is_scored_by_the_pooled_model(planted):
    pool, X, y, groups, results, sc = planted
    vol = (pool["regime_at_detection"] == "volatile").to_numpy() & ~np.isnan(sc.proba)
    assert vol.sum() > 50
    np.testing.assert_array_equal(sc.proba[vol], sc.pooled_proba[vol])
    assert not sc.scored_by_regime[vol].any() and "volatile" not in sc.regime_groups
    table = compare_scheme_regimes(sc, pool).table.set_index("regime")
    assert table.loc["volatile", "own model"] == "no (pooled)"
    assert table.loc["volatile", "versions"] == table.loc["volatile", "by own model"] == 0
    assert table.loc["volatile", "auc (used)"] == table.loc["volatile", "auc (pooled only)"]
    trend = (pool["regime_at_detection"] == "trending").to_numpy() & sc.scored_by_regime
    assert trend.sum() > 500 and not np.allclose(sc.proba[trend], sc.pooled_proba[trend])


def test_no_model_scores_a_pattern_before_its_training_labels_were_known(planted):
    pool, X, y, groups, results, sc = planted
    ((_, rows, task),), (res,) = groups, results
    known = pd.DatetimeIndex(pool["known_at_utc"])
    regime = pool["regime_at_detection"].to_numpy()
    ends = pd.DatetimeIndex([m.trained_on_end_ for m in res["models"]])
    fam = np.asarray(res["family"], dtype=object)
    for which in (res["which"], None):          # the scores used, then the pooled-only ones
        if which is None:
            from qml_plugin.ml.walkforward import route_models

            which = route_models(task["known_score"], res["models"], res["family"], None, embargo=EMBARGO)
        hit = which >= 0
        assert (ends[which[hit]] < known[rows][hit] - EMBARGO).all()
        assert np.isin(fam[which[hit]], ["pooled"]).sum() + (fam[which[hit]] == regime[rows][hit]).sum() == hit.sum()
    # each model's trained_on_end is its training labels' last exit: flip every label known from mid-2017 on
    # and no score of a pattern known by then (minus the embargo) may move, regime models included
    cut = pd.Timestamp("2017-07-01")
    p2, X2, y2 = _pool(flip=True, label_from=cut)
    _, _, again = _scheme(p2, X2, y2)
    early = np.asarray(known - EMBARGO <= cut)
    for a, b in ((sc.proba, again.proba), (sc.pooled_proba, again.pooled_proba)):
        np.testing.assert_array_equal(a[early], b[early])
        later = ~early & ~np.isnan(a)
        assert later.sum() > 500 and not np.allclose(a[later], b[later])


def test_regime_versions_are_saved_apart_and_the_prediction_log_names_the_one_that_scored(planted, tmp_path):
    pool, X, y, groups, results, sc = planted
    (res,) = results
    assert len(set(res["paths"])) == len(res["models"])
    for path, fam in zip(res["paths"], res["family"], strict=True):
        assert path.parent.name == ("all" if fam == "pooled" else f"regime_{fam}")
    with PatternRegistry(str(tmp_path / "reg.db")) as reg:
        batch = scheme_predictions("pooled", pool, groups, results, proba=sc.proba, expected_r=sc.expected_r,
                                   stop_risk=sc.stop_risk, rule={"min_score": 0.5, "ml_weight": 0.3,
                                                                 "confidence_threshold": 0.5}, modes=["filter"],
                                   reg=reg, run_id="t")
        names = {v["model_id"]: v["model_name"] for v in reg.list_model_versions()}
    f = batch.frame.set_index("pattern_id")
    regime = pool.set_index("pattern_id")["regime_at_detection"]
    named = f["model_id"].map(names)
    by_own = pd.Series(sc.scored_by_regime, index=pool["pattern_id"]).reindex(f.index)
    np.testing.assert_array_equal(named[by_own].to_numpy(),
                                  ("universe_pooled_all_regime_" + regime.reindex(f.index)[by_own]).to_numpy())
    assert (named[~by_own] == "universe_pooled_all").all() and by_own.sum() > 500 and (~by_own).sum() > 50
    stop = pd.Series(sc.stop_risk, index=pool["pattern_id"]).reindex(f.index)
    assert f["stop_risk"].notna().all() and np.allclose(f["stop_risk"], stop)      # was NaN before


def test_per_market_groups_report_in_how_many_a_regime_had_its_own_model():
    pool, X, y = _pool(flip=True, n=2000, seed=1)
    pool.loc[pool["market"] == "BBB", "regime_at_detection"] = np.where(
        np.arange((pool["market"] == "BBB").sum()) % 10 == 0, "ranging", "trending")      # BBB: ~10 % ranging
    _, results, sc = _scheme(pool, X, y["label"].to_numpy(), scheme="per_market", min_train_labels=150)
    assert sc.markets_trained == ["AAA", "BBB"] and sc.regime_groups["ranging"] == ["AAA"]
    table = compare_scheme_regimes(sc, pool, n_boot=50).table.set_index("regime")
    assert table.loc["ranging", "own model"] == "in 1 of 2 groups" and table.loc["trending", "own model"] == "yes"


def test_weighted_auc_is_scikit_learns_auc_with_unit_weights_and_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    y = (rng.random(300) < 0.4).astype(float)
    p = np.round(rng.random(300) + 0.3 * y, 1)                   # many ties
    assert weighted_auc(y, p, np.ones(300))[0] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    w = rng.integers(0, 3, 300)
    rep = np.repeat(np.arange(300), w)                          # a weight = that many copies of the row
    assert weighted_auc(y, p, w)[0] == pytest.approx(roc_auc_score(y[rep], p[rep]), abs=1e-12)


def test_bad_regime_settings_are_config_errors_naming_the_key():
    pool, X, y = _pool(flip=True, n=300)
    with pytest.raises(ConfigError, match=r"ml.min_regime_labels = 0 is not allowed; allowed: an integer >= 1"):
        group_tasks("pooled", pool, X, y, **(WF | {"min_regime_labels": 0}))
    with pytest.raises(ConfigError, match=r"ml.regime_models = true needs each pattern's regime_at_detection"):
        group_tasks("pooled", pool.drop(columns="regime_at_detection"), X, y, **WF)
    cfg = yaml.safe_load((REPO / "configs" / "universe.yaml").read_text())
    cfg["ml"] |= {"regime_models": True, "min_regime_labels": "many"}
    with pytest.raises(ConfigError, match=r"ml.min_regime_labels = 'many' is not allowed; allowed: an integer"):
        load_config(cfg)
    cfg["ml"]["min_regime_labels"] = 40
    assert load_config(cfg)["ml"]["regime_models"] is True


def test_the_universe_run_shows_regime_models_per_scheme_in_its_notes_and_report(tmp_path, monkeypatch):
    """The one end-to-end check (a small planted universe, ~2.5 s): no "not applied" note any more."""
    from qml_plugin.job import run_universe_job
    from qml_plugin.report import write_report
    from qml_plugin.synthetic import planted_universe

    universe, _ = planted_universe(4, 8000, strength=1.5, seed=3)
    cfg = load_config({"ml": {"enabled": True, "prediction_mode": "filter", "regime_models": True,
                              "min_regime_labels": 30},
                       "walk_forward": {"min_train_labels": 40, "retrain_every_months": 24, "random_seeds": 20}})
    monkeypatch.chdir(tmp_path)
    res = run_universe_job(cfg, universe=universe, scheduler="serial", progress=False, seeds=20,
                           model_params={"n_estimators": 20}, schemes=["pooled"])
    notes = res.report_content["notes"]
    assert not any("pooled models only" in n or "no regime models yet" in n for n in notes)
    rc = res.regimes["pooled"]
    assert rc.regimes and f"Scheme pooled: {rc.sentence()}" in notes
    (title, text, table), = res.report_content["tables"]
    assert title == "Regime models beside the pooled model: pooled scheme" and text == rc.sentence()
    assert set(rc.regimes) <= set(table.loc[table["own model"] == "yes", "regime"])
    saved = {p.parent.name for p in (res.run.path / "models" / "pooled" / "all").glob("**/v0*")}
    assert saved == {"all"} | {f"regime_{r}" for r in rc.regimes}
    content = {k: res.report_content[k] for k in ("title", "table", "equity", "notes", "tables")}  # no bokeh: ~8 s
    html = write_report(tmp_path / "r.html", **content).read_text()
    assert "<h2>Regime models beside the pooled model: pooled scheme</h2>" in html and "own model" in html
