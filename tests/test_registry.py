"""The pattern registry (SPEC §5): upserts, label ranking, migrations, training data, similarity, errors.

One suite for both backends: every test taking ``reg`` or ``registry_db`` (``conftest.py``) runs on
SQLite and on a real PostgreSQL server (``QML_TEST_POSTGRES_URL``; skipped, saying so, without it).
Tests of SQLite's own file format take ``sqlite_reg``. Concurrency and crash safety live in
``test_registry_concurrency.py``.
"""
from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qml_plugin.errors import InsufficientDataError, RegistryError
from qml_plugin.registry import CURRENT_SCHEMA_VERSION, PatternRegistry, migrate
from qml_plugin.registry.connection import connect, is_unique_violation

FEATURES = ["ctx_rsi_14", "geo_head_depth_atr", "vol_atr_pct", "mom_ret_10"]


def patterns(n, start=0, symbol="EURUSD", seed=0, **cols):
    """``n`` patterns shaped like detect_patterns' output, ids p<start>..p<start+n-1>."""
    rng = np.random.default_rng(seed)
    direction = np.where(np.arange(n) % 2 == 0, 1, -1)
    df = pd.DataFrame({
        "pattern_id": [f"p{i}" for i in range(start, start + n)],
        "symbol": symbol, "timeframe": "4h",
        "pattern_type": np.where(direction > 0, "bullish_qml", "bearish_qml"),
        "direction": direction, "detection_bar": np.arange(start, start + n),
        "detection_time": pd.date_range("2020-01-01", periods=n, freq="4h") + pd.Timedelta(hours=4 * start),
        "entry": 1.1 + rng.normal(0, 0.01, n), "stop": 1.09, "target": 1.13, "rr": 2.0,
        "validity_score": rng.random(n),
    })
    for k, v in cols.items():
        df[k] = v
    return df


def features(n, seed=0, names=FEATURES):
    return pd.DataFrame(np.random.default_rng(seed).normal(size=(n, len(names))), columns=names)


def outcomes(ids, label, source="triple_barrier", r=None):
    label = np.broadcast_to(np.asarray(label, float), (len(ids),))
    r = np.where(label == 1, 1.5, -1.0) if r is None else r
    return pd.DataFrame({"pattern_id": ids, "label": label, "r_multiple": r, "pnl_pct": np.asarray(r) * 0.4,
                         "exit_time": pd.Timestamp("2021-01-01"), "label_source": source})


@pytest.fixture
def sqlite_reg(tmp_path):
    with PatternRegistry(tmp_path / "reg.db") as r:
        yield r


def raw(db):
    """The registry's own connection type on ``db``: SQLite-spelled SQL with ``?`` on both backends."""
    return connect(db)[0]


def row(reg, pid):
    return reg.get_pattern(pid)


# -- opening -------------------------------------------------------------------------------------
def test_opening_uses_wal_busy_timeout_and_normal_sync(sqlite_reg):
    conn = sqlite_reg._db()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 10_000
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1          # NORMAL


def test_db_path_in_a_missing_folder_is_created(tmp_path):
    path = tmp_path / "not" / "yet" / "there.db"
    with PatternRegistry(path) as r:
        r.register_patterns(patterns(2), features(2))
    assert path.exists()


def test_sqlite_urls_are_accepted_relative_and_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with PatternRegistry("sqlite:///rel/r.db") as r:
        assert r.get_statistics()["total"] == 0
    assert (tmp_path / "rel" / "r.db").exists()
    with PatternRegistry(f"sqlite:///{tmp_path}/abs.db") as r:
        r.register_patterns(patterns(1), None)
    assert (tmp_path / "abs.db").exists()


def test_other_database_urls_are_refused_naming_the_ones_that_work():
    with pytest.raises(RegistryError, match=r"'mysql'.*sqlite:///path/to/file.db or postgresql://user@host"):
        PatternRegistry("mysql://user:pw@host/db")


def test_an_unreachable_postgresql_server_is_one_clear_error_without_the_password():
    shown = r"cannot connect to the registry 'postgresql://qml:\*\*\*@127.0.0.1:9/x'"
    with pytest.raises(RegistryError, match=shown) as e:
        PatternRegistry("postgresql://qml:hunter2@127.0.0.1:9/x")
    assert "hunter2" not in str(e.value)


def test_corrupted_file_is_reported_as_not_a_valid_sqlite_database(tmp_path):
    bad = tmp_path / "junk.db"
    bad.write_bytes(np.random.default_rng(0).bytes(8192))
    with pytest.raises(RegistryError, match=r"junk\.db.*not a valid SQLite database"):
        PatternRegistry(bad)


def test_a_closed_registry_says_so(tmp_path):
    r = PatternRegistry(tmp_path / "c.db")
    r.close()
    r.close()                                                  # idempotent
    with pytest.raises(RegistryError, match="closed"):
        r.get_statistics()


# -- registering -----------------------------------------------------------------------------------
def test_registering_the_same_pattern_twice_gives_one_row_keeping_created_at(reg):
    reg.register_patterns(patterns(3), features(3), run_id="run-1")
    first = row(reg, "p1")
    reg.register_patterns(patterns(3, seed=5), features(3, seed=5), run_id="run-2")
    second = row(reg, "p1")
    assert reg.get_statistics()["total"] == 3
    assert second["created_at"] == first["created_at"]
    assert second["updated_at"] >= first["updated_at"]
    assert second["run_id"] == "run-2"
    assert second["validity_score"] != first["validity_score"]          # newest description wins


def test_register_pattern_takes_a_dict_or_series_and_returns_the_id(reg):
    p = patterns(1).iloc[0]
    pid = reg.register_pattern(p, features(1).iloc[0], ml_confidence=0.7)
    assert pid == "p0"
    pid2 = reg.register_pattern(dict(patterns(1, start=1).iloc[0]), dict(zip(FEATURES, [1.0, 2, 3, 4])))
    assert reg.get_features(pid2) == dict(zip(FEATURES, [1.0, 2.0, 3.0, 4.0]))
    assert row(reg, "p0")["ml_confidence"] == 0.7


def test_features_round_trip_exactly_at_float32_with_nan_and_inf_kept(reg):
    f = features(3)
    f.iloc[1, 2] = np.nan
    f.iloc[1, 1] = 1e300                                   # beyond float32: inf, as inside XGBoost
    reg.register_patterns(patterns(3), f)
    got = reg.get_features("p1")
    assert list(got) == FEATURES
    assert np.isnan(got[FEATURES[2]]) and got[FEATURES[1]] == np.inf
    as_f32 = f.iloc[1, [0, 3]].to_numpy(np.float32).astype(np.float64).tolist()
    assert [got[FEATURES[0]], got[FEATURES[3]]] == as_f32
    assert as_f32 != f.iloc[1, [0, 3]].tolist()            # the test can tell float32 from float64


def test_float64_rows_from_before_version_4_and_float32_rows_decode_together():
    from qml_plugin.registry._frames import pack_rows, unpack_features
    m = np.array([[0.1, -2.5], [np.nan, 3.0], [7.25, 1e-3]])
    blobs = [m[0].astype("<f8").tobytes(), bytes(pack_rows(m[1:2])[0]), m[2].astype("<f8").tobytes()]
    names, got = unpack_features([1, 1, 1], blobs, {1: ["a", "b"]})
    assert names == ["a", "b"] and got.dtype == np.float64
    np.testing.assert_array_equal(got[[0, 2]], m[[0, 2]])              # float64 rows stay exact
    np.testing.assert_array_equal(got[1], m[1].astype(np.float32))
    with pytest.raises(RegistryError, match=r"1 rows have 12 bytes where 2 features take 8 \(float32\) or 16"):
        unpack_features([1, 1], [blobs[0], b"x" * 12], {1: ["a", "b"]})


def test_a_model_trained_on_stored_features_equals_one_trained_on_computed_features(reg):
    # XGBoost casts its input to float32, so float32 storage loses nothing a model can see.
    from qml_plugin.ml.model import SignalQualityModel
    n = 400
    rng = np.random.default_rng(5)
    f = pd.DataFrame(rng.normal(size=(n, 4)) * [1e-3, 1.0, 250.0, 1e5], columns=FEATURES)
    y = (f[FEATURES[1]] + rng.normal(0, 1, n) > 0).astype(int)
    reg.register_patterns(patterns(n), f)
    reg.record_outcomes(outcomes([f"p{i}" for i in range(n)], y.to_numpy()))
    X_stored, y_stored = reg.get_training_data(min_labels=n)
    assert not np.array_equal(X_stored.to_numpy(), f.to_numpy())       # the values did change ...
    direct = SignalQualityModel(n_estimators=30).fit(f.to_numpy(), y.to_numpy())
    stored = SignalQualityModel(n_estimators=30).fit(X_stored.to_numpy(), y_stored)
    assert direct.booster_.save_raw("json") == stored.booster_.save_raw("json")   # ... the model did not
    np.testing.assert_array_equal(direct.predict_proba(f.to_numpy()), stored.predict_proba(X_stored.to_numpy()))


def test_features_match_patterns_by_pattern_id_when_the_index_differs(reg):
    p = patterns(3)
    f = features(3).assign(pattern_id=["p2", "p0", "p1"]).iloc[::-1].reset_index(drop=True)
    reg.register_patterns(p, f)
    assert reg.get_features("p0")[FEATURES[0]] == np.float32(f.loc[f.pattern_id == "p0", FEATURES[0]].item())


def test_symbol_may_come_from_keyword_or_attrs(reg):
    p = patterns(2).drop(columns="symbol")
    reg.register_patterns(p, None, symbol="GBPUSD")
    p2 = patterns(1, start=5).drop(columns="symbol")
    p2.attrs["symbol"] = "USDJPY"
    reg.register_patterns(p2, None)
    assert row(reg, "p0")["symbol"] == "GBPUSD" and row(reg, "p5")["symbol"] == "USDJPY"


@pytest.mark.parametrize("symbol", [None, np.nan, "  "])
def test_missing_symbol_is_refused_with_a_clear_message(reg, symbol):
    p = patterns(2)
    p["symbol"] = symbol
    with pytest.raises(RegistryError, match=r"symbol is required.*'p0'.*symbol="):
        reg.register_patterns(p, features(2))
    assert reg.get_statistics()["total"] == 0


def test_missing_pattern_id_column_is_refused(reg):
    with pytest.raises(RegistryError, match="pattern_id"):
        reg.register_patterns(patterns(2).drop(columns="pattern_id"), None)


def test_values_are_parameters_never_sql(reg):
    evil = "x'); DROP TABLE ml_pattern_registry; --"
    reg.register_patterns(patterns(1, pattern_id=evil, symbol="A'B"), None)
    assert row(reg, evil)["symbol"] == "A'B"


def test_tz_aware_times_are_stored_in_utc(reg):
    p = patterns(1)
    p["detection_time"] = pd.Timestamp("2020-01-01 09:00", tz="Europe/Berlin")
    reg.register_patterns(p, None)
    assert row(reg, "p0")["detection_time"] == "2020-01-01T08:00:00"


def test_times_with_and_without_fractions_of_a_second_read_back_in_order(reg):
    p = patterns(2)
    p["detection_time"] = [pd.Timestamp("2020-01-01 00:00:00"), pd.Timestamp("2020-01-01 00:00:00.5")]
    reg.register_patterns(p.iloc[:1], features(1))
    reg.register_patterns(p.iloc[1:], features(1).set_axis(p.index[1:]))
    reg.record_outcomes(outcomes(["p0", "p1"], 1))
    X, _ = reg.get_training_data(min_labels=2)
    assert X.index.get_level_values("detection_time").tolist() == p["detection_time"].tolist()


# -- label ranking ---------------------------------------------------------------------------------
def test_trade_outcome_overwrites_a_triple_barrier_label(reg):
    reg.register_patterns(patterns(1), features(1))
    reg.record_outcomes(outcomes(["p0"], 1))
    reg.record_outcomes(outcomes(["p0"], 0, source="trade", r=[-1.0]))
    r = row(reg, "p0")
    assert (r["label"], r["label_source"], r["r_multiple"]) == (0, "trade", -1.0)


def test_triple_barrier_never_overwrites_a_trade_label_but_fills_empty_columns(reg):
    reg.register_patterns(patterns(1), features(1))
    trade = outcomes(["p0"], 1, source="trade", r=[2.0]).drop(columns="exit_time")
    reg.record_outcomes(trade)
    reg.record_outcomes(outcomes(["p0"], 0, r=[-1.0]))
    r = row(reg, "p0")
    assert (r["label"], r["label_source"], r["r_multiple"]) == (1, "trade", 2.0)
    assert r["exit_time"] == "2021-01-01T00:00:00"                          # gap filled


def test_user_label_overwrites_any_automatic_label(reg):
    reg.register_patterns(patterns(2), features(2))
    reg.record_outcomes(outcomes(["p0"], 1, source="trade"))
    reg.record_outcomes(outcomes(["p1"], 1))
    assert reg.label_pattern("p0", "loss", outcome=-0.8) is True
    reg.label_pattern("p1", "LOSS")
    for pid in ("p0", "p1"):
        r = row(reg, pid)
        assert (r["label"], r["label_source"], r["user_label"]) == (0, "user", "loss")
    assert row(reg, "p0")["trade_outcome"] == -0.8


@pytest.mark.parametrize("source", ["triple_barrier", "trade"])
def test_automatic_labels_never_overwrite_a_user_label(reg, source):
    reg.register_patterns(patterns(1), features(1))
    reg.label_pattern("p0", "win")
    reg.record_outcomes(outcomes(["p0"], 0, source=source))
    reg.register_patterns(patterns(1).assign(label=0.0, r_multiple=-1.0), features(1), label_source=source)
    r = row(reg, "p0")
    assert (r["label"], r["label_source"], r["user_label"]) == (1, "user", "win")


def test_an_open_outcome_never_erases_a_known_one(reg):
    reg.register_patterns(patterns(1), features(1))
    reg.record_outcomes(outcomes(["p0"], 1))
    reg.record_outcomes(outcomes(["p0"], np.nan, source="trade", r=[np.nan]))
    assert (row(reg, "p0")["label"], row(reg, "p0")["label_source"]) == (1, "triple_barrier")


def test_reregistering_keeps_existing_labels(reg):
    reg.register_patterns(patterns(2), features(2))
    reg.label_pattern("p0", "ignore")
    reg.record_outcomes(outcomes(["p1"], 1))
    reg.register_patterns(patterns(2), features(2, seed=3))
    assert row(reg, "p0")["user_label"] == "ignore"
    assert (row(reg, "p1")["label"], row(reg, "p1")["label_source"]) == (1, "triple_barrier")


# -- bad labels and ids ----------------------------------------------------------------------------
def test_unknown_label_names_the_value_and_the_allowed_ones(reg):
    reg.register_patterns(patterns(1), None)
    with pytest.raises(RegistryError, match=r"unknown label 'maybe'.*'win', 'loss', 'ignore'"):
        reg.label_pattern("p0", "maybe")


def test_unknown_pattern_id_is_named(reg):
    with pytest.raises(RegistryError, match=r"unknown pattern_id 'nope'"):
        reg.label_pattern("nope", "win")


def test_outcomes_for_unknown_patterns_are_refused_and_nothing_is_written(reg):
    reg.register_patterns(patterns(2), features(2))
    with pytest.raises(RegistryError, match=r"unknown pattern_id \['ghost'\]"):
        reg.record_outcomes(outcomes(["p0", "ghost", "p1"], 1))
    assert reg.get_statistics()["labeled"] == 0


def test_outcomes_for_unknown_patterns_can_be_skipped_on_request(reg):
    reg.register_patterns(patterns(2), features(2))
    assert reg.record_outcomes(outcomes(["p0", "ghost"], 1), skip_unknown=True) == 1
    assert row(reg, "p0")["label"] == 1


def test_a_trade_outcome_without_r_multiple_keeps_the_triple_barrier_one(reg):
    reg.register_patterns(patterns(1), features(1))
    reg.record_outcomes(outcomes(["p0"], 1, r=[1.8]))
    reg.record_outcomes(outcomes(["p0"], 1, source="trade", r=[np.nan]).assign(pnl_pct=0.9))
    r = row(reg, "p0")
    assert (r["label_source"], r["r_multiple"], r["trade_outcome"]) == ("trade", 1.8, 0.9)


def test_outcome_label_must_be_one_zero_or_nan(reg):
    reg.register_patterns(patterns(1), None)
    with pytest.raises(RegistryError, match=r"'label' has values \[2\]"):
        reg.record_outcomes(outcomes(["p0"], 2))


@pytest.mark.parametrize("bad, shown", [(1.5, r"\[1\.5\]"), (np.inf, r"\[inf\]"), (1e20, r"\[1e\+20\]")])
def test_integer_columns_refuse_fractions_infinity_and_overflow_by_name(reg, bad, shown):
    p = patterns(2).astype({"detection_bar": float})
    p.loc[1, "detection_bar"] = bad
    with pytest.raises(RegistryError, match=rf"column 'detection_bar' must hold whole numbers \(or NaN\), got {shown}"):
        reg.register_patterns(p, None)
    assert reg.get_statistics()["total"] == 0                       # nothing written


def test_integer_columns_keep_large_ints_exact_and_nan_as_null(reg):
    p = patterns(3)
    p["detection_bar"] = np.array([2**53 + 1, 7, 0], dtype=np.int64)
    reg.register_patterns(p, None)
    assert row(reg, "p0")["detection_bar"] == 2**53 + 1
    q = patterns(1, start=5).astype({"detection_bar": float})
    q.loc[0, "detection_bar"] = np.nan
    reg.register_patterns(q, None)
    assert row(reg, "p5")["detection_bar"] is None


def test_a_user_source_in_an_outcome_frame_is_refused(reg):
    reg.register_patterns(patterns(1), None)
    with pytest.raises(RegistryError, match="label_pattern"):
        reg.record_outcomes(outcomes(["p0"], 1, source="user"))


# -- training data ---------------------------------------------------------------------------------
def test_training_data_is_time_ordered_with_ids_and_times_in_the_index(reg):
    p = patterns(6).iloc[::-1]                                  # registered newest first
    reg.register_patterns(p, features(6).iloc[::-1].set_axis(p.index))
    reg.record_outcomes(outcomes([f"p{i}" for i in range(6)], [1, 0, 1, 0, 1, 0]))
    reg.label_pattern("p2", "ignore")
    reg.label_pattern("p3", "win")
    X, y = reg.get_training_data(min_labels=5)
    assert X.index.names == ["pattern_id", "detection_time", "exit_time"]
    assert X.index.get_level_values("pattern_id").tolist() == ["p0", "p1", "p3", "p4", "p5"]
    assert X.index.get_level_values("detection_time").is_monotonic_increasing
    assert X.index.get_level_values("exit_time")[0] == pd.Timestamp("2021-01-01")
    assert list(X.columns) == FEATURES and X.dtypes.eq(np.float64).all()
    assert y.tolist() == [1, 0, 1, 1, 0] and y.dtype == np.int64
    assert X.loc["p4"].to_numpy().ravel().tolist() == features(6).iloc[4].astype(np.float32).tolist()


def test_training_window_is_start_inclusive_end_exclusive(reg):
    reg.register_patterns(patterns(6), features(6))
    reg.record_outcomes(outcomes([f"p{i}" for i in range(6)], 1))
    X, _ = reg.get_training_data(min_labels=1, start="2020-01-01 04:00", end=pd.Timestamp("2020-01-01 16:00"))
    assert X.index.get_level_values("pattern_id").tolist() == ["p1", "p2", "p3"]


def test_patterns_with_different_feature_sets_share_one_frame(reg):
    reg.register_patterns(patterns(2), features(2))
    other = ["vol_atr_pct", "regime_adx"]
    reg.register_patterns(patterns(1, start=2), features(1, names=other))
    reg.record_outcomes(outcomes(["p0", "p1", "p2"], 1))
    X, _ = reg.get_training_data(min_labels=3)
    assert list(X.columns) == FEATURES + ["regime_adx"]
    assert np.isnan(X.loc["p2", "ctx_rsi_14"].item()) and np.isnan(X.loc["p0", "regime_adx"].item())


def test_too_few_labels_names_how_many_exist_and_how_many_are_needed(reg):
    reg.register_patterns(patterns(12), features(12))
    reg.record_outcomes(outcomes([f"p{i}" for i in range(12)], 1))
    with pytest.raises(InsufficientDataError, match=r"at least 30 labeled patterns but the registry has 12"):
        reg.get_training_data()


# -- similarity ------------------------------------------------------------------------------------
def brute_force(reg, query, n):
    X, y = reg.get_training_data(min_labels=0)
    mu, sd = X.mean(), X.std(ddof=0)
    cols = [c for c in X.columns if c in query and sd[c] > 0]
    z = ((X[cols] - mu[cols]) / sd[cols]).fillna(0.0)
    q = ((pd.Series(query)[cols] - mu[cols]) / sd[cols]).fillna(0.0)
    d = np.sqrt(((z - q) ** 2).sum(axis=1))
    d.index = X.index.get_level_values("pattern_id")
    return d.sort_values(kind="stable").iloc[:n]


def test_similar_patterns_are_nearest_standardized_neighbours_with_outcomes(reg):
    n = 300
    reg.register_patterns(patterns(n), features(n))
    reg.record_outcomes(outcomes([f"p{i}" for i in range(n)], np.arange(n) % 2))
    query = features(n).iloc[17].to_dict()
    got = reg.find_similar_patterns(query, n=5)
    assert got[0]["pattern_id"] == "p17" and got[0]["distance"] < 1e-5
    expected = brute_force(reg, query, 5)
    assert [g["pattern_id"] for g in got] == expected.index.tolist()
    np.testing.assert_allclose([g["distance"] for g in got], expected.to_numpy(), rtol=1e-5, atol=1e-5)
    assert {"pattern_id", "distance", "label", "outcome", "r_multiple", "trade_outcome", "symbol",
            "detection_time"} <= set(got[0])
    assert got[0]["outcome"] == "win" and got[0]["label"] == 1
    assert reg.find_similar_patterns(query, n=1, exclude="p17")[0]["pattern_id"] != "p17"


def test_similarity_cache_follows_new_relabeled_and_ignored_rows_from_another_writer(reg, registry_db):
    reg.register_patterns(patterns(100), features(100))
    reg.record_outcomes(outcomes([f"p{i}" for i in range(100)], 1))
    query = features(1, seed=99).iloc[0].to_dict()
    reg.find_similar_patterns(query)                               # warm the cache
    with PatternRegistry(registry_db) as other:                      # another connection writes
        other.register_patterns(patterns(1, start=100), pd.DataFrame([query]))
        other.record_outcomes(outcomes(["p100"], 0))
        other.label_pattern("p5", "ignore")
        other.label_pattern("p6", "loss")
    got = reg.find_similar_patterns(query, n=100)
    assert got[0]["pattern_id"] == "p100" and got[0]["outcome"] == "loss"
    assert "p5" not in {g["pattern_id"] for g in got}
    assert next(g for g in got if g["pattern_id"] == "p6")["label_source"] == "user"
    expected = brute_force(reg, query, 100)
    assert [g["pattern_id"] for g in got] == expected.index.tolist()


def test_similarity_without_labeled_rows_is_empty_and_unknown_features_are_an_error(reg):
    assert reg.find_similar_patterns({"ctx_rsi_14": 1.0}) == []
    reg.register_patterns(patterns(3), features(3))
    reg.record_outcomes(outcomes(["p0", "p1", "p2"], 1))
    with pytest.raises(RegistryError, match="none of the 1 query features"):
        reg.find_similar_patterns({"not_a_feature": 1.0})


# -- statistics and the labeling queue --------------------------------------------------------------
def test_statistics_count_by_symbol_type_label_source_and_regime(reg):
    reg.register_patterns(patterns(4, regime_at_detection="trend"), features(4))
    reg.register_patterns(patterns(2, start=4, symbol="GBPUSD"), features(2))
    reg.record_outcomes(outcomes(["p0", "p1"], [1, 0]))
    reg.label_pattern("p2", "ignore")
    s = reg.get_statistics()
    assert (s["total"], s["labeled"], s["unlabeled"], s["ignored"], s["wins"], s["losses"]) == (6, 2, 3, 1, 1, 1)
    assert s["by_symbol"] == {"EURUSD": 4, "GBPUSD": 2}
    assert s["by_pattern_type"] == {"bearish_qml": 3, "bullish_qml": 3}
    assert s["by_label"] == {"unlabeled": 3, "ignore": 1, "loss": 1, "win": 1}
    assert s["by_label_source"] == {"none": 3, "triple_barrier": 2, "user": 1}
    assert s["by_regime"] == {"trend": 4, "none": 2}
    assert s["win_rate"] == 0.5


def test_recent_features_are_the_newest_after_a_time_oldest_first_in_one_frame(reg):
    reg.register_patterns(patterns(6), features(6))
    reg.register_patterns(patterns(1, start=6), None)                  # no features: not included
    got = reg.get_recent_features(after="2020-01-01 04:00", limit=3)
    assert got.index.get_level_values("pattern_id").tolist() == ["p3", "p4", "p5"]
    assert got.index.get_level_values("detection_time")[0] == pd.Timestamp("2020-01-01 12:00")
    assert got.loc["p4"].iloc[0].to_dict() == reg.get_features("p4")
    assert len(reg.get_recent_features(after="2020-01-01 16:00")) == 1 and reg.get_recent_features().shape == (6, 4)


def test_unlabeled_patterns_come_newest_first_up_to_the_limit(reg):
    reg.register_patterns(patterns(5), features(5))
    reg.record_outcomes(outcomes(["p4"], 1))
    reg.label_pattern("p3", "ignore")
    got = reg.get_unlabeled_patterns(limit=2, with_features=True)
    assert [g["pattern_id"] for g in got] == ["p2", "p1"]
    assert list(got[0]["features"]) == FEATURES and "features" not in reg.get_unlabeled_patterns(1)[0]


# -- model tables ----------------------------------------------------------------------------------
def test_promoting_a_model_archives_the_previous_production_version(reg):
    v1 = reg.add_model_version("sq", metrics={"auc": 0.6}, features_used=FEATURES, trained_on_end="2019-12-31")
    v2 = reg.add_model_version("sq", metrics={"auc": 0.63})
    reg.set_model_status(v1, "production")
    reg.set_model_status(v2, "production")
    assert [m["status"] for m in reg.list_model_versions("sq")] == ["archived", "production"]
    assert reg.production_model("sq")["model_id"] == v2 == "sq-v2"
    assert reg.get_model_version(v1)["features_used"] == FEATURES
    with pytest.raises(Exception) as e:                          # the schema itself forbids two
        reg._db().execute("UPDATE ml_model_versions SET status = 'production' WHERE model_id = ?", (v1,))
    assert is_unique_violation(e.value)


def test_model_status_and_eval_decision_are_validated(reg):
    with pytest.raises(RegistryError, match=r"unknown model status 'live'.*'staging'"):
        reg.add_model_version("sq", status="live")
    with pytest.raises(RegistryError, match=r"unknown model_id 'sq-v9'"):
        reg.set_model_status("sq-v9", "archived")
    with pytest.raises(RegistryError, match=r"unknown evaluation decision 'maybe'.*'promote'"):
        reg.add_eval("sq", "maybe")
    reg.add_eval("sq", "reject", candidate_version=2, baseline_version=1, metrics={"auc": [0.6, 0.61]})
    assert reg.eval_history("sq")[0]["metrics"] == {"auc": [0.6, 0.61]}


# -- migrations ------------------------------------------------------------------------------------
def test_migrate_applies_each_version_once(registry_db):
    db = registry_db
    assert migrate(db, target=1) == [1]
    assert migrate(db) == list(range(2, CURRENT_SCHEMA_VERSION + 1))
    assert migrate(db) == []
    conn = raw(db)
    versions = conn.execute("SELECT version, description FROM schema_migrations ORDER BY version").fetchall()
    assert [v for v, _ in versions] == list(range(1, CURRENT_SCHEMA_VERSION + 1)) and all(d for _, d in versions)


def test_migration_refuses_downgrades_and_newer_files(registry_db):
    db = registry_db
    migrate(db)
    with pytest.raises(RegistryError, match="downgrades are not supported"):
        migrate(db, target=1)
    conn = raw(db)
    conn.execute("INSERT INTO schema_migrations VALUES (99, 'x', 'from the future')")
    conn.close()
    with pytest.raises(RegistryError, match="schema version 99, newer"):
        PatternRegistry(db)


def test_migration_from_version_1_to_current_keeps_every_row(registry_db):
    db = registry_db
    migrate(db, target=1)
    blob = np.array([0.5, -1.0, 2.0, 3.0]).astype("<f8").tobytes()
    conn = raw(db)
    if True:
        set_id = conn.execute("INSERT INTO feature_sets (names_sha256, names_json, n_features, created_at) "
                              "VALUES ('k', ?, 4, 't') RETURNING feature_set_id",
                              (pd.Series(FEATURES).to_json(orient="values"),)).fetchone()[0]
        rows = [(f"v1-{i}", "EURUSD", "4h", f"2019-01-{i + 1:02d}T00:00:00",
                 "bullish_qml" if i % 2 else "bearish_qml", set_id, blob, "schema", 0.5, None,
                 ["win", "loss", None, "ignore", None][i % 5], 1.0, [1.0, -1.0, 2.0, 0.5, -0.5][i % 5],
                 [None, None, "triple_barrier", "user", "trade"][i % 5], 0, 0, None, "old-run", "c", "u")
                for i in range(25)]
        conn.executemany(f"INSERT INTO ml_pattern_registry VALUES ({', '.join('?' * 20)})", rows)
        conn.execute("INSERT INTO ml_model_versions (model_id, model_name, version, status) "
                     "VALUES ('sq-v1', 'sq', 1, 'production')")
        conn.execute("INSERT INTO ml_eval_history (evaluated_at, model_name, decision) VALUES ('t', 'sq', 'promote')")
    conn.close()
    with PatternRegistry(db) as r:
        assert r.get_statistics()["total"] == 25
        for i in (0, 1, 2, 3, 4, 24):
            got = r.get_pattern(f"v1-{i}")
            assert (got["symbol"], got["run_id"], got["created_at"]) == ("EURUSD", "old-run", "c")
        assert r.get_pattern("v1-0")["label"] == 1                  # user win
        assert r.get_pattern("v1-1")["label"] == 0                  # user loss
        assert r.get_pattern("v1-2")["label"] == 1                  # triple barrier, r > 0
        assert r.get_pattern("v1-3")["label"] is None               # ignored
        assert r.get_pattern("v1-4")["label"] == 0                  # trade, r < 0
        assert (r.get_pattern("v1-1")["direction"], r.get_pattern("v1-0")["direction"]) == (1, -1)
        assert r.get_features("v1-7") == dict(zip(FEATURES, [0.5, -1.0, 2.0, 3.0]))
        X, y = r.get_training_data(min_labels=1)
        assert len(X) == 20
        assert r.production_model("sq")["model_id"] == "sq-v1" and len(r.eval_history()) == 1
        r.register_patterns(patterns(1), features(1))                   # and it keeps working


def test_migration_4_rebuilds_the_pattern_table_keeping_every_value(tmp_path):
    db = tmp_path / "v3.db"
    migrate(db, target=3)
    with sqlite3.connect(db) as conn:                      # a version 3 file written by the v3 code path
        conn.execute("INSERT INTO feature_sets VALUES (1, 'k', '[\"a\", \"b\"]', 2, 't')")
        conn.executemany(
            "INSERT INTO ml_pattern_registry (pattern_id, symbol, timeframe, detection_time, pattern_type, "
            "feature_set_id, features, validity_score, user_label, label, label_source, r_multiple, direction, "
            "entry, exit_time, rev, created_at, updated_at) VALUES (?, 'BTC', '1h', ?, 'bullish_qml', 1, ?, 0.5, "
            "?, ?, ?, ?, 1, 1.25, ?, ?, 'c', 'u')",
            [(f"q{i}", f"2020-01-{i + 1:02d}T00:00:00", np.array([i, -i], "<f8").tobytes(),
              [None, "win", "ignore"][i % 3], [None, 1, None][i % 3], [None, "user", "user"][i % 3],
              float(i) - 2, f"2020-02-{i + 1:02d}T00:00:00", i) for i in range(9)])
        before = {r[0]: r for r in conn.execute("SELECT * FROM ml_pattern_registry")}
        names_before = [d[0] for d in conn.execute("SELECT * FROM ml_pattern_registry").description]
    assert migrate(db, target=4) == [4]
    with sqlite3.connect(db) as conn:
        cur = conn.execute(f"SELECT {', '.join(names_before)} FROM ml_pattern_registry")
        after = {r[0]: r for r in cur}
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' "
                                               "AND tbl_name = 'ml_pattern_registry'")}
    assert after == before and len(after) == 9
    assert {"ix_patterns_detection_time", "ix_patterns_rev"} <= indexes
    with PatternRegistry(db) as r:
        assert r.get_features("q4") == {"a": 4.0, "b": -4.0} and r.get_pattern("q1")["user_label"] == "win"


def test_pattern_checks_still_refuse_bad_values_but_not_null(reg):
    conn = reg._db()
    base = ("INSERT INTO ml_pattern_registry (pattern_id, symbol, created_at, updated_at, {c}) "
            "VALUES (?, 'X', 'c', 'u', ?)")
    for column, bad in [("label", 2), ("direction", 0), ("user_label", "maybe"), ("label_source", "guess"),
                        ("stop_first", 3)]:
        check = rf"CHECK constraint failed: {column}|check constraint \"\w*_{column}_check"
        with pytest.raises(Exception, match=check):
            conn.execute(base.format(c=column), (f"bad-{column}", bad))
        conn.execute(base.format(c=column), (f"null-{column}", None))
    with pytest.raises(Exception, match="CHECK constraint failed|check constraint"):
        conn.execute("INSERT INTO ml_pattern_registry (pattern_id, symbol, created_at, updated_at) "
                     "VALUES ('empty', '', 'c', 'u')")


def test_the_pattern_table_has_no_in_list_checks(sqlite_reg):
    # SQLite builds an ephemeral table for a CHECK's IN list on every inserted row: 7 us of 20 us.
    ddl = sqlite_reg._db().execute("SELECT sql FROM sqlite_master WHERE name = 'ml_pattern_registry'").fetchone()[0]
    assert "CHECK" in ddl and " IN (" not in ddl.upper()


# -- the "no lost rows" property -------------------------------------------------------------------
RANK = {"user": 3, "trade": 2, "triple_barrier": 1, None: 0}
ids_ = st.integers(0, 7)
labels_ = st.sampled_from([None, 0, 1])
sources_ = st.sampled_from(["triple_barrier", "trade"])
register_ = st.tuples(st.just("register"), st.lists(st.tuples(ids_, labels_, sources_), min_size=1, max_size=6))
outcome_ = st.tuples(st.just("outcome"), st.lists(st.tuples(ids_, labels_, sources_), min_size=1, max_size=6))
user_ = st.tuples(st.just("user"), st.tuples(ids_, st.sampled_from(["win", "loss", "ignore"])))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(register_, outcome_, user_), min_size=1, max_size=12))
def test_no_lost_rows_and_labels_respect_the_ranking(ops):
    state: dict[str, tuple] = {}                       # pattern_id -> (label, source)

    def apply(pid, label, source):
        cur = state.setdefault(pid, (None, None))
        if label is not None and RANK[source] >= RANK[cur[1]]:
            state[pid] = (label, source)

    with PatternRegistry(":memory:") as r:
        for kind, arg in ops:
            if kind == "user":
                pid = f"p{arg[0]}"
                if pid in state:
                    r.label_pattern(pid, arg[1])
                    state[pid] = ({"win": 1, "loss": 0, "ignore": None}[arg[1]], "user")
                continue
            items = [(f"p{i}", lab, src) for i, lab, src in arg if kind == "register" or f"p{i}" in state]
            if not items:
                continue
            frame = pd.DataFrame({
                "pattern_id": [p for p, _, _ in items], "symbol": "EURUSD",
                "detection_time": pd.Timestamp("2020-01-01"),
                "label": [np.nan if lab is None else lab for _, lab, _ in items],
                "label_source": [s for _, _, s in items], "r_multiple": 1.0})
            if kind == "register":
                r.register_patterns(frame, features(len(items)))
            else:
                r.record_outcomes(frame)
            for p, lab, src in items:
                apply(p, lab, src)
        assert r.get_statistics()["total"] == len(state)
        stored = dict(((p, (lab, src)) for p, lab, src in r._db().execute(
            "SELECT pattern_id, label, label_source FROM ml_pattern_registry")))
        assert stored == state


def test_a_promotion_racing_another_waits_for_it_and_then_declines(reg, registry_db):
    import threading
    import time

    from qml_plugin.registry.connection import write_transaction
    v1, v2 = reg.add_model_version("sq"), reg.add_model_version("sq")
    result = {}

    def promote_v2():
        with PatternRegistry(registry_db) as mine:
            result["eid"] = mine.transition_models("sq", "promote", expect_production=None, production=v2)

    with PatternRegistry(registry_db) as other:
        with write_transaction(other._db()) as conn:       # the other cycle, inside its promotion
            conn.lock("models")
            racer = threading.Thread(target=promote_v2)
            racer.start()
            time.sleep(0.5)
            assert racer.is_alive()                          # it waits for the other one to finish ...
            conn.execute("UPDATE ml_model_versions SET status = 'production' WHERE model_id = ?", (v1,))
        racer.join(timeout=30)
    assert result == {"eid": None}                           # ... then sees production moved and writes nothing
    assert [v["status"] for v in reg.list_model_versions("sq")] == ["production", "staging"]
    assert reg.eval_history("sq") == []


# -- damaged and read-only files (issue 11): refused at open, before anything is written --------------
def test_a_file_damaged_in_the_middle_is_refused_on_open_and_left_untouched(tmp_path):
    db = tmp_path / "damaged.db"
    with PatternRegistry(db) as r:
        r.register_patterns(patterns(3000), features(3000))
    with sqlite3.connect(db) as conn:                        # the pattern table's root page: in use, not page 1
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'ml_pattern_registry'").fetchone()[0]
    data = bytearray(db.read_bytes())
    assert 1 < root < len(data) // 16384                     # the file header stays intact
    offset = 16384 * (root - 1)
    data[offset + 8:offset + 4000] = np.random.default_rng(1).bytes(3992)
    db.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match=r"damaged\.db' is damaged \(SQLite quick_check: .*nothing was written"):
        PatternRegistry(db)
    assert db.read_bytes() == bytes(data)


@pytest.fixture
def immutable(tmp_path):
    """A registry file even root cannot write (``chattr +i``; skipped where the filesystem has no such flag)."""
    import shutil
    import subprocess

    db = tmp_path / "frozen.db"
    with PatternRegistry(db) as r:
        r.register_patterns(patterns(3), features(3))
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(db)], capture_output=True).returncode:
        pytest.skip("needs chattr +i (e2fsprogs, an ext2/3/4 or similar filesystem) to make a read-only file as root")
    yield db
    subprocess.run(["chattr", "-i", str(db)], check=True)


def test_a_read_only_registry_is_a_clear_error_at_open(immutable):
    before = immutable.read_bytes()
    with pytest.raises(RegistryError, match=r"frozen\.db' is read-only \(attempt to write a readonly database\): "
                                            r"qml writes .* point ml_data_collection\.db_path / --db elsewhere"):
        PatternRegistry(immutable)
    assert immutable.read_bytes() == before


def test_the_registry_names_its_database_for_sqlalchemy_so_optuna_can_keep_studies_there(registry_db):
    import optuna

    from qml_plugin.registry import sqlalchemy_url
    with PatternRegistry(registry_db) as reg:
        url = reg.sqlalchemy_url
        assert url == sqlalchemy_url(registry_db)
        assert url.startswith("postgresql+psycopg://" if reg.backend == "postgresql" else "sqlite:////")
        if reg.backend == "sqlite":
            url = f"sqlite:///{reg.path}-optuna.db"           # SQLite: the study beside the file, not inside it
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="qml-optimize", storage=optuna.storages.RDBStorage(url))
    study.optimize(lambda t: (t.suggest_float("x", -1, 1) - 0.25) ** 2, n_trials=3)
    again = optuna.load_study(study_name="qml-optimize", storage=url)      # another process would do this
    assert len(again.trials) == 3 and again.best_value == study.best_value
    with PatternRegistry(registry_db) as reg:                                # and the registry is unharmed
        assert reg.get_statistics()["total"] == 0


@pytest.mark.parametrize("where", ["/proc/nope/x.db", "{file}/sub/x.db"])
def test_a_registry_path_whose_folder_cannot_exist_is_a_clear_error(where, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    db = where.format(file=blocker)
    with pytest.raises(RegistryError, match="cannot create the registry's folder .*writable folder"):
        PatternRegistry(db)
    from qml_plugin.cli.main import main

    assert main(["migrate", "--db", db]) == 2


def test_a_reused_postgresql_test_database_is_in_a_new_ones_state(postgres_databases):
    """The PostgreSQL ``registry_db`` of the next test is an emptied one (``RecycledDatabases``): it must
    hold nothing a test left, or every "fresh registry" test above would test less than it says."""
    import psycopg
    from conftest import postgres_url_or_skip
    from registry_backends import database_state

    server = postgres_url_or_skip()
    with postgres_databases.database(server) as url:
        new = database_state(url)
        with PatternRegistry(url) as r:
            r.register_patterns(patterns(3))
        left = psycopg.connect(url, autocommit=True)                  # a session the test forgot to close
        left.execute("CREATE SCHEMA extra")
        left.execute("CREATE TABLE extra.t (x int)")
        left.execute("CREATE TYPE public.mood AS ENUM ('up')")
        left.execute("SELECT lo_create(0)")
        left.execute(f"""ALTER DATABASE "{url.rsplit('/', 1)[1]}" SET work_mem = '8MB'""")
        assert database_state(url) != new
    with postgres_databases.database(server) as again:
        assert again == url                                           # the same database, reused
        assert database_state(again) == new
        assert migrate(again) == list(range(1, CURRENT_SCHEMA_VERSION + 1))    # no version applied yet
    with pytest.raises(psycopg.OperationalError):
        left.execute("SELECT 1")                                      # that session was ended
