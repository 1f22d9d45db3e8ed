"""Can ``ml_confidence = 0.7`` be read as "wins 70 % of the time"? The expected calibration error and its noise.

:func:`expected_calibration_error` is the ECE of SPEC §7: sort the predictions, cut them into 10 bins
of (nearly) equal count, and average ``|mean predicted - observed win rate|`` over the bins, weighted
by their size. An ECE is never 0 on a finite sample, even for a perfect model: with 2,243 predictions
a perfectly calibrated model still shows about 0.02 from noise alone. So an ECE means something only
next to that noise; :func:`calibration_report` gives both:

- the bootstrap spread of the observed ECE (resampling the (label, prediction) pairs), and
- the 95th percentile of the ECE of a *perfectly calibrated* model with the same predictions
  (labels simulated as ``Bernoulli(p)``): an ECE below it is as good as calibration can look here.

This module only diagnoses; the calibrator itself (fitted inside each training window, stored as
numbers) is :mod:`.calibrator`.

Binning is by rank (``np.array_split`` of the sorted predictions), so every bin has ``n // bins`` or
``n // bins + 1`` members even when predictions tie (isotonic calibration makes many ties). Simulation
and bootstrap are vectorized (cumulative sums over the sorted order); nothing loops over predictions.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["expected_calibration_error", "calibrated_ece_quantile", "ece_bootstrap", "calibration_report"]


def _check(y: Any, p: Any, bins: int) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=float).ravel()
    p = np.asarray(p, dtype=float).ravel()
    if len(y) != len(p):
        raise ValueError(f"y has {len(y)} labels but p has {len(p)} predictions")
    if np.isnan(y).any() or not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("y must be 0 (loss) / 1 (win) labels without NaN; drop open outcomes first")
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("p must be probabilities in [0, 1] without NaN")
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins must be an integer >= 1, got {bins!r}")
    return y, p


def _bin_edges(n: int, bins: int) -> np.ndarray:
    """Start offsets (and the end) of ``bins`` equal-count bins over ``n`` sorted items."""
    sizes = np.full(min(bins, n), n // min(bins, n))
    sizes[: n % min(bins, n)] += 1
    return np.r_[0, np.cumsum(sizes)]


def _ece_sorted(y_sorted: np.ndarray, p_sorted: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """ECE of each row of ``y_sorted`` (``(k, n)`` or ``(n,)``), predictions sorted, bins given by ``edges``."""
    cy = np.concatenate([np.zeros(y_sorted.shape[:-1] + (1,)), np.cumsum(y_sorted, axis=-1)], axis=-1)
    cp = np.r_[0.0, np.cumsum(p_sorted)]
    gap = np.abs(np.diff(cp[edges]) - np.diff(cy[..., edges], axis=-1))   # |sum p - sum y| per bin
    return gap.sum(axis=-1) / edges[-1]


def expected_calibration_error(y: Any, p: Any, bins: int = 10) -> float:
    """ECE with ``bins`` equal-count bins: ``sum_b (n_b / n) * |mean p_b - mean y_b|``.

    ``y`` are 0/1 outcomes (1 = win), ``p`` the predicted win probabilities (``ml_confidence``).

    >>> expected_calibration_error([0, 0, 1, 1], [0.1, 0.1, 0.9, 0.9], bins=2)
    0.1
    """
    y, p = _check(y, p, bins)
    if len(y) == 0:
        return float("nan")
    order = np.argsort(p, kind="stable")
    return float(np.round(_ece_sorted(y[order], p[order], _bin_edges(len(y), bins)), 15))


def calibrated_ece_quantile(p: Any, *, bins: int = 10, q: float = 0.95, n_sim: int = 2000,
                            seed: int = 0) -> float:
    """The ``q`` quantile of the ECE a perfectly calibrated model would show with these predictions.

    Labels are simulated as ``y ~ Bernoulli(p)`` ``n_sim`` times; the bins are those of ``p`` itself.
    For 2,243 predictions spread like a meta-label model's (mostly 0.2-0.6) this is about 0.035.
    """
    _, p = _check(np.zeros(len(np.ravel(p))), p, bins)
    if len(p) == 0:
        return float("nan")
    p = np.sort(p)
    y = (np.random.default_rng(seed).random((n_sim, len(p))) < p).astype(float)
    return float(np.quantile(_ece_sorted(y, p, _bin_edges(len(p), bins)), q))


def ece_bootstrap(y: Any, p: Any, *, bins: int = 10, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """``n_boot`` bootstrap replicates of the ECE: the (label, prediction) pairs resampled with replacement.

    Their spread is the ECE's sampling noise (how much another sample of the same size would move it).
    """
    y, p = _check(y, p, bins)
    n = len(y)
    rng = np.random.default_rng(seed)
    edges = _bin_edges(n, bins)
    boot = np.empty(n_boot)
    for start in range(0, n_boot, 100):            # 100 replicates at a time keeps memory small
        idx = rng.integers(0, n, (min(100, n_boot - start), n))
        ps = p[idx]
        order = np.argsort(ps, axis=1, kind="stable")
        ys = np.take_along_axis(y[idx], order, axis=1)
        ps = np.take_along_axis(ps, order, axis=1)
        cy = np.concatenate([np.zeros((len(idx), 1)), np.cumsum(ys, axis=1)], axis=1)
        cp = np.concatenate([np.zeros((len(idx), 1)), np.cumsum(ps, axis=1)], axis=1)
        boot[start:start + len(idx)] = np.abs(np.diff(cp[:, edges], axis=1) - np.diff(cy[:, edges], axis=1)).sum(1) / n
    return boot


def calibration_report(y: Any, p: Any, *, bins: int = 10, n_boot: int = 1000, n_sim: int = 2000,
                       seed: int = 0) -> dict[str, float | int]:
    """ECE of out-of-sample predictions, with its bootstrap spread and the calibrated model's 95th percentile.

    Returns ``n``, ``ece``, ``ece_sd`` (bootstrap standard deviation, :func:`ece_bootstrap`),
    ``ece_p05`` / ``ece_p95`` (bootstrap 5-95 % band), ``ece_calibrated_p95``
    (:func:`calibrated_ece_quantile`) and ``within_noise`` (1 when ``ece <= ece_calibrated_p95``: the
    predictions are as calibrated as this sample size can show).

    >>> rng = np.random.default_rng(1)
    >>> p = rng.uniform(0.2, 0.6, 2243)
    >>> rep = calibration_report(rng.random(2243) < p, p)          # a perfectly calibrated model
    >>> round(rep["ece_calibrated_p95"], 2), rep["within_noise"]
    (0.04, 1)
    """
    y, p = _check(y, p, bins)
    n = len(y)
    if n == 0:
        nan = float("nan")
        return {"n": 0, "ece": nan, "ece_sd": nan, "ece_p05": nan, "ece_p95": nan, "ece_calibrated_p95": nan,
                "within_noise": 0}
    ece = expected_calibration_error(y, p, bins)
    boot = ece_bootstrap(y, p, bins=bins, n_boot=n_boot, seed=seed)
    null95 = calibrated_ece_quantile(p, bins=bins, n_sim=n_sim, seed=seed + 1)
    return {"n": int(n), "ece": ece, "ece_sd": float(boot.std(ddof=1)), "ece_p05": float(np.quantile(boot, 0.05)),
            "ece_p95": float(np.quantile(boot, 0.95)), "ece_calibrated_p95": null95,
            "within_noise": int(ece <= null95)}
