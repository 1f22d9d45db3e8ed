"""Deflated Sharpe ratio and PBO against their papers' definitions and worked example."""
from __future__ import annotations

import numpy as np
import pytest

from qml_plugin.vbt.overfit import deflated_sharpe, expected_max_sharpe, pbo


def test_dsr_matches_the_worked_example_of_bailey_and_lopez_de_prado_2014():
    # "The Deflated Sharpe Ratio" (J. Portfolio Management 40(5), 2014), numerical example: N = 100 trials whose
    # annualized Sharpes have variance 1/2, the best an annualized 2.5, T = 1250 daily returns (five years) with
    # skewness -3 and kurtosis 10. The paper finds SR0 = 0.1132 (per day) and DSR = 0.9004.
    per_year = 250
    sr0 = expected_max_sharpe(100, 0.5 / per_year)
    assert sr0 == pytest.approx(0.1132, abs=5e-5)
    dsr = deflated_sharpe(2.5 / np.sqrt(per_year), n_obs=1250, skew=-3.0, kurtosis=10.0, n_trials=100,
                          sr_variance=0.5 / per_year)
    assert round(float(dsr), 3) == 0.900 and float(dsr) == pytest.approx(0.9004, abs=5e-5)


def test_dsr_is_the_probabilistic_sharpe_against_zero_with_one_trial_and_falls_with_more_trials():
    from scipy.stats import norm

    sr, t = 0.05, 1000
    one = deflated_sharpe(sr, n_obs=t, skew=0.0, kurtosis=3.0, n_trials=1, sr_variance=0.001)
    assert one == pytest.approx(norm.cdf(sr * np.sqrt(t - 1) / np.sqrt(1 + sr ** 2 / 2)))
    many = [deflated_sharpe(sr, n_obs=t, skew=0.0, kurtosis=3.0, n_trials=n, sr_variance=0.001)
            for n in (10, 100, 1000)]
    assert one > many[0] > many[1] > many[2]
    assert np.isnan(deflated_sharpe(np.nan, n_obs=t, skew=0, kurtosis=3, n_trials=5, sr_variance=0.001))


def test_pbo_is_about_a_half_on_noise_and_near_zero_when_one_combination_has_a_planted_edge():
    rng = np.random.default_rng(42)
    noise = rng.normal(0, 0.01, (2000, 50))                       # 50 skill-less combinations, 2,000 days
    p_noise, logits = pbo(noise)
    assert p_noise >= 0.4 and len(logits) == 12_870               # C(16, 8) splits
    planted = noise.copy()
    planted[:, 17] += 0.003                                      # one combination exploits a real effect
    assert pbo(planted)[0] <= 0.1


def test_pbo_needs_two_combinations_and_enough_days():
    assert np.isnan(pbo(np.zeros((100, 1)))[0]) and np.isnan(pbo(np.zeros((10, 5)))[0])
