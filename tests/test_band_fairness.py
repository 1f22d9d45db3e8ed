"""Sizing bands, like for like: the random filter and the canary / shadow rows under ``ml.size_bands``.

With bands the ML ``filter`` mode trades some patterns at half size; a random filter scored at full
size beside it would compare a half-invested model with a fully invested chance. The random filter
now keeps as many candidates as ``filter`` kept and hands them the filter's band sizes in random
order (:func:`qml_plugin.comparison.random_filter_band`, ``size_bands=``), so its total exposure is
the filter's. Planted data (cheap, no model): 60 patterns that never overlap (each fills one bar
after detection and exits five bars later), so every kept candidate is a trade and the exposure of
a seed can be checked exactly; the scores are planted so that half the filter's trades reach only
the half-size band.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from qml_plugin.comparison import mode_trades, random_filter_band
from qml_plugin.filter import size_band
from qml_plugin.job.market import _comparison
from qml_plugin.tradesim import FULL_SIZE, TABLE_COLUMNS, trade_metrics

BANDS = [{"min": 0.7, "size": 1.0}, {"min": 0.5, "size": 0.5}]     # >= 0.7 full, 0.5 .. 0.7 half, below: skip
SEEDS = 7


@pytest.fixture(scope="module")
def planted():
    """``(ohlcv, labeled, proba, start)``: 60 non-overlapping patterns, no model before pattern 10."""
    n = 60
    rng = np.random.default_rng(0)
    bars = 10 * n + 20
    idx = pd.date_range("2024-01-01", periods=bars, freq="h")
    close = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.004, bars)))
    df = pd.DataFrame({"Open": close, "High": close * 1.001, "Low": close * 0.999, "Close": close}, index=idx)
    k = np.arange(n)
    det = 10 * k + 2
    d = np.where(k % 2 == 0, 1, -1)
    entry = close[det]
    labeled = pd.DataFrame({
        "detection_bar": det, "p1_bar": det - 2, "detection_time": idx[det], "direction": d,
        "entry": entry, "stop": entry * (1 - 0.01 * d), "target": entry * (1 + 0.02 * d),
        "fill_bar": (det + 1).astype(float), "exit_bar": (det + 6).astype(float),
        "fill_price": close[det + 1], "exit_price": close[det + 6],
        "validity_score": rng.uniform(0.3, 1.0, n)})
    # two of every four the filter keeps (>= 0.5) reach only the half band
    proba = np.where(k < 10, np.nan, np.tile([0.8, 0.6, 0.3, 0.55, 0.75, 0.2], n // 6 + 1)[:n])
    return df, labeled, proba, idx[det[10]]


def band(df, labeled, proba, start, **kw):
    return random_filter_band(labeled, proba, ohlcv=df, start=start, end=df.index[-1], seeds=SEEDS, **kw)


def test_under_bands_each_random_seed_has_the_ml_filters_total_exposure(planted):
    df, labeled, proba, start = planted
    ml = mode_trades(labeled, proba, mode="filter", start=start, size_bands=BANDS)
    ml_sizes = size_band(proba, BANDS)[labeled.index.get_indexer(ml.index)]
    assert 0.4 < (ml_sizes == 0.5).mean() < 0.6 and set(ml_sizes) == {0.5, 1.0}     # the bands halve half the trades
    ml_exposure = FULL_SIZE * ml_sizes.sum()
    res, rate, _ = band(df, labeled, proba, start, size_bands=BANDS)
    full, full_rate, _ = band(df, labeled, proba, start)
    assert rate == full_rate and (res["trades"] == len(ml)).all()
    assert res["exposure"].to_numpy() == pytest.approx(np.full(SEEDS, ml_exposure), abs=1e-9)
    assert full["exposure"].to_numpy() == pytest.approx(np.full(SEEDS, FULL_SIZE * len(ml)))
    assert ml_exposure < 0.8 * FULL_SIZE * len(ml)
    # the same kept sets as without bands (same draws), scored at the shuffled band sizes: returns move
    assert res[["trades", "win_rate", "profit_factor"]].equals(full[["trades", "win_rate", "profit_factor"]])
    assert (res["return_pct"] != full["return_pct"]).all()
    assert np.abs(res["max_drawdown"]).mean() < np.abs(full["max_drawdown"]).mean()   # less invested, shallower


# What random_filter_band returned on the planted data before sizing bands reached it (commit 79b4da1).
BEFORE = {
    "trades": [23, 23, 23, 23, 23, 23, 23],
    "return_pct": [0.4512006342429764, 0.5191595187546305, 0.7284984158682395, -2.727370492431036,
                   -0.9912825624513344, -0.18958655296141824, 0.4083814699915589],
    "sharpe": [0.48840070352030307, 0.5564699107334462, 0.8337578381303591, -2.3293477861226166,
               -0.9447384158645737, -0.0816280652710542, 0.4470626670250808],
    "max_drawdown": [-4.46778137063758, -3.1004039477976253, -2.774906726595905, -6.895834287516922,
                     -3.3241372895537302, -3.6972850017507386, -3.4323084600139553],
    "profit_factor": [1.0645073289979652, 1.073123295810861, 1.0967682548059117, 0.7415598443132484,
                      0.9017005738941025, 0.9927112643768162, 1.0583424417118186],
}


def test_without_bands_the_random_filter_is_bit_for_bit_as_before(planted):
    df, labeled, proba, start = planted
    res, rate, curve = band(df, labeled, proba, start)
    assert rate == 0.6764705882352942
    assert {k: res[k].tolist() for k in BEFORE} == BEFORE                        # exact floats, not approx
    assert curve.to_numpy()[-1] == 1.0040838146999156


def test_the_market_jobs_table_scores_the_random_filter_at_band_sizes(planted):
    df, labeled, proba, start = planted
    strat = SimpleNamespace(min_score=0.5, max_wait=20)
    ml = mode_trades(labeled, proba, mode="filter", start=start, size_bands=BANDS)
    trades = {"filter": ml.reset_index(drop=True).assign(EntryTime=df.index[ml["fill_bar"].astype(int)])}
    sizes = {"filter": FULL_SIZE * size_band(proba, BANDS)[labeled.index.get_indexer(ml.index)]}
    rows = {}
    for key, cfg, sz in (("banded", {"confidence_threshold": 0.5, "size_bands": BANDS}, sizes),
                         ("plain", {"confidence_threshold": 0.5}, None)):
        table, _ = _comparison(df, labeled, proba, trades, start, strat, cfg, SEEDS, sz)
        rows[key] = table.set_index("mode")
    med = "random filter (pass rate 68%) median"
    res, _, _ = band(df, labeled, proba, start, size_bands=BANDS)
    assert rows["banded"].loc[med, TABLE_COLUMNS].to_dict() == res[TABLE_COLUMNS].median().to_dict()
    assert rows["banded"].loc[med, "return_pct"] != rows["plain"].loc[med, "return_pct"]
    assert rows["banded"].loc["filter", "return_pct"] == trade_metrics(
        ml, df, start=start, end=df.index[-1], size=sizes["filter"])["return_pct"]


def test_mode_trades_under_bands_skips_below_the_lowest_band(planted):
    df, labeled, proba, start = planted
    low = [{"min": 0.7, "size": 1.0}, {"min": 0.58, "size": 0.5}]          # 0.55 now falls below the lowest band
    plain = mode_trades(labeled, proba, mode="filter", start=start)
    banded = mode_trades(labeled, proba, mode="filter", start=start, size_bands=low)
    c = proba[labeled.index.get_indexer(plain.index)]
    assert list(banded.index) == list(plain.index[c >= 0.58]) and (c < 0.58).any()
    assert mode_trades(labeled, proba, mode=None, start=start, size_bands=low).equals(
        mode_trades(labeled, proba, mode=None, start=start))                # no mode: no model, no bands


def test_trade_metrics_keeps_each_rows_size_in_any_row_order(planted):
    df, labeled, proba, _ = planted
    t = labeled.iloc[:6]
    size = np.array([1.0, 0.5, 0.25, 1.0, 0.5, 0.25])
    flipped = trade_metrics(t.iloc[::-1], df, size=size[::-1])
    assert flipped == trade_metrics(t, df, size=size) != trade_metrics(t, df, size=1.0)


def test_bands_skipping_above_the_threshold_lower_the_random_filters_pass_rate(planted):
    df, labeled, proba, start = planted
    low = [{"min": 0.7, "size": 1.0}, {"min": 0.58, "size": 0.5}]          # the filter also skips 0.5 .. 0.58
    ml = mode_trades(labeled, proba, mode="filter", start=start, size_bands=low)
    res, rate, _ = band(df, labeled, proba, start, size_bands=low)
    _, full_rate, _ = band(df, labeled, proba, start)
    assert rate < full_rate and (res["trades"] == len(ml)).all()
    exposure = FULL_SIZE * size_band(proba, low)[labeled.index.get_indexer(ml.index)].sum()
    assert res["exposure"].to_numpy() == pytest.approx(np.full(SEEDS, exposure), abs=1e-9)


def test_each_seed_shuffles_the_filters_sizes_over_its_kept_candidates():
    from qml_plugin.comparison import _band_sizes

    kept = np.zeros(40, bool)
    kept[::2] = True
    ml_sizes = np.r_[np.full(10, 1.0), np.full(10, 0.5)]
    draws = np.array([_band_sizes(kept, ml_sizes, seed) for seed in range(5)])
    assert (draws[:, ~kept] == 1.0).all()                                    # not kept: the asked size
    assert all(sorted(d[kept]) == sorted(ml_sizes) for d in draws)           # the filter's multiset, each seed
    assert len({tuple(d) for d in draws}) == 5                               # who gets which size is chance


def test_canary_rows_apply_the_bands_to_their_own_scores(trained_model, eurusd_4h, tmp_path):
    """A canary version's row (``qml run``'s ``_shadow_rows``): skipped below the lowest band, sized by band."""
    from qml_plugin.features import FeatureExtractor
    from qml_plugin.job.market import _shadow_rows
    from qml_plugin.ml.lifecycle import shadow_scores
    from qml_plugin.ml.versions import record_version
    from qml_plugin.patterns import detect_patterns, label_patterns
    from qml_plugin.registry import PatternRegistry

    model, path = trained_model
    df = eurusd_4h["2013-06-01":"2014-12-31"]            # after the model's training data: it may score all
    labeled = label_patterns(df, detect_patterns(df))
    X = FeatureExtractor().extract(df, labeled).reset_index(drop=True)
    db = str(tmp_path / "r.db")
    with PatternRegistry(db) as reg:
        record_version(reg, model, path, model_name="sq", status="canary")
    strat = SimpleNamespace(min_score=0.5, max_wait=20)
    bands = [{"min": 0.43, "size": 1.0}, {"min": 0.40, "size": 0.5}]
    base = {"model_name": "sq", "prediction_mode": "filter", "ml_weight": 0.3, "confidence_threshold": 0.0}
    start, end = df.index[0], df.index[-1]
    rows = {k: _shadow_rows(db, ml, X, df, labeled, strat, start, end).iloc[0]
            for k, ml in (("plain", base), ("banded", {**base, "size_bands": bands}))}
    s = shadow_scores(db, "sq", X, detection_times=labeled["detection_time"]).iloc[:, 0].to_numpy()
    t = mode_trades(labeled, s, mode="filter", min_score=0.5, confidence_threshold=0.0, start=start,
                    size_bands=bands)
    size = FULL_SIZE * size_band(s, bands)[labeled.index.get_indexer(t.index)]
    assert set(size) == {0.5 * FULL_SIZE, FULL_SIZE}
    want = trade_metrics(t, df, start=start, end=end, size=size)
    assert rows["banded"][TABLE_COLUMNS].to_dict() == want
    assert rows["banded"]["mode"].endswith("not acting, sized by band)") and rows["plain"]["mode"].endswith("acting)")
    assert rows["plain"]["trades"] > rows["banded"]["trades"] == len(t)              # 0.40 skips some
