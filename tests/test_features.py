"""Feature extractor: the feature set, causality, scale-freedom, geometry, regime and schema hash."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_ohlcv, random_walk, zigzag
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qml_plugin import ConfigError, DataError, load_ohlcv
from qml_plugin.features import FAMILIES, REGIME_RULE, REGIMES, Family, FeatureExtractor, feature_docs, regime_labels
from qml_plugin.features.indicators import Bars
from qml_plugin.patterns import QMLParams, atr14, detect_patterns

REPO = Path(__file__).resolve().parent.parent
FX = FeatureExtractor()
BULL = [(0, 100), (19, 100), (24, 95), (28, 99), (33, 92), (45, 104), (50, 103)]


@pytest.fixture(scope="module")
def eurusd_20k():
    return load_ohlcv("EURUSD_1h").iloc[:20_000]


@pytest.fixture(scope="module")
def eurusd_patterns(eurusd_20k):
    return detect_patterns(eurusd_20k)


def synthetic_patterns(df: pd.DataFrame, n: int = 12, seed: int = 0) -> pd.DataFrame:
    """Pattern rows with SPEC §2 columns and plausible geometry (not necessarily real QMLs)."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(60, len(df), n))
    p3 = t - rng.integers(0, 10, n)
    p2 = p3 - rng.integers(1, 10, n)
    p1 = p2 - rng.integers(1, 10, n)
    d = rng.choice([1, -1], n)
    low, high = df["Low"].to_numpy(), df["High"].to_numpy()
    p1_price = np.where(d > 0, low[p1], high[p1])
    p2_price = np.where(d > 0, high[p2], low[p2])
    p3_price = np.where(d > 0, low[p3], high[p3])
    entry, stop = p1_price, p3_price - d * 0.001 * p3_price
    target = entry + d * 2 * np.abs(entry - stop)
    return pd.DataFrame({
        "pattern_id": [f"id{i}" for i in range(n)], "pattern_type": np.where(d > 0, "bullish_qml", "bearish_qml"),
        "direction": d, "detection_bar": t, "detection_time": df.index[t],
        "p1_bar": p1, "p1_price": p1_price, "p2_bar": p2, "p2_price": p2_price, "p3_bar": p3, "p3_price": p3_price,
        "entry": entry, "stop": stop, "target": target, "rr": 2.0, "validity_score": rng.random(n),
    }, index=[f"row{i}" for i in range(n)])


@st.composite
def ohlcv_frames(draw, min_bars=300, max_bars=600):
    """Random OHLCV with the awkward cases: flat bars, zero volume, time gaps, any price level."""
    n = draw(st.integers(min_bars, max_bars))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    level = draw(st.sampled_from([1.1, 100.0, 8000.0]))
    vol = draw(st.sampled_from([0.0005, 0.01, 0.05]))
    close = level * np.exp(np.cumsum(rng.normal(0, vol, n)))
    open_ = np.r_[level, close[:-1]] * np.exp(rng.normal(0, vol / 4, n))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, vol, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, vol, n)))
    flat = rng.random(n) < draw(st.sampled_from([0.0, 0.05, 0.3]))
    flat[0] = False
    prev = np.r_[close[0], close[:-1]]
    open_, high, low, close = (np.where(flat, prev, x) for x in (open_, high, low, close))
    volume = (np.zeros(n) if draw(st.booleans())
              else rng.integers(0, 1000, n) * (rng.random(n) > 0.1).astype(float))
    step = np.where(rng.random(n) < 0.02, 49, 1)
    index = pd.Timestamp("2021-01-01") + pd.to_timedelta(np.cumsum(step), unit="h")
    df = pd.DataFrame({"Open": open_, "High": high, "Low": low, "Close": close, "Volume": volume}, index=index)
    return df, draw(st.integers(0, n - 1))


# -- the feature set -----------------------------------------------------------------------------

def test_feature_set_has_seven_prefixed_families_of_at_least_eight_and_170_in_all():
    names = FX.feature_names
    assert len(names) >= 170 and len(set(names)) == len(names)
    counts = {f: sum(n.startswith(f + "_") for n in names) for f in FAMILIES}
    assert set(counts) == {"ctx", "geo", "temp", "vol", "mom", "volu", "regime"}
    assert min(counts.values()) >= 8, counts
    assert sum(counts.values()) == len(names)


def test_feature_names_are_market_columns_then_pattern_columns_in_a_stable_order():
    assert FX.feature_names == FeatureExtractor().feature_names
    market = FX.market_feature_names
    assert FX.feature_names[: len(market)] == market
    assert all(n.startswith(("geo_", "temp_pattern_")) for n in FX.feature_names[len(market):])


def test_every_feature_has_a_one_line_doc_and_docs_file_is_generated_from_code():
    infos = FX.describe()
    assert all(f.doc and "\n" not in f.doc for f in infos)
    text = feature_docs()
    assert all(f"`{f.name}`" in text for f in infos)
    assert (REPO / "docs" / "FEATURES.md").read_text() == text, \
        "docs/FEATURES.md is stale: run python -m qml_plugin.features --markdown > docs/FEATURES.md"


def test_feature_list_command_prints_one_line_per_feature(capsys):
    from qml_plugin.features.docs import main

    assert main(["--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == FX.feature_names


# -- compute ------------------------------------------------------------------------------------

def test_compute_returns_float_features_for_every_bar_and_leaves_input_alone():
    df = random_walk(400, seed=1)
    before = df.copy()
    X = FX.compute(df)
    assert X.index.equals(df.index) and list(X.columns) == FX.market_feature_names
    assert (X.dtypes == np.float64).all()
    pd.testing.assert_frame_equal(df, before)


@pytest.mark.parametrize("n", [0, 1, 5, 40])
def test_compute_on_fewer_bars_than_the_windows_gives_nan_not_an_error(n):
    X = FX.compute(random_walk(60, seed=2).iloc[:n])
    assert X.shape == (n, len(FX.market_feature_names))
    assert not np.isinf(X.to_numpy()).any()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ohlcv_frames())
def test_features_known_at_c_do_not_change_when_the_future_arrives(frame):
    df, cut = frame
    full = FX.compute(df).to_numpy()
    part = FX.compute(df.iloc[: cut + 1]).to_numpy()
    np.testing.assert_allclose(part, full[: cut + 1], rtol=1e-9, atol=0, equal_nan=True)
    assert not np.isinf(full).any()


@settings(max_examples=15, deadline=None)
@given(ohlcv_frames(min_bars=300, max_bars=400))
def test_features_do_not_depend_on_price_or_volume_units(frame):
    df, _ = frame
    scaled = df.copy()
    scaled[["Open", "High", "Low", "Close"]] *= 1024.0     # powers of two scale exactly
    scaled["Volume"] /= 64.0
    np.testing.assert_allclose(FX.compute(scaled).to_numpy(), FX.compute(df).to_numpy(),
                               rtol=1e-9, atol=1e-9, equal_nan=True)


values_ = st.lists(st.one_of(st.sampled_from([0.0, 1.0, -1.0, 2.5, np.nan, np.inf]),
                              st.floats(-3, 3, allow_nan=False)), max_size=120)


@settings(max_examples=150, deadline=None)
@given(values_, st.integers(1, 40), st.data())
def test_rolling_rank_equals_pandas_rolling_rank_and_is_causal(values, w, data):
    from qml_plugin.features.indicators import rolling_rank

    x = np.array(values, dtype=np.float64)
    mp = data.draw(st.integers(0, w))
    got = rolling_rank(x, w, mp)
    want = pd.Series(x).rolling(w, min_periods=mp).rank(pct=True).to_numpy()
    np.testing.assert_array_equal(got, want)                    # ties, NaN and inf as pandas has them
    c = data.draw(st.integers(0, max(len(x) - 1, 0)))
    np.testing.assert_array_equal(rolling_rank(x[:c + 1], w, mp), got[:c + 1])


def test_rolling_rank_refuses_impossible_windows_like_pandas():
    from qml_plugin.features.indicators import rolling_rank

    with pytest.raises(ValueError, match=r"w >= 1 and 0 <= min_periods <= w, got w=5, min_periods=6"):
        rolling_rank(np.arange(10.0), 5, 6)
    with pytest.raises(ValueError, match="got w=0"):
        rolling_rank(np.arange(10.0), 0, 0)


def test_atr14_is_the_detectors_atr14_and_ctx_atr_pct_is_it_in_percent():
    df = random_walk(300, seed=3)
    np.testing.assert_array_equal(Bars(df).atr(14), atr14(df).to_numpy())
    np.testing.assert_allclose(FX.compute(df)["ctx_atr_pct_14"], 100 * atr14(df) / df["Close"], rtol=1e-12)


def test_straight_rising_line_has_rsi_100_efficiency_1_and_a_perfect_trend_fit():
    close = 100 + 0.5 * np.arange(300.0)
    X = FX.compute(make_ohlcv(close + 0.25, close - 0.25, close))
    last = X.iloc[-1]
    assert last["ctx_rsi_14"] == 100 and last["regime_efficiency_20"] == 1
    assert last["mom_r2_50"] == pytest.approx(1.0) and last["ctx_aroon_up_25"] == 100
    atr = Bars(make_ohlcv(close + 0.25, close - 0.25, close)).atr(14)[-1]
    assert last["mom_slope_50_atr"] == pytest.approx(0.5 / atr)
    assert last["ctx_up_streak"] == 299 and last["regime_ma_alignment"] == 1


def test_flat_market_gives_neutral_values_not_nan_or_inf():
    close = np.full(300, 1.25)
    X = FX.compute(make_ohlcv(close, close, close)).iloc[260:]
    assert X["ctx_rsi_14"].eq(50).all() and X["ctx_stoch_k_14"].eq(50).all()
    assert X["ctx_bb_pctb_20"].eq(0.5).all() and X["vol_realized_20"].eq(0).all()
    assert X.notna().all().all() and X["ctx_dist_sma_50_atr"].eq(0).all()


def test_volume_features_are_finite_when_volume_is_all_zero():
    df = random_walk(600, seed=4)
    df["Volume"] = 0.0
    volu = FX.compute(df).filter(like="volu_").iloc[100:]
    assert np.isfinite(volu.to_numpy()).all()
    assert volu["volu_rel_20"].eq(1).all() and volu["volu_zero_frac_50"].eq(1).all()


@pytest.mark.parametrize("name", ["EURUSD_1h", "BTCUSD_1h", "SPY_1h", "SPY_1d", "GBPUSD_1d"])
def test_shipped_data_gives_finite_features_with_few_nan_after_250_bars(name):
    df = load_ohlcv(name).iloc[:6000]
    values = FX.compute(df).to_numpy()
    assert not np.isinf(values).any()
    nan_share = np.isnan(values[250:]).mean(axis=0)
    assert nan_share.max() <= 0.01, dict(zip(FX.market_feature_names, nan_share.round(3), strict=True))


# -- regime --------------------------------------------------------------------------------------

def test_regime_label_follows_the_documented_rule_and_feeds_the_regime_features():
    df = random_walk(1500, seed=5)
    X = FX.compute(df)
    labels = regime_labels(df)
    assert list(labels.cat.categories) == list(REGIMES)
    volatile = X["regime_atr_pctile_250"] >= REGIME_RULE["vol_pctile"]
    trending = ~volatile & (X["ctx_adx_14"] >= REGIME_RULE["adx"]) & (X["regime_efficiency_20"] >= 0.3)
    expected = np.where(volatile, "volatile", np.where(trending, "trending", "ranging"))
    known = labels.notna().to_numpy()
    assert known[250:].all() and (labels.to_numpy()[known] == expected[known]).all()
    for name in REGIMES:
        assert (X[f"regime_{name}"][known] == (labels[known] == name)).all()
    assert labels.value_counts().min() > 0


def test_regime_label_of_bar_t_does_not_change_when_the_future_arrives():
    df = random_walk(800, seed=6)
    full = regime_labels(df)
    for cut in (120, 400, 799):
        pd.testing.assert_series_equal(regime_labels(df.iloc[: cut + 1]), full.iloc[: cut + 1])


# -- extract ---------------------------------------------------------------------------------------

def test_extract_is_the_market_row_at_detection_plus_geometry_indexed_by_pattern_id():
    df = random_walk(500, seed=7)
    pats = synthetic_patterns(df)
    X = FX.extract(df, pats)
    assert X.index.name == "pattern_id" and X.index.tolist() == pats["pattern_id"].tolist()
    assert list(X.columns) == FX.feature_names
    assert all(pd.api.types.is_float_dtype(dt) for dt in X.dtypes)
    market = FX.compute(df).iloc[pats["detection_bar"]]
    np.testing.assert_array_equal(X[FX.market_feature_names].to_numpy(), market.to_numpy())


def test_regimes_are_the_regime_label_at_each_detection_bar_on_the_extract_index():
    df = random_walk(500, seed=7)
    pats = synthetic_patterns(df)
    got = FX.regimes(df, pats)
    expected = regime_labels(df).iloc[pats["detection_bar"]].astype(object).where(lambda s: s.notna(), None)
    assert got.name == "regime_at_detection" and got.index.equals(FX.extract(df, pats).index)
    assert got.tolist() == expected.tolist() and set(got.dropna()) <= {"trending", "ranging", "volatile"}
    assert got.equals(FX.regimes(df, pats, market=FX.compute(df)))        # read off a precomputed matrix


def test_extract_without_pattern_id_or_rows_still_has_every_feature_column():
    df = random_walk(300, seed=8)
    pats = synthetic_patterns(df).drop(columns="pattern_id")
    X = FX.extract(df, pats)
    assert list(X.columns) == FX.feature_names and X.index.equals(pats.index)
    empty = FX.extract(df, pats.iloc[:0])
    assert len(empty) == 0 and list(empty.columns) == FX.feature_names
    assert len(FX.regimes(df, pats.iloc[:0])) == 0


def test_geometry_of_a_hand_built_bullish_qml_is_measured_in_atr_and_bars():
    df = zigzag(BULL)
    pats = detect_patterns(df, QMLParams(swing_n=2))
    assert len(pats) == 1
    g = FX.extract(df, pats).iloc[0]
    atr = atr14(df).iloc[41]
    assert g["geo_direction"] == 1 and g["geo_head_depth_atr"] == pytest.approx((94.5 - 91.5) / atr)
    assert (g["geo_left_leg_bars"], g["geo_right_leg_bars"], g["geo_break_bars"]) == (4, 5, 8)
    assert g["temp_pattern_bars"] == 41 - 24 and g["temp_pattern_confirm_bars"] == 8
    assert g["geo_right_leg_atr"] == pytest.approx((99.5 - 91.5) / atr)
    assert g["geo_break_strength_atr"] == pytest.approx((df["Close"].iloc[41] - 99.5) / atr)
    assert g["geo_rr"] == pytest.approx(pats["rr"].iloc[0])


def test_bearish_mirror_of_a_pattern_has_the_same_geometry():
    bull = zigzag(BULL)
    bear = zigzag([(b, 200 - p) for b, p in BULL])
    params = QMLParams(swing_n=2)
    gb = FX.extract(bull, detect_patterns(bull, params)).filter(regex="^(geo|temp_pattern)_").iloc[0]
    gs = FX.extract(bear, detect_patterns(bear, params)).filter(regex="^(geo|temp_pattern)_").iloc[0]
    same = gb.drop(["geo_direction", "geo_head_depth_pct", "geo_risk_pct"])
    np.testing.assert_allclose(gs[same.index].to_numpy(float), same.to_numpy(float), rtol=1e-9)
    assert gs["geo_direction"] == -1


def test_extract_on_detected_eurusd_patterns_is_causal(eurusd_20k, eurusd_patterns):
    full = FX.extract(eurusd_20k, eurusd_patterns)
    assert len(full) > 100 and FX.regimes(eurusd_20k, eurusd_patterns).notna().all()
    feats = full[FX.feature_names].to_numpy()
    assert not np.isinf(feats).any() and np.isnan(feats[np.arange(len(full)) >= 10]).mean() < 0.01
    for cut in (3000, 11_111, 19_999):
        known = eurusd_patterns[eurusd_patterns["detection_bar"] <= cut]
        part = FX.extract(eurusd_20k.iloc[: cut + 1], detect_patterns(eurusd_20k.iloc[: cut + 1]))
        pd.testing.assert_frame_equal(part, full.iloc[known.index], check_exact=False, rtol=1e-9)


def test_extract_names_the_missing_pattern_columns_and_impossible_bars():
    df = random_walk(300, seed=9)
    pats = synthetic_patterns(df)
    with pytest.raises(DataError, match=r"missing columns \['p2_price'\]"):
        FX.extract(df, pats.drop(columns="p2_price"))
    bad = pats.assign(detection_bar=pats["detection_bar"] + 1000)
    with pytest.raises(DataError, match="pattern id0: .*detection_bar < 300"):
        FX.extract(df, bad)
    with pytest.raises(DataError, match="missing columns"):
        FX.compute(df.drop(columns="Volume"))


# -- configuration and schema hash -------------------------------------------------------------------

def test_config_keeps_families_and_excludes_features():
    fx = FeatureExtractor({"families": ["ctx", "geo"], "exclude": ["ctx_rsi_7"]})
    assert {n.split("_")[0] for n in fx.feature_names} == {"ctx", "geo"}
    assert "ctx_rsi_7" not in fx.feature_names
    X = fx.compute(random_walk(300, seed=10))
    assert list(X.columns) == fx.market_feature_names
    np.testing.assert_array_equal(X["ctx_rsi_14"], FX.compute(random_walk(300, seed=10))["ctx_rsi_14"])


@pytest.mark.parametrize("config, message", [
    ({"famlies": ["ctx"]}, "unknown FeatureExtractor config key 'famlies'; allowed: \\['families', 'exclude'\\]"),
    ({"families": ["ctx", "price"]}, "unknown family 'price'; allowed"),
    ({"exclude": ["ctx_rsi_99"]}, "unknown feature 'ctx_rsi_99'"),
    ({"exclude": "ctx_rsi_7"}, "features.exclude must be a list of names"),
    (["ctx"], "config must be a mapping"),
])
def test_bad_config_is_a_config_error_naming_the_key_and_what_is_allowed(config, message):
    with pytest.raises(ConfigError, match=message):
        FeatureExtractor(config).compute(random_walk(30, seed=12))


def test_schema_hash_is_the_same_in_another_process():
    code = "from qml_plugin.features import FeatureExtractor as F; print(F().schema_hash)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == FX.schema_hash == FeatureExtractor().schema_hash
    assert len(FX.schema_hash) == 64 and int(FX.schema_hash, 16) >= 0


def test_schema_hash_changes_when_a_feature_is_removed_or_added():
    removed = FeatureExtractor({"exclude": ["vol_gap_atr"]})
    assert removed.schema_hash != FX.schema_hash

    def spread(b, add):
        add("ctx_hl_spread_pct", "High - Low as % of Close", lambda: 100 * (b.high - b.low) / b.close)

    class WithSpread(FeatureExtractor):
        def market_families(self):
            return (*super().market_families(), Family("ctx", spread))

    added = WithSpread()
    assert added.feature_names[-1] == "temp_pattern_days" and "ctx_hl_spread_pct" in added.feature_names
    assert added.schema_hash not in (FX.schema_hash, removed.schema_hash)
    assert "ctx_hl_spread_pct" in added.compute(random_walk(50, seed=11)).columns
