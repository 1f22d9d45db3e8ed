"""Drift detection (SPEC §8): PSI and KS per feature, BH-corrected model flag, score drift.

The two headline numbers are measured here on 170 standard-normal features, 2000 reference rows
against 1000 recent rows: a 0.5 sd shift in 3 features is flagged with exactly those 3 on top, and
with no shift the model-level flag fires in at most 5 of 100 seeds.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from qml_plugin.config import load_config
from qml_plugin.ml.drift import (
    DriftThresholds,
    bin_edges,
    bin_shares,
    detect_drift,
    ks_two_sample,
    population_stability_index,
    score_psi,
    score_reference,
)

COLUMNS = [f"f{i:03d}" for i in range(170)]
PLANTED = ["f007", "f050", "f120"]


def frames(seed, shift=0.0, shifted=(), n_ref=2000, n_recent=1000):
    rng = np.random.default_rng(seed)
    ref = pd.DataFrame(rng.normal(size=(n_ref, len(COLUMNS))), columns=COLUMNS)
    recent = pd.DataFrame(rng.normal(size=(n_recent, len(COLUMNS))), columns=COLUMNS)
    recent[list(shifted)] += shift
    return ref, recent


def test_config_defaults_are_the_drift_defaults():
    learn = load_config(None)["learn"]
    assert DriftThresholds.from_config(learn) == DriftThresholds()
    assert learn["psi_threshold"] == 0.1 and learn["min_drifting_features"] == 3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_half_sd_shift_in_three_of_170_features_is_flagged_with_them_on_top(seed):
    report = detect_drift(*frames(seed, 0.5, PLANTED))
    assert report.flagged
    assert sorted(report.top(3).index) == PLANTED
    assert sorted(report.drifting) == PLANTED
    assert "3 features drift" in report.reasons[0]


def test_same_distribution_raises_the_flag_in_at_most_5_percent_of_100_seeds():
    flags = [detect_drift(*frames(1000 + seed)).flagged for seed in range(100)]
    assert sum(flags) <= 5


def test_a_tiny_shift_is_significant_for_ks_but_does_not_drift_below_the_psi_threshold():
    rng = np.random.default_rng(3)
    ref = pd.DataFrame({"x": rng.normal(size=50_000)})
    recent = pd.DataFrame({"x": rng.normal(0.08, 1, size=50_000)})
    row = detect_drift(ref, recent).features.loc["x"]
    assert row.ks_qvalue < 1e-6 and row.psi < 0.1 and not row.drifting


def test_ks_statistic_equals_scipy_and_its_pvalue_is_the_conservative_limiting_one():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(300, 6)), rng.normal(0.2, 1, size=(150, 6))
    a[:, 1], b[:, 1] = np.round(a[:, 1]), np.round(b[:, 1])          # ties
    a[::5, 2], b[::3, 3] = np.nan, np.nan                            # NaN left out
    a[:, 4], b[:, 4] = 1.0, 1.0                                      # constant
    b[:, 5] = np.nan                                                 # nothing recent
    d, p = ks_two_sample(a, b)
    for j in range(5):
        x, y = a[:, j][~np.isnan(a[:, j])], b[:, j][~np.isnan(b[:, j])]
        ref = stats.ks_2samp(x, y, method="asymp")
        assert d[j] == pytest.approx(ref.statistic, abs=1e-12)
        limiting = stats.kstwobign.sf(d[j] * np.sqrt(len(x) * len(y) / (len(x) + len(y))))
        assert p[j] == pytest.approx(limiting, rel=1e-12)
        assert ref.pvalue - 1e-12 <= p[j] <= ref.pvalue * 1.5 + 1e-12
    assert (d[5], p[5]) == (0.0, 1.0)


def test_psi_puts_nan_in_its_own_bin():
    rng = np.random.default_rng(5)
    ref = rng.normal(size=(2000, 1))
    ref[::4] = np.nan
    same = rng.normal(size=(1000, 1))
    same[::4] = np.nan
    more_nan = rng.normal(size=(1000, 1))
    more_nan[::2] = np.nan
    assert population_stability_index(ref, same)[0] < 0.05
    assert population_stability_index(ref, more_nan)[0] > 0.2
    edges = bin_edges(ref)
    assert np.allclose(edges[:, 0], np.nanquantile(ref[:, 0], np.linspace(0, 1, 11)[1:-1]))
    shares = bin_shares(ref, edges)[0]
    assert shares[-1] == pytest.approx(0.25) and shares.sum() == pytest.approx(1.0, abs=1e-3)


def test_constant_feature_has_zero_psi_until_its_value_changes():
    ref = np.full((500, 1), 3.0)
    assert population_stability_index(ref, np.full((200, 1), 3.0))[0] == 0.0
    moved = population_stability_index(ref, np.full((200, 1), 4.0))[0]
    assert np.isfinite(moved) and moved > 1.0


def test_empty_bins_get_epsilon_so_psi_stays_finite():
    rng = np.random.default_rng(6)
    psi = population_stability_index(rng.normal(size=(1000, 2)), np.full((100, 2), 10.0))
    assert np.isfinite(psi).all() and (psi > 5).all()


def test_discrete_feature_with_repeated_quantile_edges_is_stable():
    rng = np.random.default_rng(7)
    ref = rng.integers(0, 2, size=(2000, 1)).astype(float)
    recent = rng.integers(0, 2, size=(1000, 1)).astype(float)
    assert population_stability_index(ref, recent)[0] < 0.01


def test_score_drift_compares_recent_scores_with_the_stored_reference_histogram():
    rng = np.random.default_rng(8)
    ref = score_reference(rng.beta(2, 2, 400))
    assert len(ref["edges"]) == 9 and len(ref["shares"]) == 11
    assert score_psi(ref, rng.beta(2, 2, 300)) < 0.1
    assert score_psi(ref, rng.beta(5, 2, 300)) > 0.2
    ref_f, recent_f = frames(9, n_ref=300, n_recent=300)
    report = detect_drift(ref_f, recent_f, score_ref=ref, recent_scores=rng.beta(5, 2, 300))
    assert report.flagged and "score PSI" in report.reasons[0] and not report.drifting


def test_report_summary_and_dict_list_the_top_features():
    report = detect_drift(*frames(10, 0.5, PLANTED))
    d = report.to_dict(top=5)
    assert d["flagged"] and d["n_drifting"] == 3 and len(d["top_features"]) == 5
    assert {t["feature"] for t in d["top_features"][:3]} == set(PLANTED)
    text = report.summary(5)
    assert "FLAGGED" in text and all(name in text for name in PLANTED)
