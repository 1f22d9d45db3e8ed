"""The ML decision rule (four modes) and the out-of-sample guard, independent of any engine.

Both :mod:`qml_plugin.mixins` (backtesting.py) and :mod:`qml_plugin.vbt` (vectorbt) call
:func:`decide`, so ``filter``, ``score_enhancement``, ``replace`` and ``expected_value`` mean
exactly the same thing in either engine. Inputs are arrays over patterns; nothing here loops over bars.

Without ML a pattern is traded when ``validity_score >= min_score`` (the technical rule). The modes
change that rule (SPEC §7):

==================  ========================================================  ==================
mode                traded when                                               mode's score
==================  ========================================================  ==================
(ML off)            ``validity_score >= min_score``                           validity_score
filter              technical rule **and** ``ml_confidence >= threshold``     ml_confidence
score_enhancement   ``(1-w) * validity_score + w * ml_confidence >= min_score``  the blend
replace             ``ml_confidence >= threshold``                            ml_confidence
expected_value      technical rule **and** ``expected_r > min_expected_r``    expected_r
==================  ========================================================  ==================

``expected_value`` decides on the model's expected R-multiple (its ``expected_r`` head), whatever
the win probability: a near target wins often but may pay little (SPEC §7). Its score, in R,
ranks two patterns of one bar.

A pattern with no admissible model (NaN ``ml_confidence``, or NaN ``expected_r`` in
``expected_value``, e.g. before the first walk-forward model exists) falls back to the technical
rule in every mode, so before the first model every mode equals the baseline.

    >>> take, score = decide([0.6, 0.6, 0.4], [0.7, 0.3, 0.9], mode="filter")
    >>> take.tolist()
    [True, False, False]
    >>> decide([0.6, 0.6, 0.4], [0.7, 0.7, 0.9], mode="expected_value", expected_r=[0.2, -0.1, 0.5])[0].tolist()
    [True, False, False]

``size_by_score`` turns the mode's score into a fraction of equity: ``clip(score, 0.01, 0.99)``
(backtesting.py reads a size in (0, 1) as a fraction of available equity).

**Sizing bands** (``ml.size_bands``, SPEC §13) act on what the mode takes: :func:`size_band` gives
each pattern the size of the highest band its ``ml_confidence`` reaches, as a fraction of the order
size the strategy asked for, and 0 (skip) below the lowest band; :func:`band_decisions` names the
outcome ``take`` / ``reduce_size`` / ``skip``, the three words the prediction log records.

    >>> bands = [{"min": 0.6, "size": 1.0}, {"min": 0.4, "size": 0.5}]
    >>> size_band([0.75, 0.6, 0.5, 0.39, float("nan")], bands).tolist()
    [1.0, 1.0, 0.5, 0.0, 1.0]
    >>> band_decisions([True, True, True, False], [1.0, 0.5, 0.0, 1.0]).tolist()
    ['take', 'reduce_size', 'skip', 'skip']

**Out-of-sample guard.** A model stores ``trained_on_end``: the last exit time of its training
data. It may score a pattern only if ``trained_on_end < detection_time - embargo``.
:func:`admissible_model` (from :mod:`qml_plugin.ml.guard`) picks, per pattern, the latest model that passes.
"""
from __future__ import annotations

import numpy as np

from .config import PREDICTION_MODES
from .errors import ConfigError
from .ml.guard import admissible_model

__all__ = ["decide", "size_fraction", "size_band", "band_decisions", "DECISIONS", "refuse_unsupported",
           "admissible_model", "random_filter_mask"]

DECISIONS = ("take", "reduce_size", "skip")
"""The three decisions of SPEC §13, as the prediction log (``ml_predictions.decision``) stores them."""


def decide(validity_score, ml_confidence, *, mode: str | None, min_score: float = 0.5,
           ml_weight: float = 0.3, confidence_threshold: float = 0.5, expected_r=None,
           min_expected_r: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Which patterns to trade, and each pattern's score under ``mode`` (None = ML off).

    Returns ``(take, score)``, two arrays aligned with the inputs. ``expected_r`` (the model's
    ``predict_expected_r``, in R) is needed by ``mode="expected_value"`` only.
    """
    v = np.asarray(validity_score, dtype=float)
    technical = v >= min_score
    if mode is None:
        return technical, v
    if mode not in PREDICTION_MODES:
        raise ConfigError(f"ml.prediction_mode = {mode!r} is not allowed; allowed: {', '.join(PREDICTION_MODES)}")
    c = np.broadcast_to(np.asarray(ml_confidence, dtype=float), v.shape)
    scored = ~np.isnan(c)
    if mode == "expected_value":
        if expected_r is None:
            raise ConfigError("ml.prediction_mode = 'expected_value' needs the model's expected_r; the model has "
                              "no expected_r head (train it on a targets frame: label, r_multiple, stop_first)")
        r = np.broadcast_to(np.asarray(expected_r, dtype=float), v.shape)
        scored = ~np.isnan(r)
        take, score = technical & (r > min_expected_r), r
    elif mode == "filter":
        take, score = technical & (c >= confidence_threshold), c
    elif mode == "replace":
        take, score = c >= confidence_threshold, c
    else:
        score = (1.0 - ml_weight) * v + ml_weight * c
        take = score >= min_score
    take = np.where(scored, take, technical)
    score = np.where(scored, score, v)
    return take, score


def size_fraction(score) -> np.ndarray:
    """Order size as a fraction of equity for ``size_by_score``: the score clipped to [0.01, 0.99]."""
    return np.clip(np.nan_to_num(np.asarray(score, dtype=float), nan=0.01), 0.01, 0.99)


def size_band(ml_confidence, bands) -> np.ndarray:
    """Each pattern's order size under ``ml.size_bands``, as a fraction of the size the strategy asked for.

    ``bands`` is the validated list ``[{min, size}, ...]`` (``min`` strictly decreasing; dicts or
    objects with ``.min`` / ``.size``). A pattern gets the ``size`` of the highest band whose ``min``
    its ``ml_confidence`` reaches (``>=``), and 0.0 below the lowest band (skip it). A NaN confidence
    (no admissible model yet, so the technical rule decides, as before the first model) gets 1.0:
    the baseline's own size.
    """
    mins = np.asarray([b["min"] if isinstance(b, dict) else b.min for b in bands], dtype=float)[::-1]
    sizes = np.asarray([b["size"] if isinstance(b, dict) else b.size for b in bands], dtype=float)[::-1]
    c = np.asarray(ml_confidence, dtype=float)
    k = np.searchsorted(mins, np.nan_to_num(c, nan=-np.inf), side="right") - 1   # mins ascending here
    out = np.where(k >= 0, sizes[np.clip(k, 0, None)], 0.0)
    return np.where(np.isnan(c), 1.0, out)


def band_decisions(take, band_size) -> np.ndarray:
    """``take`` (full size), ``reduce_size`` (a band below 1) or ``skip`` (the mode, or the bands, skip it)."""
    take = np.asarray(take, dtype=bool)
    f = np.asarray(band_size, dtype=float)
    return np.where(~take | (f <= 0), "skip", np.where(f < 1.0, "reduce_size", "take")).astype(object)


def refuse_unsupported(ml, *, engine: str, why: str) -> None:
    """A :class:`ConfigError` naming ``ml.size_bands`` / ``ml.kill_switch`` when ``ml`` sets them and ``engine``
    cannot honour them (``why`` says why); nothing when neither is set. ``ml`` is an ``MLConfig`` or a dict."""
    get = ml.get if isinstance(ml, dict) else (lambda k: getattr(ml, k, None))
    keys = [f"ml.{k}" for k in ("size_bands", "kill_switch") if get(k) is not None]
    if keys:
        raise ConfigError(f"{' and '.join(keys)} {'is' if len(keys) == 1 else 'are'} set, but {engine} cannot honour "
                          f"{'it' if len(keys) == 1 else 'them'} ({why}); allowed: null there (they apply in "
                          "backtesting.py: the mixins, and qml run on one market)")


def random_filter_mask(candidates: np.ndarray, pass_rate: float, seed: int) -> np.ndarray:
    """Keep a random ``pass_rate`` share of the ``candidates`` (a boolean mask): chance's version of a filter."""
    candidates = np.asarray(candidates, dtype=bool)
    idx = np.flatnonzero(candidates)
    k = int(round(pass_rate * len(idx)))
    keep = np.random.default_rng(seed).choice(idx, size=k, replace=False) if k else np.empty(0, int)
    out = np.zeros_like(candidates)
    out[keep] = True
    return out
