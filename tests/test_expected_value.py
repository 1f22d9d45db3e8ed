"""``expected_value`` decides on expected R, ``filter`` on P(win): on a planted universe where the two
disagree (near targets win often but pay little), the first selects the profitable patterns and the
second does not (SPEC §7, issue 12). Model level: walk-forward, out of sample, three heads."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qml_plugin.filter import decide
from qml_plugin.ml import SignalQualityModel
from qml_plugin.ml.walkforward import train_walk_forward


def _universe(n=3000, seed=5):
    """Half the patterns have a near target (rr 0.5, P(win) 0.56: -0.16 R each), half a far one
    (rr 3, P(win) 0.35: +0.40 R each); ``geo_rr`` tells them apart, 4 more features are noise.
    Every pattern is a technical candidate (validity 0.6), so the modes differ only by the model."""
    rng = np.random.default_rng(seed)
    far = rng.random(n) < 0.5
    rr = np.where(far, 3.0, 0.5)
    win = rng.random(n) < np.where(far, 0.35, 0.56)
    r = np.where(win, rr, -1.0)
    X = pd.DataFrame(rng.normal(size=(n, 4)), columns=[f"ctx_noise{i}" for i in range(4)])
    X.insert(0, "geo_rr", rr + rng.normal(0, 0.05, n))
    targets = pd.DataFrame({"label": win.astype(int), "r_multiple": r, "stop_first": (~win).astype(int)})
    known = pd.date_range("2016-01-01", periods=n, freq="12h", tz="UTC")       # UTC instants
    exits = known + pd.to_timedelta(rng.integers(1, 20, n) * 12, unit="h")
    return X, targets, known, exits


@pytest.fixture(scope="module")
def walk_forward(tmp_path_factory):
    X, targets, known, exits = _universe()
    wf = train_walk_forward(X, targets, known, exits, root=tmp_path_factory.mktemp("wf") / "models",
                            every_months=12, min_labels=200, embargo=pd.Timedelta("1D"),
                            model_factory=lambda: SignalQualityModel(n_estimators=60, n_jobs=1))
    return X, targets, known, wf


def test_expected_value_takes_the_paying_patterns_and_filter_takes_the_frequent_winners(walk_forward):
    X, targets, _, wf = walk_forward
    scored = wf.oos_proba.notna().to_numpy()
    assert scored.sum() > 1500 and wf.oos_expected_r is not None
    r = targets["r_multiple"].to_numpy()[scored]
    validity = np.full(scored.sum(), 0.6)
    ev, _ = decide(validity, wf.oos_proba[scored], mode="expected_value", expected_r=wf.oos_expected_r[scored],
                   min_expected_r=0.0)
    filt, _ = decide(validity, wf.oos_proba[scored], mode="filter", confidence_threshold=0.5)
    far = X["geo_rr"].to_numpy()[scored] > 1.5
    # each mode leans to one kind of pattern (half of all are far)
    assert far[ev].mean() > 0.65 and (~far[filt]).mean() > 0.8, (far[ev].mean(), (~far[filt]).mean())
    # filter raises the win rate and loses money; expected_value does the opposite
    win = r > 0
    assert win[filt].mean() > win.mean() + 0.05 and r[filt].mean() < 0
    assert r[ev].mean() > 0.1 and win[ev].mean() < win.mean()
    # and expected_value beats chance: random subsets of the same size rarely do as well
    rng = np.random.default_rng(0)
    band = [r[rng.choice(len(r), ev.sum(), replace=False)].mean() for _ in range(500)]
    assert np.mean(np.array(band) >= r[ev].mean()) < 0.01


def test_walk_forward_trains_three_calibrated_heads_inside_each_window(walk_forward):
    _, _, known, wf = walk_forward
    assert wf.fits >= 4 and all(m.heads_ == ["confidence", "expected_r", "stop_risk"] for m in wf.models)
    for model in wf.models:
        assert model.trained_on_end_.tz is not None                    # UTC instants throughout
        cal = model.calibrations_["confidence"]
        assert cal is not None and cal["n_samples"] < model.training_samples_
    # every score comes from a model whose labels were all known a day before the pattern
    ends = pd.DatetimeIndex([m.trained_on_end_ for m in wf.models])
    first = known[wf.oos_proba.notna().to_numpy()].min()
    assert ends.min() < first - pd.Timedelta("1D")
    assert {"ece", "ece_uncalibrated", "auc"} <= set(wf.metrics)
