"""Sizing bands and the kill switch (SPEC §13) in real backtesting.py runs of QMLStrategy.

The model is the session's real XGBoost model trained on EURUSD 4h up to 2012 (``trained_model``); it
scores the 2013+ patterns out of sample. Its confidences (about 0.36 to 0.47) are known after the run
(``pattern_decisions``), so each test works out by hand, from the trades of a run without the new
keys, what the bands or the switch must do, and checks the run with them.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import yaml
from backtesting import Backtest

from qml_plugin.filter import band_decisions, size_band
from qml_plugin.mixins._kill import KillSwitchState
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


def test_the_kill_switch_is_not_armed_without_a_model_acting(eurusd_4h):
    block = "enabled: false\nkill_switch: {consecutive_losses: 1, action: halt}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = Backtest(eurusd_4h["2013-06-01":], QMLStrategy, cash=CASH).run(register_patterns=False,
                                                                               ml_config=block)
    assert stats._strategy.ml_kill_switch is None and len(stats._trades) > 5
