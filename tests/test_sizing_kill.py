"""Sizing bands and the kill switch (SPEC §13) in real backtesting.py runs of QMLStrategy.

The model is the session's real XGBoost model trained on EURUSD 4h up to 2012 (``trained_model``); it
scores the 2013+ patterns out of sample. Its confidences (about 0.36 to 0.47) are known after the run
(``pattern_decisions``), so each test works out by hand, from the trades of a run without the new
keys, what the bands or the switch must do, and checks the run with them.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from backtesting import Backtest

from qml_plugin.filter import band_decisions, size_band
from qml_plugin.mixins._kill import NOT_ARMED, KillSwitchState
from qml_plugin.strategies import QMLStrategy

CASH = 1_000_000


@pytest.fixture(scope="module")
def later(eurusd_4h):
    return eurusd_4h["2013-06-01":]


def run(df, path, strategy=QMLStrategy, **ml):
    block = yaml.safe_dump({"enabled": True, "model_path": str(path), "prediction_mode": "filter", **ml})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Backtest(df, strategy, cash=CASH).run(register_patterns=False, ml_config=block)


def traded(stats) -> pd.DataFrame:
    """Each trade with its pattern's decision row (joined by the pattern_id tag)."""
    s = stats._strategy
    d = s.pattern_decisions.assign(pattern_id=s.patterns["pattern_id"].to_numpy(),
                                   validity_score=s.patterns["validity_score"].to_numpy(),
                                   detection_bar=s.patterns["detection_bar"].to_numpy()).set_index("pattern_id")
    return stats._trades.join(d, on="Tag")


def equity_fraction(stats) -> np.ndarray:
    """Each trade's value at entry as a fraction of the equity just before it (the account is flat then)."""
    t = stats._trades
    before = stats._equity_curve["Equity"].to_numpy()[t["EntryBar"].to_numpy() - 1]
    return t["Size"].abs().to_numpy() * t["EntryPrice"].to_numpy() / before


# ---- sizing bands ------------------------------------------------------------------------------------------
def test_size_band_is_the_highest_band_reached_and_zero_below_the_lowest():
    bands = [{"min": 0.6, "size": 1.0}, {"min": 0.4, "size": 0.5}, {"min": 0.2, "size": 0.25}]
    conf = [0.99, 0.6, 0.5999, 0.4, 0.3, 0.2, 0.1999, 0.0, np.nan]
    assert size_band(conf, bands).tolist() == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.0, 0.0, 1.0]
    assert band_decisions([True] * 4 + [False], [1.0, 0.5, 0.25, 0.0, 1.0]).tolist() == \
        ["take", "reduce_size", "reduce_size", "skip", "skip"]


def test_each_order_is_sized_by_its_band_and_a_pattern_the_mode_skips_stays_skipped(trained_model, later):
    _, path = trained_model
    bands = [{"min": 0.43, "size": 1.0}, {"min": 0.0, "size": 0.5}]   # every confidence reaches a band
    stats = run(later, path, confidence_threshold=0.40, size_bands=bands)
    t = traded(stats)
    want = np.where(t["ml_confidence"] >= 0.43, 1.0, 0.5)
    assert len(t) >= 8 and {0.5, 1.0} <= set(want)
    np.testing.assert_allclose(equity_fraction(stats), want, rtol=1e-4)
    assert (t["ml_decision"] == np.where(want == 1.0, "take", "reduce_size")).all()
    d = stats._strategy.pattern_decisions
    mode_skips = d["ml_confidence"] < 0.40
    assert mode_skips.any() and (d.loc[mode_skips, "ml_decision"] == "skip").all()
    assert not d.loc[mode_skips, "take"].any()
    assert (t["ml_confidence"] >= 0.40).all()
    assert set(d["decision"]) <= {"pass:filter", "reduce_size:filter", "skip:filter"}


def test_below_the_lowest_band_the_order_is_skipped(trained_model, later):
    _, path = trained_model
    plain = run(later, path, confidence_threshold=0.0)      # the mode takes every technical candidate
    banded = run(later, path, confidence_threshold=0.0, size_bands=[{"min": 0.42, "size": 1.0},
                                                                    {"min": 0.41, "size": 0.5}])
    t, d = traded(banded), banded._strategy.pattern_decisions
    assert (t["ml_confidence"] >= 0.41).all() and len(t) >= 5
    np.testing.assert_allclose(equity_fraction(banded), np.where(t["ml_confidence"] >= 0.42, 1.0, 0.5), rtol=1e-4)
    below = plain._strategy.pattern_decisions["take"] & (d["ml_confidence"] < 0.41)
    assert below.any() and (d.loc[below, "ml_decision"] == "skip").all() and not d.loc[below, "take"].any()
    assert set(traded(plain)["Tag"]) & set(d.index[below].map(banded._strategy.patterns["pattern_id"].get))


def test_one_full_band_changes_nothing(trained_model, later):
    _, path = trained_model
    plain = run(later, path, confidence_threshold=0.41)
    full = run(later, path, confidence_threshold=0.41, size_bands=[{"min": 0.0, "size": 1.0}])
    pd.testing.assert_frame_equal(plain._trades, full._trades)
    assert (full._strategy.pattern_decisions["ml_decision"] != "reduce_size").all()


def test_a_tag_row_signal_taken_at_a_reduced_band_is_logged_reduce_size(trained_model, later):
    from backtesting import Strategy

    from qml_plugin.features import FeatureExtractor
    from qml_plugin.mixins import MLFilterMixin
    from qml_plugin.patterns import detect_patterns

    _, path = trained_model
    df = later[:"2014-12-31"]
    pats = detect_patterns(df)
    rows = pd.concat([pats.set_index("pattern_id"), FeatureExtractor().extract(df, pats)], axis=1).reset_index()
    by_bar = {int(r["detection_bar"]): r for r in rows.to_dict("records")}

    class OwnSignals(MLFilterMixin, Strategy):          # no self.patterns: every signal is a tag row
        def init(self):
            pass

        def next(self):
            if self.trades and len(self.data) - self.trades[0].entry_bar > 10:
                self.position.close()                    # hold ten bars
            row = by_bar.get(len(self.data) - 1)
            if row is not None and not self.position and not self.orders:
                (self.buy if row["direction"] == 1 else self.sell)(tag=dict(row))

    bands = [{"min": 0.43, "size": 1.0}, {"min": 0.40, "size": 0.5}]
    block = yaml.safe_dump({"enabled": True, "model_path": str(path), "prediction_mode": "filter",
                            "confidence_threshold": 0.0, "size_bands": bands})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = Backtest(df, OwnSignals, cash=CASH).run(ml_config=block)
    pred = stats._strategy.predictions.set_index("pattern_id")
    signals = {s["row"]["pattern_id"]: s for s in stats._strategy._signals}
    conf = np.array([signals[p]["ml_confidence"] for p in pred.index])
    technical = np.array([signals[p]["row"]["validity_score"] >= 0.5 for p in pred.index])   # min_score 0.5
    want = np.where(technical & (conf >= 0.43), "take", np.where(technical & (conf >= 0.40), "reduce_size", "skip"))
    assert pred["decision"].tolist() == want.tolist() and set(want) == {"take", "reduce_size", "skip"}
    assert [signals[p]["take"] for p in pred.index] == (want != "skip").tolist()   # reduce_size: taken, at half size


class SevenUnits(QMLStrategy):
    """Asks for 7 whole units per order instead of backtesting.py's default (all equity)."""

    def buy(self, **kw):
        return super().buy(**{**kw, "size": 7})

    def sell(self, **kw):
        return super().sell(**{**kw, "size": 7})


def test_a_unit_size_is_scaled_and_rounded_down_to_at_least_one_unit(trained_model, later):
    _, path = trained_model
    bands = [{"min": 0.43, "size": 1.0}, {"min": 0.41, "size": 0.5}, {"min": 0.0, "size": 0.1}]
    t = traded(run(later, path, SevenUnits, confidence_threshold=0.0, size_bands=bands))
    c = t["ml_confidence"].to_numpy()
    want = np.where(c >= 0.43, 7, np.where(c >= 0.41, 3, 1))     # 7, floor(3.5), max(1, floor(0.7))
    assert set(want) == {7, 3, 1}
    assert (t["Size"].abs().to_numpy() == want).all()


# ---- the kill switch ---------------------------------------------------------------------------------------
def test_kill_switch_state_follows_the_documented_definitions():
    spec = type("S", (), {"consecutive_losses": 3, "max_drawdown_pct": None, "action": "halt"})
    s = KillSwitchState(spec, 100.0)
    assert [s.feed(p) for p in (-1, -1, 0, -1, -1)] == [None] * 5     # a break-even trade resets the run
    trip = s.feed(-1)
    assert trip["consecutive_losses"] == 3 and trip["closed_trades"] == 6 and trip["trigger"] == "consecutive_losses"
    spec.consecutive_losses, spec.max_drawdown_pct = None, 10.0
    s = KillSwitchState(spec, 100.0)
    # closed-trade equity 150, 140, 136 (peak 150: drawdown 9.33 %), 135 (exactly 10 %: not over), 134.9 trips
    assert [s.feed(p) for p in (50, -10, -4, -1)] == [None] * 4
    trip = s.feed(-0.1)
    assert trip["trigger"] == "max_drawdown_pct" and trip["closed_trade_equity"] == pytest.approx(134.9)
    assert trip["drawdown_pct"] == pytest.approx(100 * 15.1 / 150) and "10.07% > 10%" in trip["reason"]


@pytest.fixture(scope="module")
def unswitched(trained_model, later):
    """The filter run the kill-switch tests plant their streak in: trades 5-7 (0-based 4-6) lose in a row."""
    _, path = trained_model
    stats = run(later, path, confidence_threshold=0.42)
    losses = (stats._trades["PnL"] < 0).to_numpy()
    run_length = pd.Series(losses).groupby((~pd.Series(losses)).cumsum()).cumsum().to_numpy()
    assert run_length.max() >= 3
    return stats, int(np.argmax(run_length >= 3))                  # the trade that is the 3rd loss in a row


def test_halt_trips_at_the_third_consecutive_loss_and_places_no_order_after(trained_model, later, unswitched):
    _, path = trained_model
    base, k = unswitched
    with pytest.warns(UserWarning, match=r"ml.kill_switch tripped at .* \(bar \d+\): 3 consecutive losing trades"):
        block = yaml.safe_dump({"enabled": True, "model_path": str(path), "prediction_mode": "filter",
                                "confidence_threshold": 0.42,
                                "kill_switch": {"consecutive_losses": 3, "action": "halt"}})
        stats = Backtest(later, QMLStrategy, cash=CASH).run(register_patterns=False, ml_config=block)
    trip = stats._strategy.ml_kill_switch
    exit_bar = int(base._trades["ExitBar"].iloc[k])
    assert trip["bar"] == exit_bar and trip["time"] == later.index[exit_bar]
    assert trip["action"] == "halt" and trip["closed_trades"] == k + 1 and trip["consecutive_losses"] == 3
    pd.testing.assert_frame_equal(stats._trades, base._trades.iloc[: k + 1])   # same until the trip, none after
    d, bars = stats._strategy.pattern_decisions, stats._strategy.patterns["detection_bar"].to_numpy()
    assert not d["acting"].to_numpy()[bars >= exit_bar].any() and d["acting"].to_numpy()[bars < exit_bar].all()
    assert (d["decision"].to_numpy()[bars >= exit_bar] == "skip:halted").all()


def test_baseline_trades_the_technical_rule_after_the_trip(trained_model, later, unswitched):
    _, path = trained_model
    base, k = unswitched
    stats = run(later, path, confidence_threshold=0.42, kill_switch={"consecutive_losses": 3})
    trip = stats._strategy.ml_kill_switch
    assert trip["bar"] == int(base._trades["ExitBar"].iloc[k]) and trip["action"] == "baseline"
    t = traded(stats)
    pd.testing.assert_frame_equal(stats._trades.iloc[: k + 1], base._trades.iloc[: k + 1])
    after = t.iloc[k + 1:]
    assert len(after) > len(base._trades) - (k + 1)               # ML off: more trades than the filter took
    assert (after["validity_score"] >= 0.5).all() and (after["detection_bar"] >= trip["bar"]).all()
    assert (after["ml_decision"] == "skip").any()                 # patterns the model would have skipped trade
    assert (after["decision"] == "pass:technical").all() and not after["acting"].any()


def test_kill_switch_trips_at_the_closed_trade_drawdown_limit(trained_model, later, unswitched):
    _, path = trained_model
    base, _ = unswitched
    eq = CASH + base._trades["PnL"].cumsum().to_numpy()
    peak = np.maximum.accumulate(np.r_[CASH, eq])[1:]
    dd = 100 * (peak - eq) / peak
    limit = round(dd.max() / 2, 2)
    k = int(np.argmax(dd > limit))
    stats = run(later, path, confidence_threshold=0.42,
                kill_switch={"max_drawdown_pct": float(limit), "action": "halt"})
    trip = stats._strategy.ml_kill_switch
    assert trip["trigger"] == "max_drawdown_pct" and trip["bar"] == int(base._trades["ExitBar"].iloc[k])
    assert trip["drawdown_pct"] == pytest.approx(dd[k]) and trip["closed_trades"] == k + 1
    assert len(stats._trades) == k + 1


def test_kill_switch_never_trips_when_the_path_stays_inside_both_limits(trained_model, later, unswitched):
    _, path = trained_model
    base, _ = unswitched
    losses = pd.Series((base._trades["PnL"] < 0).to_numpy())
    longest = int(losses.groupby((~losses).cumsum()).cumsum().max())
    eq = CASH + base._trades["PnL"].cumsum().to_numpy()
    peak = np.maximum.accumulate(np.r_[CASH, eq])[1:]
    worst = float(100 * ((peak - eq) / peak).max())
    stats = run(later, path, confidence_threshold=0.42,
                kill_switch={"consecutive_losses": longest + 1, "max_drawdown_pct": worst + 0.01})
    assert stats._strategy.ml_kill_switch is None
    pd.testing.assert_frame_equal(stats._trades, base._trades)


def test_trades_closed_before_the_first_scored_pattern_do_not_count(trained_model, eurusd_4h, tmp_path):
    """A folder of versions whose only model was trained up to 2012 scores nothing before 2013: the
    2011-2012 trades are the technical rule's, and their losing run must not trip the switch."""
    import shutil

    _, path = trained_model
    shutil.copytree(path, tmp_path / "versions" / "v0001")
    df = eurusd_4h["2011-01-01":]
    plain = run(df, tmp_path / "versions", confidence_threshold=0.42)
    s = plain._strategy
    armed = int(s.patterns["detection_bar"][s.pattern_decisions["ml_confidence"].notna()].min())
    t = plain._trades
    losses = pd.Series((t["PnL"] < 0).to_numpy())
    run_all = losses.groupby((~losses).cumsum()).cumsum()
    counted = losses & (t["ExitBar"] >= armed).to_numpy()
    run_counted = counted.groupby((~counted).cumsum()).cumsum()
    assert (run_all[t["ExitBar"] < armed] >= 3).any()             # the technical trades lose 3 in a row
    k = int(np.argmax(run_counted.to_numpy() >= 3))
    stats = run(df, tmp_path / "versions", confidence_threshold=0.42, kill_switch={"consecutive_losses": 3})
    assert stats._strategy.ml_kill_switch["bar"] == int(t["ExitBar"].iloc[k]) > armed


def test_the_per_bar_guard_reads_closed_trades_only_when_an_order_executed(trained_model, later, monkeypatch):
    """The kill switch skips ``closed_trades`` while the pending orders are unchanged (``_kill``: per-bar cost);
    a market order whose stop fills and hits within one bar, after a flat bar, must still count."""
    from backtesting import Strategy

    from qml_plugin.features import FeatureExtractor
    from qml_plugin.mixins import MLFilterMixin
    from qml_plugin.patterns import detect_patterns

    _, path = trained_model
    df = later[:"2014-12-31"]
    close = df["Close"].to_numpy()
    X = FeatureExtractor().extract(df, detect_patterns(df)).reset_index(drop=True)

    class Flip(MLFilterMixin, Strategy):        # a market order every 12 bars with a stop 0.05 % away: many
        def init(self):                           # fill and stop out in one bar (backtesting.py re-checks it)
            pass

        def next(self):
            i = len(self.data) - 1
            if i % 12 == 0 and not self.position and not self.orders:
                row = {"pattern_id": f"s{i}", "validity_score": 0.9, **X.iloc[(i // 12) % len(X)].to_dict()}
                if i % 24:
                    self.buy(sl=close[i] * 0.9995, tag=row)
                else:
                    self.sell(sl=close[i] * 1.0005, tag=row)

    def go(guard: bool | int, strategy=Flip, data=df, **kill):   # guard on from the 1st closed trade, never, from n
        monkeypatch.setattr(KillSwitchState, "guard_from", {True: 0, False: NOT_ARMED}.get(guard, guard))
        block = yaml.safe_dump({"enabled": True, "model_path": str(path), "prediction_mode": "filter",
                                "confidence_threshold": 0.0, "kill_switch": kill})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Backtest(data, strategy, cash=CASH).run(ml_config=block)

    on, off = (go(g, consecutive_losses=6, action="halt") for g in (True, False))
    trip = on._strategy.ml_kill_switch
    assert trip is not None and trip == off._strategy.ml_kill_switch
    pd.testing.assert_frame_equal(on._trades, off._trades)
    t = on._trades.iloc[: trip["closed_trades"]]
    assert (t["EntryBar"] == t["ExitBar"]).sum() >= 3 and trip["bar"] == int(t["ExitBar"].iloc[-1])
    # a pending limit order that reverses a trade with a stop only, and brings its own stop and target:
    # the pending count stays 2 (stop + limit -> new stop + target) while a trade closes; identity sees it
    class Reverse(Flip):
        def next(self):
            _reverse_by_limit(self, close, X)

    on, off, later_on = (go(g, Reverse, consecutive_losses=3, action="halt") for g in (True, False, 2))
    trip = on._strategy.ml_kill_switch
    assert trip is not None and trip == off._strategy.ml_kill_switch == later_on._strategy.ml_kill_switch
    assert trip["closed_trades"] > 3                                     # the guard from the 2nd trade on: same
    pd.testing.assert_frame_equal(on._trades, off._trades)
    never_on, never_off = (go(g, data=df.iloc[:1000], consecutive_losses=10**6) for g in (True, False))
    reads = [s._strategy._qml_kill.reads for s in (never_on, never_off)]
    armed_bars = 1000 - never_off._strategy._qml_kill.armed_from
    assert never_on._strategy.ml_kill_switch is None and armed_bars - 2 <= reads[1] <= armed_bars   # every bar
    assert 0 < reads[0] < 0.5 * reads[1], reads


def _reverse_by_limit(self, close, X) -> None:
    """Long 1,000 units with a stop only; while long, a sell limit of 2,000 units just above the close
    (reverses: closes the long, opens a short with a stop and a target); while short, a market buy of 2,000."""
    i = len(self.data) - 1
    row = {"pattern_id": f"r{i}", "validity_score": 0.9, **X.iloc[(i // 12) % len(X)].to_dict()}
    c = close[i]
    if not self.trades and not self.orders:
        self.buy(size=1000, sl=c * 0.97, tag=row)
    elif self.trades and i % 12 == 0 and len(self.orders) == (1 if self.trades[0].is_long else 2):
        if self.trades[0].is_long:
            self.sell(size=2000, limit=c * 1.0005, sl=c * 1.03, tp=c * 0.97, tag=row)
        else:
            self.buy(size=2000, sl=c * 0.97, tag=row)


def test_the_kill_switch_is_not_armed_without_a_model_acting(eurusd_4h):
    block = "enabled: false\nkill_switch: {consecutive_losses: 1, action: halt}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = Backtest(eurusd_4h["2013-06-01":], QMLStrategy, cash=CASH).run(register_patterns=False,
                                                                               ml_config=block)
    assert stats._strategy.ml_kill_switch is None and len(stats._trades) > 5


# ---- the single-market job and its report -------------------------------------------------------------------
def test_the_market_job_scores_banded_trades_at_their_size_and_reports_each_kill_switch(tmp_path, monkeypatch):
    from qml_plugin.config import load_config
    from qml_plugin.job import run_market_job
    from qml_plugin.report import write_report
    from qml_plugin.tradesim import FULL_SIZE, trade_metrics

    monkeypatch.chdir(tmp_path)
    cfg = load_config({"data": {"source": "EURUSD_1h", "resample": "4h", "start": "2007-01-01", "end": "2014-12-31"},
                       "ml": {"enabled": True, "prediction_mode": "filter", "size_bands": [{"min": 0.0, "size": 0.5}],
                              "kill_switch": {"consecutive_losses": 2, "action": "halt"}},
                       "walk_forward": {"min_train_labels": 50, "random_seeds": 20}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = run_market_job(cfg, progress=False)
    kill = res.report_content["kill_switch"]
    assert set(kill) == {"filter", "score_enhancement", "replace"}
    assert all(k is not None and k["action"] == "halt" and k["time"] >= res.period_start for k in kill.values())
    assert any(w.startswith(f"ml.kill_switch tripped at {kill['filter']['time']} (bar {kill['filter']['bar']})")
               for w in res.warnings)
    filt = res.trades["filter"]
    filt = filt[filt["EntryTime"] >= res.period_start]
    assert len(filt) >= 2 and (filt["ExitBar"] <= kill["filter"]["bar"]).all()      # halt: nothing after the trip
    df = load_ohlcv_4h_2007_2014()
    row = res.table.set_index("mode").loc["filter"]
    half = trade_metrics(filt, df, start=res.period_start, end=df.index[-1], size=0.5 * FULL_SIZE)
    full = trade_metrics(filt, df, start=res.period_start, end=df.index[-1])
    assert row["return_pct"] == pytest.approx(half["return_pct"]) != pytest.approx(full["return_pct"])
    text = write_report(tmp_path / "r.html", **res.report_content).read_text()
    assert "<h2>Kill switch</h2>" in text and f"<td>{kill['replace']['bar']}</td>" in text
    assert "2 consecutive losing trades (limit 2); action halt" in text


def load_ohlcv_4h_2007_2014():
    from qml_plugin.config import load_config
    from qml_plugin.data import load_data

    return load_data(load_config({"data": {"source": "EURUSD_1h", "resample": "4h", "start": "2007-01-01",
                                           "end": "2014-12-31"}})["data"])


def test_the_report_says_never_tripped_and_is_unchanged_without_the_key(tmp_path):
    from qml_plugin.report import kill_switch_html, write_report

    table = pd.DataFrame({"mode": ["baseline"], "trades": [3.0]})
    trip = {"bar": 7, "time": pd.Timestamp("2020-01-02"), "action": "baseline",
            "reason": "3 consecutive losing trades (limit 3)"}
    html = kill_switch_html({"filter": None, "replace": trip})
    assert "<td>filter</td><td>never tripped</td>" in html
    assert "<td>replace</td><td>tripped</td><td>7</td><td>2020-01-02 00:00:00</td>" in html
    plain = write_report(tmp_path / "a.html", title="t", table=table, equity={}).read_text()
    assert "Kill switch" not in plain
    assert write_report(tmp_path / "b.html", title="t", table=table, equity={}, kill_switch=None).read_text() == plain


def test_trade_metrics_takes_one_size_per_trade():
    from qml_plugin.tradesim import trade_metrics

    idx = pd.date_range("2024-01-01", periods=96, freq="h")
    bars = pd.DataFrame({"Close": np.r_[np.full(24, 100.0), np.full(24, 110.0), np.full(24, 110.0),
                                        np.full(24, 99.0)]}, index=idx)
    t = pd.DataFrame({"EntryBar": [2, 50], "ExitBar": [30, 80], "EntryPrice": [100.0, 110.0],
                      "ExitPrice": [110.0, 99.0], "Size": [1.0, 1.0]})
    m = trade_metrics(t, bars, size=np.array([1.0, 0.5]))
    assert m["return_pct"] == pytest.approx(100 * (1.10 * (1 - 0.5 * 0.10) - 1))      # +10 %, then half of -10 %
    assert trade_metrics(t, bars, size=1.0)["return_pct"] == pytest.approx(100 * (1.10 * 0.90 - 1))


# ---- vectorbt and the universe refuse the keys --------------------------------------------------------------
@pytest.mark.parametrize("ml,named", [
    ({"size_bands": [{"min": 0.5, "size": 1.0}]}, r"^ml.size_bands is set, but the vectorbt engine"),
    ({"kill_switch": {"consecutive_losses": 3}}, r"^ml.kill_switch is set, but the vectorbt engine"),
    ({"size_bands": [{"min": 0.5, "size": 1.0}], "kill_switch": {"max_drawdown_pct": 10}},
     r"^ml.size_bands and ml.kill_switch are set, but the vectorbt engine \(qml sweep, qml optimize, qml_plugin.vbt\) "
     r"cannot honour them \(.*\); allowed: null there"),
])
def test_vectorbt_refuses_sizing_bands_and_the_kill_switch_naming_them(ml, named, eurusd_4h):
    from qml_plugin import ConfigError
    from qml_plugin.vbt import backtest, sweep
    from qml_plugin.vbt.optimize import optimize

    for run_it, name in ((sweep, "sweep.yaml"), (optimize, "optimize.yaml")):
        cfg = yaml.safe_load((Path(__file__).resolve().parent.parent / "configs" / name).read_text())
        cfg["ml"] = {**(cfg.get("ml") or {}), "enabled": True, **ml}
        with pytest.raises(ConfigError, match=named):
            run_it(cfg, progress=False, write=False)
    with pytest.raises(ConfigError, match=named):
        backtest(eurusd_4h.iloc[:300], ml=ml)


def test_the_universe_run_refuses_them_too():
    from qml_plugin import ConfigError
    from qml_plugin.config import load_config
    from qml_plugin.job import run_universe_job

    cfg = load_config({"ml": {"enabled": True, "kill_switch": {"consecutive_losses": 3}}})
    with pytest.raises(ConfigError, match=r"ml.kill_switch is set, but the universe run cannot honour it \(its mode "
                                          r"rows come from the one-position simulator"):
        run_universe_job(cfg, universe={}, progress=False)
