"""QMLStrategy and the mixins in the real backtesting.py engine, with a real SQLite registry."""
from __future__ import annotations

import sqlite3
import warnings

import numpy as np
import pandas as pd
import pytest
from backtesting import Backtest, Strategy
from backtesting.lib import crossover

from qml_plugin import ConfigError, DataError, ModelError, load_ohlcv
from qml_plugin.features import FeatureExtractor
from qml_plugin.mixins import MLFilterMixin, PatternRegistryMixin, record_run
from qml_plugin.ml.model import SignalQualityModel
from qml_plugin.patterns import QMLParams, detect_patterns, label_patterns
from qml_plugin.registry import PatternRegistry
from qml_plugin.strategies import QMLStrategy

warnings.filterwarnings("ignore", message=".*trades remain open.*")


def run(df, strategy=QMLStrategy, cash=1_000_000, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Backtest(df, strategy, cash=cash, commission=0.0).run(**kw)


def registry_rows(db):
    with sqlite3.connect(db) as conn:
        return pd.read_sql_query("SELECT pattern_id, trade_outcome, label, label_source, ml_confidence, ml_decision "
                                 "FROM ml_pattern_registry", conn)


@pytest.fixture(scope="module")
def eurusd_1h():
    return load_ohlcv("EURUSD_1h")


def test_backtest_registers_every_detected_pattern_and_joins_trades_by_tag(eurusd_1h, tmp_path):
    db = str(tmp_path / "reg.db")
    stats = run(eurusd_1h, registry_db=db)
    record_run(stats, db)
    pats = detect_patterns(eurusd_1h)
    rows = registry_rows(db).set_index("pattern_id")
    assert len(rows) == len(pats) and set(rows.index) == set(pats["pattern_id"])
    trades = stats._trades
    assert len(trades) > 50 and trades["Tag"].isin(rows.index).all()
    joined = rows.loc[trades["Tag"]]
    np.testing.assert_allclose(joined["trade_outcome"].to_numpy(), trades["ReturnPct"].to_numpy() * 100, rtol=1e-9)
    assert (joined["label_source"] == "trade").all()
    untraded = rows.drop(trades["Tag"])
    assert set(untraded["label_source"].dropna()) == {"triple_barrier"}


def test_trades_closed_by_finalize_get_their_outcome_from_record_run(tmp_path):
    full = load_ohlcv("EURUSD_1h").iloc[:3000]
    t = run(full, register_patterns=False)._trades
    t = t[t["ExitBar"] - t["EntryBar"] > 3].iloc[3]
    df = full.iloc[: int(t["EntryBar"]) + 3]  # the data ends while this trade is open
    db = str(tmp_path / "reg.db")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = Backtest(df, QMLStrategy, cash=1_000_000, finalize_trades=True).run(registry_db=db)
    last = stats._trades.iloc[-1]
    assert last["Tag"] == t["Tag"] and last["ExitBar"] == len(df) - 1
    before = registry_rows(db).set_index("pattern_id").loc[last["Tag"]]
    assert before["label_source"] != "trade"  # the mixin could not know this outcome after the last bar
    assert record_run(stats, db) == len(stats._trades)
    after = registry_rows(db).set_index("pattern_id").loc[last["Tag"]]
    assert after["label_source"] == "trade" and after["trade_outcome"] == pytest.approx(last["ReturnPct"] * 100)


def test_optimize_works_on_qml_params(eurusd_4h):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bt = Backtest(eurusd_4h, QMLStrategy, cash=1_000_000)
        stats, heat = bt.optimize(swing_n=[2, 3], head_min_atr=[0.3, 0.5], register_patterns=[False],
                                  maximize="Equity Final [$]", return_heatmap=True)
        each = {(n, h): bt.run(swing_n=n, head_min_atr=h, register_patterns=False)["Equity Final [$]"]
                for n in (2, 3) for h in (0.3, 0.5)}
    assert len(heat) == 4 and len(set(each.values())) == 4            # the parameters reach the detector
    h = heat.reset_index()
    assert dict(zip(zip(h["swing_n"], h["head_min_atr"]), h.iloc[:, -1])) == pytest.approx(each)
    assert stats["Equity Final [$]"] == pytest.approx(max(each.values()))


def test_ml_disabled_gives_stats_identical_to_the_plain_strategy(eurusd_4h):
    plain = run(eurusd_4h, register_patterns=False)
    off = run(eurusd_4h, register_patterns=False, ml_config="enabled: false\nprediction_mode: filter")
    cols = [k for k in plain.index if not k.startswith("_")]
    pd.testing.assert_series_equal(plain[cols], off[cols])
    pd.testing.assert_frame_equal(plain._trades, off._trades)


def ml_block(path, mode="filter", **kw):
    items = {"enabled": True, "model_path": str(path), "prediction_mode": mode, **kw}
    return "\n".join(f"{k}: {str(v).lower() if isinstance(v, bool) else v}" for k, v in items.items())


def test_three_modes_really_differ_and_filter_only_removes_trades(trained_model, eurusd_4h, tmp_path):
    _, path = trained_model
    later = eurusd_4h["2013-06-01":]
    base = run(later, register_patterns=False)
    out = {m: run(later, register_patterns=False, ml_config=ml_block(path, m, confidence_threshold=0.4))
           for m in ("filter", "score_enhancement", "replace")}
    assert len({tuple(s._trades["Tag"]) for s in out.values()}) == 3
    dec = out["filter"]._strategy.pattern_decisions
    tech = out["filter"]._strategy.patterns["validity_score"] >= 0.5
    assert not (dec["take"] & ~tech).any()  # filter never adds a pattern the technical rule rejects
    for mode, stats in out.items():         # and every trade obeys its mode's rule
        strategy = stats._strategy
        d = strategy.pattern_decisions.set_index(strategy.patterns["pattern_id"]).loc[stats._trades["Tag"]]
        v = strategy.patterns.set_index("pattern_id").loc[stats._trades["Tag"], "validity_score"]
        c = d["ml_confidence"]
        rule = {"filter": (v >= 0.5) & ((c >= 0.4) | c.isna()), "replace": (c >= 0.4) | (c.isna() & (v >= 0.5)),
                "score_enhancement": (0.7 * v + 0.3 * c.fillna(v)) >= 0.5 - 1e-12}[mode]
        assert d["take"].all() and rule.all(), mode
    assert out["filter"]._strategy.ml_status == "out-of-sample"
    assert len(out["filter"]._trades) <= len(base._trades) + 5


def test_a_model_trained_on_the_backtest_period_is_refused_unless_allowed(trained_model, eurusd_4h):
    _, path = trained_model
    with pytest.raises(ModelError, match="overlaps the model's training period"):
        run(eurusd_4h, register_patterns=False, ml_config=ml_block(path))
    stats = run(eurusd_4h, register_patterns=False, ml_config=ml_block(path, allow_in_sample=True))
    assert stats._strategy.ml_status == "IN-SAMPLE"


def test_tampered_model_fails_with_a_clear_message_or_trades_unfiltered_on_baseline(trained_model, eurusd_4h,
                                                                                     tmp_path):
    _, path = trained_model
    bad = tmp_path / "tampered"
    bad.mkdir()
    for f in path.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    text = (bad / "model.json").read_text()
    (bad / "model.json").write_text(text.replace("0", "1", 1))
    later = eurusd_4h["2013-06-01":]
    with pytest.raises(ModelError, match="sha256"):
        run(later, register_patterns=False, ml_config=ml_block(bad))
    with pytest.warns(UserWarning, match="trading unfiltered"):
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            stats = Backtest(later, QMLStrategy, cash=1_000_000).run(
                register_patterns=False, ml_config=ml_block(bad, on_model_error="baseline"))
    assert stats._strategy.ml_status.startswith("baseline: ") and "sha256" in stats._strategy.ml_status
    plain = run(later, register_patterns=False)
    pd.testing.assert_frame_equal(stats._trades, plain._trades)


class PlainSma(Strategy):
    def init(self):
        close = pd.Series(self.data.Close)
        self.fast = self.I(lambda: close.rolling(10).mean().to_numpy())
        self.slow = self.I(lambda: close.rolling(30).mean().to_numpy())

    def next(self):
        if crossover(self.fast, self.slow):
            self.position.close()
            self.buy()
        elif crossover(self.slow, self.fast):
            self.position.close()
            self.sell()


class SmaCross(PatternRegistryMixin, MLFilterMixin, PlainSma):
    """Any backtesting.py strategy: registers its own signals by passing a row as ``tag``."""

    def next(self):
        if crossover(self.fast, self.slow):
            self.position.close()
            self.buy(tag={"pattern_type": "sma_cross_up", "validity_score": 0.6})
        elif crossover(self.slow, self.fast):
            self.position.close()
            self.sell(tag={"pattern_type": "sma_cross_down", "validity_score": 0.6})


def test_registry_mixin_works_on_any_strategy(eurusd_4h, tmp_path):
    db = str(tmp_path / "sma.db")
    df = eurusd_4h.iloc[:3000]
    stats = run(df, SmaCross, registry_db=db)
    record_run(stats, db)
    rows = registry_rows(db).set_index("pattern_id")
    trades = stats._trades
    assert len(trades) > 10 and trades["Tag"].isin(rows.index).all()
    with PatternRegistry(db) as reg:
        feats = reg.get_features(trades["Tag"].iloc[0])
    assert len(feats) >= 150  # market features at the signal's bar


def test_ml_filter_on_a_signal_without_features_is_a_config_error(trained_model, eurusd_4h):
    _, path = trained_model
    with pytest.raises(ConfigError, match="has no features for the ML filter"):
        run(eurusd_4h["2013-06-01":].iloc[:2000], SmaCross, register_patterns=False, ml_config=ml_block(path))


def test_pattern_feature_memo_returns_the_extractor_result_and_tells_data_apart(eurusd_4h):
    from qml_plugin.features.cache import clear, pattern_features

    clear()
    df = eurusd_4h.iloc[:3000]
    pats = detect_patterns(df)
    direct = FeatureExtractor().extract(df, pats)
    first = pattern_features(df, pats)
    pd.testing.assert_frame_equal(first, direct)
    first.iloc[0, 1] = -1.0  # callers get a copy: mutating it does not poison the memo
    pd.testing.assert_frame_equal(pattern_features(df, pats), direct)
    other = df.copy()
    other.iloc[int(pats["detection_bar"].iloc[0]), other.columns.get_loc("Volume")] = 5000.0  # other bars, other key
    changed = pattern_features(other, pats)
    assert not changed.equals(direct)
    assert changed.iloc[0]["volu_rel_20"] != direct.iloc[0]["volu_rel_20"]


def test_market_feature_memo_serves_a_second_pattern_set_on_the_same_bars(eurusd_4h, monkeypatch):
    from qml_plugin.features import cache

    cache.clear()
    df = eurusd_4h.iloc[:3000]
    first, second = detect_patterns(df, QMLParams(swing_n=3)), detect_patterns(df, QMLParams(swing_n=2))
    cache.pattern_features(df, first)
    calls = []
    real_compute = FeatureExtractor.compute
    monkeypatch.setattr(FeatureExtractor, "compute", lambda self, o: calls.append(1) or real_compute(self, o))
    got = cache.pattern_features(df, second)                  # new patterns, same bars: no market pass
    assert calls == []
    pd.testing.assert_frame_equal(got, FeatureExtractor().extract(df, second))   # bit-identical
    cache.clear()
    cache.pattern_features(df, second)
    assert calls == [1]


def test_extract_refuses_market_features_of_other_bars(eurusd_4h):
    df, pats = eurusd_4h.iloc[:600], detect_patterns(eurusd_4h.iloc[:600])
    msg = r"market must be this extractor's compute\(\) of the same 600 bars \(same index"
    for other in (eurusd_4h.iloc[:500], eurusd_4h.iloc[100:700]):        # shorter; same length, other bars
        with pytest.raises(DataError, match=msg):
            FeatureExtractor().extract(df, pats, market=FeatureExtractor().compute(other))
    geo = FeatureExtractor({"families": ["geo"]})                          # no market families at all
    with pytest.raises(DataError, match=msg):
        geo.extract(df, pats, market=FeatureExtractor().compute(df))
    pd.testing.assert_frame_equal(geo.extract(df, pats, market=geo.compute(df)), geo.extract(df, pats))


def test_market_feature_memo_never_builds_a_matrix_too_big_to_keep(eurusd_4h, monkeypatch):
    from qml_plugin.features import cache

    df = eurusd_4h.iloc[:1500]
    pats = detect_patterns(df)
    expected = FeatureExtractor().extract(df, pats)
    cache.clear()
    monkeypatch.setattr(cache, "MAX_MARKET_BYTES", 0)
    monkeypatch.setattr(FeatureExtractor, "compute", lambda self, o: pytest.fail("built the whole market matrix"))
    pd.testing.assert_frame_equal(cache.pattern_features(df, pats), expected)
    cache.clear()


def test_data_without_a_symbol_warns_once_and_registers_under_unknown(eurusd_4h, tmp_path):
    df = eurusd_4h.iloc[:1500].copy()
    df.attrs = {}
    db = str(tmp_path / "u.db")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Backtest(df, QMLStrategy, cash=1_000_000).run(registry_db=db)
    said = [w for w in caught if "has no symbol" in str(w.message)]
    assert len(said) == 1
    with PatternRegistry(db) as reg:
        assert list(reg.get_statistics()["by_symbol"]) == ["UNKNOWN"]


def test_qml_strategy_stores_the_extractors_schema_hash(eurusd_4h, tmp_path):
    db = str(tmp_path / "s.db")
    run(eurusd_4h.iloc[:1500], registry_db=db)
    with sqlite3.connect(db) as conn:
        schemas = {r[0] for r in conn.execute("SELECT DISTINCT feature_schema FROM ml_pattern_registry")}
    assert schemas == {FeatureExtractor().schema_hash}


class MixedSma(MLFilterMixin, PlainSma):
    pass


def test_mixins_with_ml_off_leave_any_strategy_byte_identical(eurusd_4h):
    df = eurusd_4h.iloc[:4000]
    plain, mixed = run(df, PlainSma), run(df, MixedSma, ml_config="enabled: false")
    cols = [k for k in plain.index if not k.startswith("_")]
    pd.testing.assert_series_equal(plain[cols], mixed[cols])
    pd.testing.assert_frame_equal(plain._trades.drop(columns="Tag"), mixed._trades.drop(columns="Tag"))


class ForgetsSuper(PatternRegistryMixin, MLFilterMixin, Strategy):
    def init(self):  # no super().init(): the mixins hook init() themselves
        self.sma = self.I(lambda c: pd.Series(c).rolling(5).mean(), self.data.Close)

    def next(self):
        if len(self.data) in (50, 80) and not self.position:
            self.buy()
        elif len(self.data) in (60, 90):
            self.position.close()


def test_a_strategy_that_never_calls_super_init_still_registers_its_signals(eurusd_4h, tmp_path):
    db = str(tmp_path / "forgets.db")
    stats = run(eurusd_4h.iloc[:100], ForgetsSuper, registry_db=db)
    assert len(stats._trades) == 2
    rows = registry_rows(db).set_index("pattern_id")
    assert list(rows.index) == list(stats._trades["Tag"])          # untagged orders carry their pattern id
    assert (rows["label_source"] == "trade").all()
    np.testing.assert_allclose(rows["trade_outcome"], stats._trades["ReturnPct"] * 100)


def test_fractional_backtest_stores_prices_unscaled(tmp_path):
    from backtesting.lib import FractionalBacktest

    df = load_ohlcv("BTCUSD_1h").iloc[:4000]
    db = str(tmp_path / "btc.db")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = FractionalBacktest(df, QMLStrategy, cash=10_000, fractional_unit=1e-6).run(registry_db=db,
                                                                                           price_unit=1e-6)
    record_run(stats, db)
    pats = detect_patterns(df).set_index("pattern_id")
    with sqlite3.connect(db) as conn:
        rows = pd.read_sql_query("SELECT pattern_id, entry, stop, target FROM ml_pattern_registry", conn)
    rows = rows.set_index("pattern_id")
    assert len(rows) == len(pats) and len(stats._trades) >= 1
    common = rows.index.intersection(pats.index)
    assert len(common) >= 0.95 * len(pats)  # ids are price-free; scaling could only move exact ties
    for col in ("entry", "stop", "target"):
        np.testing.assert_allclose(rows.loc[common, col], pats.loc[common, col], rtol=1e-9)
    with warnings.catch_warnings():                 # forgetting price_unit is said, from the trades themselves
        warnings.simplefilter("ignore")
        scaled = FractionalBacktest(df, QMLStrategy, cash=10_000, fractional_unit=1e-6).run(register_patterns=False)
    with pytest.warns(UserWarning, match=r"scaled by 1e-06 .* run with price_unit=1e-06"):
        record_run(scaled, str(tmp_path / "other.db"))


def test_canary_shadow_and_failed_versions_never_act(eurusd_4h, tmp_path):
    from qml_plugin.scoring import load_models

    early = eurusd_4h[:"2012-12-31"]
    lab = label_patterns(early, detect_patterns(early)).dropna(subset=["label"])
    X = FeatureExtractor().extract(early, lab)
    folder, db = tmp_path / "models", str(tmp_path / "reg.db")
    paths = []
    for seed in range(3):
        m = SignalQualityModel(n_estimators=20, random_state=seed).fit(
            X, lab["label"].astype(int), detection_times=lab["detection_time"], exit_times=lab["exit_time"])
        paths.append(m.save_version(folder))
    with PatternRegistry(db) as reg:
        ids = [reg.add_model_version("signal_quality", status=s, model_path=str(p))
               for s, p in zip(("staging", "failed", "canary"), paths)]
    models, versions = load_models(folder, db)
    assert versions and len(models) == 1  # only the staging one may act
    with PatternRegistry(db) as reg:
        reg.set_model_status(ids[1], "production")  # the failed one, promoted by hand
    models, versions = load_models(folder, db)
    assert not versions and len(models) == 1 and models[0].random_state == 1  # production alone acts
    assert len(load_models(folder)[0]) == 3  # without a registry: every version, walk-forward


class RegisteredPlainSma(PatternRegistryMixin, PlainSma):
    """The mixin on a strategy whose next() is inherited, not defined here."""


def test_registry_flushes_when_next_is_inherited(eurusd_4h, tmp_path):
    db = str(tmp_path / "inh.db")
    stats = run(eurusd_4h.iloc[:2000], RegisteredPlainSma, registry_db=db)
    assert len(stats._trades) > 5 and len(registry_rows(db)) >= len(stats._trades)


def test_optimize_works_with_the_registry_on(eurusd_4h, tmp_path):
    db = str(tmp_path / "opt.db")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bt = Backtest(eurusd_4h, QMLStrategy, cash=1_000_000)
        bt.run(registry_db=db)
        stats = bt.optimize(swing_n=[2, 3], registry_db=[db], symbol=["EURUSD"], timeframe=["4h"],
                            maximize="Equity Final [$]")
    assert stats._strategy.swing_n in (2, 3)
    rows = registry_rows(db)
    n_expected = len(set(detect_patterns(eurusd_4h, QMLParams(swing_n=2))["pattern_id"])
                     | set(detect_patterns(eurusd_4h, QMLParams(swing_n=3))["pattern_id"]))
    assert len(rows) == n_expected


def _plotted(bt, tmp_path):
    """``bt.plot()``'s bokeh model: {column: (values, glyph type, figure)} for every glyph drawn from a column."""
    from bokeh.models import GlyphRenderer
    from bokeh.plotting import figure

    layout = bt.plot(open_browser=False, filename=str(tmp_path / "plot.html"))
    out = {}
    for fig in (m for m in layout.references() if isinstance(m, figure)):
        for r in fig.renderers:
            y = getattr(getattr(r, "glyph", None), "y", None)
            y = getattr(y, "field", y)
            if isinstance(r, GlyphRenderer) and isinstance(y, str) and y in r.data_source.data:
                out[y] = (np.asarray(r.data_source.data[y], float), type(r.glyph).__name__, fig)
    return out


def _column(plotted, name):
    (key,) = [k for k in plotted if k.startswith(name + "_")]          # backtesting.py names it NAME_i_j
    return plotted[key]


def test_bt_plot_draws_each_traded_patterns_levels_while_its_order_is_live(eurusd_4h, tmp_path):
    from qml_plugin.mixins._plot import LEVEL_COLUMNS, LEVEL_NAMES, SCORE_NAME

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bt = Backtest(eurusd_4h.iloc[:3000], QMLStrategy, cash=1_000_000)
        stats = bt.run(register_patterns=False)
    plotted = _plotted(bt, tmp_path)
    pats = stats._strategy.patterns.set_index("pattern_id")
    trades = stats._trades
    assert len(trades) > 5
    candles = _column(plotted, "QML level")[2]
    for name, col in zip(LEVEL_NAMES, LEVEL_COLUMNS):
        values, glyph, fig = _column(plotted, name)
        assert glyph == "Line" and len(values) == 3000 and fig is candles
        for _, t in trades.iterrows():  # detection bar to exit: its own level (on the exit bar a new one may start)
            p = pats.loc[t["Tag"]]
            span = values[int(p["detection_bar"]): int(t["ExitBar"])]
            np.testing.assert_allclose(span, p[col], rtol=1e-12)
        assert np.isnan(values[: int(pats.loc[trades["Tag"], "detection_bar"].min())]).all()
        taken = pats[stats._strategy.pattern_decisions["take"].to_numpy()]
        assert set(np.unique(values[np.isfinite(values)])) <= set(taken[col])   # only patterns it traded
    assert not any(k.startswith(SCORE_NAME) for k in plotted)                   # ML off: no score panel


def test_bt_plot_shows_the_ml_score_in_its_own_panel_when_ml_is_on(trained_model, eurusd_4h, tmp_path):
    from qml_plugin.mixins._plot import SCORE_NAME

    _, path = trained_model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bt = Backtest(eurusd_4h["2013-06-01":"2015-12-31"], QMLStrategy, cash=1_000_000)
        stats = bt.run(register_patterns=False, ml_config=ml_block(path, "filter"))
    plotted = _plotted(bt, tmp_path)
    score, glyph, fig = _column(plotted, SCORE_NAME)
    assert glyph in ("Circle", "Scatter") and fig is not _column(plotted, "QML level")[2]   # its own panel
    s = stats._strategy
    bars = s.patterns["detection_bar"].to_numpy()
    conf = s.pattern_decisions["ml_confidence"].to_numpy()
    scored = np.isfinite(conf)
    assert scored.sum() > 20
    best = pd.Series(conf[scored]).groupby(bars[scored]).max()     # two patterns on one bar: the higher score
    np.testing.assert_allclose(score[best.index], best.to_numpy(), rtol=1e-12)
    assert np.isfinite(score).sum() == len(best)


class OwnTags(PatternRegistryMixin, MLFilterMixin, Strategy):
    """backtesting.py's own test_order_tag, with the mixins added: the user's tags must survive."""

    def init(self):
        pass

    def next(self):
        step = {20: "a", 25: "b", 30: "c", 35: "d", 40: "e"}.get(len(self.data))
        if step == "a":
            self.buy(size=2, tag=1)
        elif step == "b":
            self.sell(size=1, tag="s")
        elif step == "c":
            self.sell(size=1)
        elif step == "d":
            self.buy(tag=2)
        elif step == "e":
            self.position.close()


def test_a_users_own_order_tags_are_kept_and_trades_still_join_their_patterns(eurusd_4h, tmp_path):
    db = str(tmp_path / "tags.db")
    stats = run(eurusd_4h.iloc[:60], OwnTags, registry_db=db)
    assert list(stats._trades["Tag"]) == [1, 1, 2]                      # as without the mixins
    strategy = stats._strategy
    pids = strategy.trade_pattern_ids()
    signal_of = {s["row"]["detection_bar"]: s["row"]["pattern_id"] for s in strategy._signals}
    assert pids == [signal_of[19], signal_of[19], signal_of[34]]        # the orders placed at bars 19 and 34
    record_run(stats, db)
    rows = registry_rows(db).set_index("pattern_id")
    assert rows.loc[signal_of[34], "trade_outcome"] == pytest.approx(stats._trades["ReturnPct"].iloc[2] * 100)
    assert rows.loc[signal_of[34], "label_source"] == "trade"


def test_any_index_backtesting_accepts_works_with_registration_on(eurusd_4h, tmp_path):
    df = eurusd_4h.iloc[:1500].reset_index(drop=True)                     # a RangeIndex, no timestamps
    df.attrs = {"symbol": "EURUSD", "timeframe": "4h"}
    db = str(tmp_path / "range.db")
    stats = run(df, RegisteredPlainSma, registry_db=db)
    record_run(stats, db)
    stamped = run(eurusd_4h.iloc[:1500], RegisteredPlainSma, register_patterns=False)
    times = ["EntryTime", "ExitTime", "Duration", "Tag"]
    pd.testing.assert_frame_equal(stats._trades.drop(columns=times), stamped._trades.drop(columns=times))
    rows = registry_rows(db)
    assert len(stats._trades) > 20 and (rows["label_source"] == "trade").sum() == len(set(stats._trades["Tag"]))
    with sqlite3.connect(db) as conn:                                   # no invented 1970 timestamps
        assert conn.execute("SELECT COUNT(*) FROM ml_pattern_registry WHERE detection_time IS NOT NULL").fetchone() \
            == (0,)
    with PatternRegistry(db) as reg:
        assert len(reg.get_features(stats._trades["Tag"].iloc[0])) >= 150


def test_ml_config_names_a_shipped_config_from_any_folder_like_the_cli(eurusd_4h, tmp_path, monkeypatch):
    from qml_plugin.config import parse_ml_block, resolve_config

    monkeypatch.chdir(tmp_path)                                          # no configs/ folder here
    shipped = parse_ml_block(resolve_config("qml_with_ml.yaml"))
    for name in ("qml_with_ml.yaml", "configs/qml_with_ml.yaml"):
        with pytest.raises(ModelError, match="ml.model_path = 'models/signal_quality' does not exist"):
            run(eurusd_4h.iloc[:600], register_patterns=False, ml_config=name)   # the shipped block was read
    baseline = f"{resolve_config('qml_with_ml.yaml').read_text()}".replace("on_model_error: fail",
                                                                            "on_model_error: baseline")
    stats = run(eurusd_4h.iloc[:600], register_patterns=False, ml_config=baseline)
    assert stats._strategy._ml.prediction_mode == shipped.prediction_mode and stats._strategy.ml_status.startswith(
        "baseline: ml.model_path")
    with pytest.raises(ConfigError, match="config file not found: missing_dir/qml_with_ml.yaml"):
        run(eurusd_4h.iloc[:600], register_patterns=False, ml_config="missing_dir/qml_with_ml.yaml")
