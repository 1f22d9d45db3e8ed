"""The universe run (SPEC §11, §12): pooling learns what one market cannot, on one UTC clock, anywhere."""
from __future__ import annotations

import dataclasses
import inspect
import os
import re

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, SHARED_DATA
from sklearn.metrics import roc_auc_score

from qml_plugin import load_ohlcv
from qml_plugin.config import load_config
from qml_plugin.job import run_universe_job
from qml_plugin.job.clock import known_at_utc
from qml_plugin.job.runs import default_strategy
from qml_plugin.job.unit import MIN_UNITS, MarketSpec, market_unit
from qml_plugin.ml.guard import admissible_model
from qml_plugin.ml.model import SignalQualityModel
from qml_plugin.synthetic import planted_universe

CFG = {"ml": {"enabled": True, "prediction_mode": "filter"},
       "walk_forward": {"min_train_labels": 40, "retrain_every_months": 6, "random_seeds": 200}}


FAST_MODEL = {"n_estimators": 60}


@pytest.fixture(scope="session")
def planted_run(tmp_path_factory):
    """24 random-walk markets of ~210 patterns (~80 labeled) each, one planted effect shared by all."""
    universe, planted = planted_universe(24, 10_000, strength=1.5, seed=0)
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("planted"))
    try:
        res = run_universe_job(load_config(CFG), universe=universe, scheduler="processes", workers=2,
                               progress=False, model_params=FAST_MODEL)
    finally:
        os.chdir(cwd)
    return res, pd.concat(planted.values())


def test_pooled_model_reaches_the_ceiling_and_beats_per_market(planted_run):
    res, planted = planted_run
    y = res.pool["label"].to_numpy(float)
    signal = planted.reindex(res.pool["pattern_id"]).to_numpy()
    pooled, per_market = res.schemes["pooled"].proba, res.schemes["per_market"].proba
    oos = ~np.isnan(pooled) & ~np.isnan(y)
    assert oos.sum() >= 1500, oos.sum()
    ceiling = roc_auc_score(y[oos], signal[oos])       # the Bayes-optimal ranking of the same patterns
    auc = roc_auc_score(y[oos], pooled[oos])
    assert auc >= ceiling - 0.03, (auc, ceiling)
    both = oos & ~np.isnan(per_market)
    assert both.sum() >= 200, both.sum()
    assert roc_auc_score(y[both], pooled[both]) >= roc_auc_score(y[both], per_market[both]) + 0.05
    assert res.schemes["pooled"].metrics["auc"] >= res.schemes["per_market"].metrics["auc"] + 0.05
    primary = res.table[res.table["primary"]].iloc[0]
    assert (primary["scheme"], primary["mode"], primary["level"]) == ("pooled", "filter", "pattern")
    assert primary["p_random"] < 0.01 and primary["mean_r"] > primary["random_p95"]
    assert "Verdict: edge" in res.sentence


def test_expected_value_rows_follow_the_expected_r_head_and_differ_from_the_baseline(planted_run):
    res, _ = planted_run
    for sc in res.schemes.values():                  # three heads, trained on R net of costs, for every scheme
        scored = ~np.isnan(sc.proba)
        for head in (sc.expected_r, sc.stop_risk, sc.raw_proba):
            assert head is not None and (np.isnan(head) == ~scored).all()
    r_net = res.pool["r_net"].to_numpy(float)
    er = res.schemes["pooled"].expected_r
    ok = ~np.isnan(er) & np.isfinite(r_net)
    assert r_net[ok & (er > 0)].mean() > r_net[ok & (er <= 0)].mean() + 0.3
    rows = res.table[(res.table["market"] == "all") & (res.table["level"] == "pattern")].set_index(["scheme", "mode"])
    base, ev = rows.loc[("pooled", "baseline")], rows.loc[("pooled", "expected_value")]
    assert ev["n"] < 0.8 * base["n"] and ev["mean_r"] > base["mean_r"] + 0.2, (ev, base)
    assert ev["p_random"] < 0.01
    assert rows.loc[("per_market", "expected_value"), "n"] < rows.loc[("per_market", "baseline"), "n"]


def test_the_pooled_ece_is_reported_beside_a_perfect_models_noise_and_the_uncalibrated_ece(planted_run):
    res, _ = planted_run
    e = res.schemes["pooled"].ece_report
    assert res.report_content["verdict_calibration"] == e
    assert e["n"] == res.schemes["pooled"].metrics["n"] >= 1500
    assert 0 < e["ece_sd"] < e["ece_calibrated_p95"] < 0.06
    assert e["ece"] < e["ece_uncalibrated"]
    assert any(n.startswith("Scheme pooled: ECE") and "perfectly calibrated" in n for n in res.report_content["notes"])


def test_the_run_writes_only_its_own_folder(planted_run):
    res, _ = planted_run
    assert {p.name for p in res.run.path.iterdir()} >= {"models", "verdict.csv", "markets.csv"}
    assert {p.name for p in (res.run.path / "models").iterdir()} == {"pooled", "per_market"}
    assert res.fits == sum(1 for _ in (res.run.path / "models").rglob("model.json"))


def test_serial_processes_and_dask_give_identical_tables(tmp_path, monkeypatch, dask_address):
    monkeypatch.chdir(tmp_path)
    universe, _ = planted_universe(3, 3000, seed=5)
    cfg = load_config({**CFG, "walk_forward": {"min_train_labels": 30, "retrain_every_months": 6,
                                               "random_seeds": 50}})
    tables = {}
    for sch in ("serial", "processes", "dask"):
        res = run_universe_job(cfg, universe=universe, scheduler=sch, workers=2, progress=False,
                               address=dask_address if sch == "dask" else None, model_params={"n_estimators": 30})
        tables[sch] = res.table
    assert len(tables["serial"]) > 10 and tables["serial"]["n"].sum() > 0
    pd.testing.assert_frame_equal(tables["processes"], tables["serial"])
    pd.testing.assert_frame_equal(tables["dask"], tables["serial"])


def test_a_work_unit_takes_no_registry_path_and_writes_nothing(tmp_path, monkeypatch, eurusd_4h):
    assert list(inspect.signature(market_unit).parameters) == ["spec"]
    fields = {f.name for f in dataclasses.fields(MarketSpec)}
    assert not {n for n in fields if any(w in n for w in ("db", "registry", "path"))}, fields
    monkeypatch.chdir(tmp_path)
    spec = MarketSpec("EURUSD_4h", eurusd_4h.loc["2010":"2012"], default_strategy(), {},
                      load_config({})["backtest"])
    res = market_unit(spec)
    assert len(res.patterns) > 50 and len(res.trades) > 5
    assert list(tmp_path.iterdir()) == []                # no registry, no model, no results folder


def _hour(df_index_tz: str, stamps, freq="1h"):
    idx = pd.DatetimeIndex(pd.to_datetime(stamps))
    df = pd.DataFrame({"Open": 1.0, "High": 1.0, "Low": 1.0, "Close": 1.0, "Volume": 0.0},
                      index=pd.date_range(idx[0], periods=3, freq=freq) if len(idx) == 1 else idx)
    df.attrs.update(tz=df_index_tz, timeframe=freq.lower())
    if df_index_tz != "UTC":
        df.attrs["session_close"] = "16:00"
    return df


def _trained_on_end(exit_known_utc) -> pd.Timestamp:
    """What a model trained on one label that exited at ``exit_known_utc`` stores for the guard."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"f": rng.normal(size=40)})
    t = pd.date_range(pd.Timestamp(exit_known_utc) - pd.Timedelta(days=40), periods=40, freq="D")
    exits = t.where(np.arange(40) < 39, pd.Timestamp(exit_known_utc))
    return SignalQualityModel(n_estimators=5).fit(X, np.arange(40) % 2, times=t, exit_times=exits).trained_on_end_


def test_guard_refuses_a_new_york_equity_label_that_exits_after_an_fx_detection():
    # AAPL hourly (New York): the label's exit bar starts 10:00 EST (15:00 UTC) and closes 11:00 EST = 16:00 UTC
    equity = _hour("America/New_York", ["2020-03-02 09:00", "2020-03-02 10:00", "2020-03-02 11:00"])
    # EURUSD hourly (UTC): a pattern detected on the 14:00 bar, known at 15:00 UTC, before the label was known
    fx = _hour("UTC", ["2020-03-02 13:00", "2020-03-02 14:00", "2020-03-02 15:00"])
    naive_end = _trained_on_end(equity.index[1] + pd.Timedelta("1h"))          # naive stamps: 11:00
    assert admissible_model([fx.index[1]], [naive_end])[0] == 0               # the leak a naive guard admits
    utc_end = _trained_on_end(known_at_utc(equity, [1])[0])
    assert utc_end == pd.Timestamp("2020-03-02 16:00")
    known = known_at_utc(fx, [1])
    assert known[0] == pd.Timestamp("2020-03-02 15:00")
    assert admissible_model(known, [utc_end])[0] == -1                        # refused on the UTC clock


def test_guard_refuses_a_daily_label_known_only_at_its_close_against_an_earlier_hourly_detection():
    daily = _hour("America/New_York", ["2020-07-01", "2020-07-02", "2020-07-06"], freq="1D")
    hourly = _hour("America/New_York", ["2020-07-02 12:00", "2020-07-02 13:00", "2020-07-02 14:00"])
    naive_end = _trained_on_end(daily.index[1])                               # the day's stamp: 00:00
    assert admissible_model([hourly.index[1]], [naive_end])[0] == 0           # admitted: a leak
    utc_end = _trained_on_end(known_at_utc(daily, [1])[0])
    assert utc_end == pd.Timestamp("2020-07-02 20:00")                        # 16:00 EDT
    known = known_at_utc(hourly, [1])                                        # 14:00 EDT = 18:00 UTC
    assert admissible_model(known, [utc_end])[0] == -1
    later = known_at_utc(hourly, [2])                                        # 15:00 EDT = 19:00 UTC
    assert admissible_model(later + pd.Timedelta("1h"), [utc_end])[0] == -1     # at the close: not yet
    assert admissible_model(later + pd.Timedelta("1h1min"), [utc_end])[0] == 0


def _vxx() -> pd.DataFrame:
    """VXX_1h: shipped, or from ../shared/data (a checkout or a worktree beside it)."""
    from qml_plugin.data import list_datasets

    if "VXX_1h" in list_datasets():
        return load_ohlcv("VXX_1h")
    for d in (SHARED_DATA, REPO.parent.parent / "shared" / "data"):
        if (d / "VXX_1h.csv.gz").is_file():
            df = load_ohlcv(d / "VXX_1h.csv.gz")
            df.attrs["tz"] = "America/New_York"
            return df
    pytest.skip("needs VXX_1h (shipped, or in ../shared/data)")


def test_vxx_near_1e5_trades_the_same_patterns_as_with_unlimited_cash():
    full = _vxx()
    df = full.loc[:"2011-12-31"]
    df.attrs.update(full.attrs)
    assert df["High"].max() > 5e4
    bt_cfg = load_config({})["backtest"]
    res = market_unit(MarketSpec("VXX_1h", df, default_strategy(), {}, bt_cfg))
    assert res.cash == pytest.approx(MIN_UNITS * df["High"].max())
    unlimited = market_unit(MarketSpec("VXX_1h", df, default_strategy(), {}, {**bt_cfg, "cash": 1e15}))
    assert len(res.trades) >= 10
    assert list(res.trades["Tag"]) == list(unlimited.trades["Tag"])
    assert np.allclose(res.trades["r_net"], unlimited.trades["r_net"], atol=0.02)
    poor = market_unit(MarketSpec("VXX_1h", df.loc[:"2009-12-31"], default_strategy(), {}, bt_cfg))
    assert poor.cash >= MIN_UNITS * df.loc[:"2009-12-31", "High"].max()


def test_costs_reach_the_backtest_and_the_net_r(eurusd_4h):
    df = eurusd_4h.loc["2010":"2013"]
    bt_cfg = load_config({})["backtest"]
    free = market_unit(MarketSpec("EURUSD_4h", df, default_strategy(), {}, bt_cfg))
    paid = market_unit(MarketSpec("EURUSD_4h", df, default_strategy(), {}, bt_cfg, commission=0.0002, spread=0.0001))
    p = paid.patterns.dropna(subset=["r_multiple"])
    cost_r = (2 * 0.0002 + 0.0001) * p["fill_price"] / (p["entry"] - p["stop"]).abs()
    assert np.allclose(p["r_multiple"] - p["r_net"], cost_r) and (cost_r > 0.01).all()
    assert np.allclose(free.patterns["r_net"].dropna(), free.patterns["r_multiple"].dropna())
    assert paid.trades["r_net"].mean() < free.trades["r_net"].mean()
    common = paid.trades.set_index("Tag")["r_net"]
    by_pattern = paid.patterns.set_index("pattern_id")["r_net"].reindex(common.index)
    both = by_pattern.notna()
    assert both.sum() > 10 and np.allclose(common[both], by_pattern[both], atol=0.05)


def test_trade_rows_score_daily_equity_and_the_seeds_let_holm_pass(planted_run):
    from qml_plugin.comparison import holm_seeds

    res, _ = planted_run
    trade = res.table[(res.table["level"] == "trade") & (res.table["market"] == "all") & (res.table["n"] > 0)]
    assert len(trade) >= 8
    assert np.isfinite(trade[["total_return", "sharpe", "max_drawdown"]].to_numpy(float)).all()
    assert (trade["max_drawdown"] <= 0).all()
    # 24 markets: the largest Holm family is a question's 24 per-market rows, so 10 * 24 / 0.05 draws per row
    assert res.table.attrs["seeds"] == res.table.attrs["trade_seeds"] == holm_seeds(24) == 4799
    best = res.table[res.table["primary"]].iloc[0]
    assert best["p_random"] == pytest.approx(1 / 4800)       # the planted effect beats every random filter


def test_every_out_of_sample_score_is_logged_once_per_mode_and_learn_status_prints_it(planted_run, capsys):
    from qml_plugin.cli.main import main as qml
    from qml_plugin.registry import PatternRegistry

    res, _ = planted_run
    db = res.run.path.parent.parent / "experiments.db"          # results/experiments.db beside results/runs/
    with PatternRegistry(db) as reg:
        log = reg.get_predictions(run_id=res.run.run_id)
        perf = reg.prediction_performance()
    modes = ("filter", "score_enhancement", "replace", "expected_value")
    for name, sc in res.schemes.items():
        rows = log[log["model_id"].str.startswith(f"universe_{name}_")]
        scored = res.pool["pattern_id"][~np.isnan(sc.proba)]
        assert rows.groupby("mode").size().to_dict() == dict.fromkeys(modes, len(scored)), name
        one = rows[rows["mode"] == "filter"].set_index("pattern_id").loc[scored]
        np.testing.assert_allclose(one["ml_confidence"].to_numpy(), sc.proba[~np.isnan(sc.proba)])
        assert one["contributions"].map(len).eq(5).all() and one["acting"].all()
    # the decisions are the modes' own: filter takes a technical, placeable pattern only at the threshold
    f = log[(log["mode"] == "filter") & log["model_id"].str.startswith("universe_pooled_")].set_index("pattern_id")
    pool = res.pool.set_index("pattern_id").loc[f.index]
    assert (f["decision"] == "take").sum() > 0 and not (f["decision"][f["ml_confidence"] < 0.5] == "take").any()
    assert not (f["decision"][pool["validity_score"] < 0.5] == "take").any()
    # figures per version, with resolved outcomes joined from the registry
    assert set(perf["model_id"]) == set(log["model_id"]) and (perf["resolved"] > 0).all()
    pooled = perf[perf["model_name"] == "universe_pooled_all"]
    assert (pooled["auc"].dropna() > 0.6).mean() > 0.5                  # the planted effect, version by version
    assert any("Prediction log:" in n for n in res.report_content["notes"])
    # the report's mean |contribution| (beside gain) finds the planted effect: volume at the detection bar
    contrib, gain = res.report_content["contributions"], res.report_content["importances"]
    assert contrib.index[0].startswith("volu_") and len(contrib) == len(gain) and (contrib >= 0).all()
    assert qml(["learn", "--status", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "other models' prediction log" in out and re.search(r"universe_pooled_all-v\d+ \(archived\): \d+ pred", out)
