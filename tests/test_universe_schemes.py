"""``leave_market_out`` (SPEC §11): a market's patterns are scored only by models trained on the other markets.

A market is a symbol: AAPL_1h and AAPL_1d are one market, so both datasets leave together. "No model that
scores a market's pattern saw any of its rows" is checked by what would change if one had: flipping every
label of the market (both datasets) must leave its scores bit for bit as they were, while flipping another
market's labels moves them (so the check can fail).
"""
from __future__ import annotations

import inspect
import os

import numpy as np
import pandas as pd
import pytest

from qml_plugin.config import load_config
from qml_plugin.job import run_universe_job
from qml_plugin.job.schemes import group_tasks, score_scheme
from qml_plugin.synthetic import planted_universe

FAST = {"n_estimators": 20}
# the keyword for the minimum number of labels (``min_train``, renamed ``min_train_labels`` by the three-heads work)
_MIN = next(k for k in ("min_train_labels", "min_train") if k in inspect.signature(group_tasks).parameters)
WF = {"every_months": 6, _MIN: 40, "embargo": pd.Timedelta("1D"), "model_params": FAST}


def _pool(seed: int = 0, n: int = 160) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Patterns of four datasets in three markets (AAA has an hourly and a daily dataset), one shared effect."""
    rng = np.random.default_rng(seed)
    rows = []
    for dataset, market in (("AAA_1h", "AAA"), ("AAA_1d", "AAA"), ("BBB_1h", "BBB"), ("CCC_1h", "CCC")):
        known = pd.Timestamp("2018-01-01") + pd.to_timedelta(np.sort(rng.uniform(0, 4 * 365, n)), unit="D")
        rows.append(pd.DataFrame({"dataset": dataset, "market": market, "known_at_utc": known,
                                  "exit_known_at_utc": known + pd.Timedelta("3D")}))
    pool = pd.concat(rows, ignore_index=True)
    y = (rng.random(len(pool)) < 0.4).astype(float)
    X = pd.DataFrame({"signal": y + rng.normal(0, 1, len(pool)), "noise": rng.normal(0, 1, len(pool))})
    return pool, X, y


def test_leave_market_out_trains_each_market_on_the_others_only():
    pool, X, y = _pool()
    tasks = group_tasks("leave_market_out", pool, X, y, **WF)
    assert [name for name, _, _ in tasks] == ["AAA", "BBB", "CCC"]
    for name, rows, task in tasks:
        assert set(pool["market"].iloc[rows]) == {name}
        assert len(rows) == (pool["market"] == name).sum()          # AAA: both datasets are scored by its group
        assert len(task["X"]) == (pool["market"] != name).sum()     # ... and none of them is trained on
    base = score_scheme("leave_market_out", pool, X, y, **WF)
    aaa = (pool["market"] == "AAA").to_numpy()
    assert base.fits >= 3 and np.isfinite(base.proba[aaa]).sum() > 100
    flipped = np.where(aaa, 1 - y, y)                               # every AAA label, hourly and daily
    again = score_scheme("leave_market_out", pool, X, flipped, **WF)
    np.testing.assert_array_equal(again.proba[aaa], base.proba[aaa])
    assert not np.allclose(np.nan_to_num(again.proba[~aaa]), np.nan_to_num(base.proba[~aaa]))   # others saw AAA
    bbb = (pool["market"] == "BBB").to_numpy()
    other = score_scheme("leave_market_out", pool, X, np.where(bbb, 1 - y, y), **WF)
    assert not np.allclose(np.nan_to_num(other.proba[aaa]), np.nan_to_num(base.proba[aaa]))    # AAA learns from BBB


@pytest.fixture(scope="module")
def lmo_run(tmp_path_factory):
    universe, _ = planted_universe(3, 3000, strength=1.5, seed=3)
    hourly = universe["SYN00_4h"]                                   # a second dataset of market SYN00
    daily = hourly.resample("1D").agg({"Open": "first", "High": "max", "Low": "min", "Close": "last",
                                       "Volume": "sum"}).dropna()
    daily.attrs.update(hourly.attrs, timeframe="1d")
    universe["SYN00_1d"] = daily
    cfg = load_config({"ml": {"enabled": True, "prediction_mode": "filter"},
                       "walk_forward": {"min_train_labels": 30, "retrain_every_months": 6, "random_seeds": 50}})
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("lmo"))
    try:
        return run_universe_job(cfg, universe=universe, scheduler="serial", progress=False, model_params=FAST,
                                schemes=["pooled", "leave_market_out"])
    finally:
        os.chdir(cwd)


def test_the_verdict_table_has_the_leave_market_out_rows(lmo_run):
    res = lmo_run
    lmo = res.table[res.table["scheme"] == "leave_market_out"]
    assert set(lmo["level"]) == {"pattern", "trade"}
    rows = lmo[lmo["level"] == "pattern"]
    assert set(rows["mode"]) == {"baseline", "filter", "score_enhancement", "replace", "expected_value"}
    assert sorted(set(rows["market"])) == ["SYN00", "SYN01", "SYN02", "all"]      # SYN00: one market, two datasets
    assert rows.loc[rows["market"] == "all", "n"].gt(0).any()
    assert res.schemes["leave_market_out"].markets_trained == ["SYN00", "SYN01", "SYN02"]
    assert {p.name for p in (res.run.path / "models" / "leave_market_out").iterdir()} == {"SYN00", "SYN01", "SYN02"}
    scored = ~np.isnan(res.schemes["leave_market_out"].proba)
    assert set(res.pool.loc[scored, "dataset"]) >= {"SYN00_4h", "SYN00_1d"}
