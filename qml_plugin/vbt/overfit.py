"""Overfitting, said out loud: the deflated Sharpe ratio of a row and the PBO of a whole grid.

The best row of a big grid is the luckiest as much as the best. Two published statistics say how
lucky:

- :func:`deflated_sharpe` (Bailey and López de Prado, "The Deflated Sharpe Ratio", *Journal of
  Portfolio Management* 40(5), 2014): the probability that a row's true Sharpe ratio is above zero
  once we account for how many combinations were tried, how much their Sharpes vary, the sample
  length and the returns' skew and kurtosis. The benchmark is the Sharpe the best of ``n_trials``
  skill-less trials would show, ``SR0 = sqrt(V) * ((1 - g) * Z(1 - 1/N) + g * Z(1 - 1/(N e)))``
  (``g`` the Euler-Mascheroni constant, ``Z`` the standard normal quantile), and
  ``DSR = Phi((SR - SR0) * sqrt(T - 1) / sqrt(1 - skew * SR + (kurt - 1) / 4 * SR**2))``;
- :func:`pbo` (Bailey, Borwein, López de Prado and Zhu, "The Probability of Backtest Overfitting",
  *Journal of Computational Finance* 20(4), 2017): combinatorially symmetric cross-validation. The
  days are cut into ``S`` blocks; for each of the ``C(S, S/2)`` ways to pick half of them as
  in-sample, the in-sample-best combination's out-of-sample Sharpe is ranked among all
  combinations' out-of-sample Sharpes; PBO is the share of splits where it lands in the bottom
  half (logit of its relative rank <= 0).

Sharpes here are per observation (daily, not annualized), as both papers define them. The normal
distribution is scipy's; the combinations are ``itertools``'.
"""
from __future__ import annotations

import itertools

import numpy as np
from numba import njit
from scipy.stats import norm

__all__ = ["expected_max_sharpe", "deflated_sharpe", "pbo", "pbo_from_sums", "block_sums", "EULER_GAMMA", "BLOCKS"]

EULER_GAMMA = 0.5772156649015329
"""The Euler-Mascheroni constant of the expected-maximum formula."""

BLOCKS = 16
"""``S``, the number of time blocks of the CSCV (SPEC §9)."""


def expected_max_sharpe(n_trials: int, sr_variance: float) -> float:
    """``SR0``: the best Sharpe expected of ``n_trials`` skill-less trials whose Sharpes vary by ``sr_variance``.

        >>> round(expected_max_sharpe(100, 0.5 / 250), 4)        # the paper's example, per day
        0.1132
    """
    if n_trials <= 1 or not np.isfinite(sr_variance) or sr_variance <= 0:
        return 0.0
    g = EULER_GAMMA
    return float(np.sqrt(sr_variance) * ((1 - g) * norm.ppf(1 - 1 / n_trials)
                                         + g * norm.ppf(1 - 1 / (n_trials * np.e))))


def deflated_sharpe(sr, *, n_obs, skew, kurtosis, n_trials: int, sr_variance: float) -> np.ndarray:
    """Deflated Sharpe ratio of each observed per-day Sharpe ``sr`` (arrays broadcast), in [0, 1].

    ``n_obs`` returns per row, ``skew`` and ``kurtosis`` (not excess: 3 for a normal) of those
    returns, ``n_trials`` combinations tried, ``sr_variance`` the variance of their Sharpes. NaN
    where ``sr`` is NaN (no trades, a flat equity) or the moments leave the formula undefined.

        >>> float(np.round(deflated_sharpe(2.5 / np.sqrt(250), n_obs=1250, skew=-3, kurtosis=10,
        ...                                n_trials=100, sr_variance=0.5 / 250), 4))
        0.9004
    """
    sr = np.asarray(sr, float)
    sr0 = expected_max_sharpe(n_trials, sr_variance)
    with np.errstate(invalid="ignore", divide="ignore"):
        denom = 1.0 - np.asarray(skew, float) * sr + (np.asarray(kurtosis, float) - 1.0) / 4.0 * sr ** 2
        z = (sr - sr0) * np.sqrt(np.asarray(n_obs, float) - 1.0) / np.sqrt(denom)
    return np.where(np.isfinite(z), norm.cdf(z), np.nan)


@njit(cache=True)
def _sharpe(s1, s2, n):
    mean = s1 / n
    var = (s2 - s1 * s1 / n) / (n - 1)
    if not var > 1e-30:
        return 0.0                                  # a flat combination scores 0, not NaN
    return mean / np.sqrt(var)


@njit(cache=True)
def _logit_of_best(sr_in, sr_out):
    best = 0
    for j in range(sr_in.shape[0]):
        if sr_in[j] > sr_in[best]:
            best = j
    x = sr_out[best]
    below = 0
    ties = 0
    for j in range(sr_out.shape[0]):
        if sr_out[j] < x:
            below += 1
        elif sr_out[j] == x:
            ties += 1
    w = (below + (ties + 1) / 2.0) / (sr_out.shape[0] + 1.0)
    return np.log(w / (1.0 - w))


@njit(cache=True)
def _cscv_nb(s1, s2, cnt, combos):
    """Logit of the in-sample best's out-of-sample relative rank, for every split in ``combos``.

    ``combos`` is ``itertools.combinations(range(S), S // 2)`` in its own (lexicographic) order, in
    which split ``i``'s complement is split ``-1 - i``: each pair of halves is summed once and serves
    as in-sample and as out-of-sample.
    """
    n = s1.shape[0]                                 # combinations x blocks: one row per combination
    tot1 = s1.sum(axis=1)
    tot2 = s2.sum(axis=1)
    total = cnt.sum()
    m = combos.shape[0]
    half = combos.shape[1]
    out = np.empty(m)
    sr_a = np.empty(n)
    sr_b = np.empty(n)
    for c in range(m // 2):
        n_a = 0.0
        for b in range(half):
            n_a += cnt[combos[c, b]]
        for j in range(n):
            a1 = 0.0
            a2 = 0.0
            for b in range(half):
                a1 += s1[j, combos[c, b]]
                a2 += s2[j, combos[c, b]]
            sr_a[j] = _sharpe(a1, a2, n_a)
            sr_b[j] = _sharpe(tot1[j] - a1, tot2[j] - a2, total - n_a)
        out[c] = _logit_of_best(sr_a, sr_b)
        out[m - 1 - c] = _logit_of_best(sr_b, sr_a)
    return out


def block_sums(returns, *, blocks: int = BLOCKS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per time block, the sum and the sum of squares of ``returns`` (days, or days x combinations), and the days.

    All that CSCV needs of a combination's daily returns, so a sweep's work unit sends 2 x ``blocks``
    numbers per combination instead of every day's return. The days are cut into ``blocks`` near-equal
    consecutive blocks (``numpy.array_split``); NaN returns count as 0.

        >>> s1, s2, days = block_sums(np.array([0.01, -0.01, 0.02, 0.0]), blocks=2)
        >>> s1.round(6).tolist(), days.tolist()
        ([0.0, 0.02], [2, 2])
    """
    r = np.nan_to_num(np.asarray(returns, float))
    days = np.array([len(p) for p in np.array_split(np.arange(r.shape[0]), blocks)], dtype=np.int64)
    if r.shape[0] < blocks:
        empty = np.zeros((blocks, *r.shape[1:]))
        return empty, empty.copy(), days
    starts = np.r_[0, np.cumsum(days)[:-1]]
    return np.add.reduceat(r, starts, axis=0), np.add.reduceat(r * r, starts, axis=0), days


def pbo_from_sums(s1: np.ndarray, s2: np.ndarray, days: np.ndarray) -> tuple[float, np.ndarray]:
    """:func:`pbo` from :func:`block_sums` (``s1``, ``s2``: blocks x combinations; ``days`` per block)."""
    s1, s2 = np.asarray(s1, float), np.asarray(s2, float)
    blocks, n = s1.shape
    if n < 2 or blocks < 2 or blocks % 2 or int(np.sum(days)) < blocks:
        return float("nan"), np.empty(0)
    combos = np.array(list(itertools.combinations(range(blocks), blocks // 2)), dtype=np.int64)
    logits = _cscv_nb(np.ascontiguousarray(s1.T), np.ascontiguousarray(s2.T), np.asarray(days, float), combos)
    return float((logits <= 0).mean()), logits


def pbo(returns: np.ndarray, *, blocks: int = BLOCKS) -> tuple[float, np.ndarray]:
    """Probability of backtest overfitting of the columns of ``returns`` (days x combinations).

    Returns ``(pbo, logits)``: ``logits`` holds, per CSCV split, ``log(w / (1 - w))`` of the
    in-sample-best column's relative out-of-sample rank ``w`` (rank / (N + 1), ties averaged); PBO
    is the share of logits <= 0. NaN with fewer than two columns or fewer days than blocks. Flat
    columns score a Sharpe of 0; ties of the in-sample best go to the first column. The same as
    ``pbo_from_sums(*block_sums(returns))``.

        >>> rng = np.random.default_rng(0)
        >>> noise = rng.normal(0, 0.01, (1600, 20))
        >>> edge = noise.copy(); edge[:, 3] += 0.004                 # one column has a real edge
        >>> bool(pbo(noise)[0] > 0.3), pbo(edge)[0]
        (True, 0.0)
    """
    r = np.asarray(returns, float)
    if r.ndim != 2 or r.shape[1] < 2 or r.shape[0] < blocks or blocks < 2 or blocks % 2:
        return float("nan"), np.empty(0)
    return pbo_from_sums(*block_sums(r, blocks=blocks))
