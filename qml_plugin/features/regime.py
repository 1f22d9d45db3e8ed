"""Market regime: one causal rule that labels every bar ``trending``, ``ranging`` or ``volatile``.

The rule (constants in :data:`REGIME_RULE`), evaluated at each bar ``t`` from bars ``<= t``:

1. **volatile** when ATR14/Close is in the top decile of its own last 250 bars
   (percentile >= 0.9; from 50 bars of history on) - a volatility shock overrides everything;
2. else **trending** when ADX14 >= 25 *and* the 20-bar efficiency ratio >= 0.3
   (a strong directional move that is also an efficient one);
3. else **ranging**.

Bars where an input is not yet defined (the first ~30 bars) have no label (NaN). The same codes
feed the ``regime_`` features (one-hot, time in state, recent frequencies) and the
``regime_at_detection`` column of :meth:`FeatureExtractor.extract`, so the registry's label and the
model's inputs always agree. The other ``regime_`` features are the rule's inputs and other classic
trend/range diagnostics (efficiency ratios, a variance-ratio Hurst estimate, choppiness,
autocorrelation, moving-average alignment).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import kernels
from .catalog import Add
from .indicators import Bars, div, roll, shift

__all__ = ["REGIMES", "REGIME_RULE", "regime_labels", "regime_codes", "regime_features"]

REGIMES = ("ranging", "trending", "volatile")
"""Regime labels; a bar's code is its position here (0 ranging, 1 trending, 2 volatile)."""

REGIME_RULE = {"vol_window": 250, "vol_min_periods": 50, "vol_pctile": 0.9, "adx": 25.0,
               "efficiency_window": 20, "efficiency": 0.3}
"""Thresholds of the regime rule, e.g. ``REGIME_RULE["adx"]`` is the ADX14 level of a trend."""


def regime_codes(b: Bars) -> np.ndarray:
    """Regime code of every bar (0 ranging, 1 trending, 2 volatile, NaN before the inputs exist)."""
    return b.memo("regime", lambda: _codes(b))


def _codes(b: Bars) -> np.ndarray:
    r = REGIME_RULE
    vol_rank = _vol_rank(b)
    adx = b.dmi(14)[2]
    er = b.efficiency(r["efficiency_window"])
    code = np.where(vol_rank >= r["vol_pctile"], 2.0,
                    np.where((adx >= r["adx"]) & (er >= r["efficiency"]), 1.0, 0.0))
    code[np.isnan(vol_rank) | np.isnan(adx) | np.isnan(er)] = np.nan
    return code


def _vol_rank(b: Bars) -> np.ndarray:
    return b.natr_rank(REGIME_RULE["vol_window"], REGIME_RULE["vol_min_periods"])


def regime_labels(ohlcv: pd.DataFrame) -> pd.Series:
    """The regime of every bar as a categorical Series (``trending`` / ``ranging`` / ``volatile``).

    Causal: the label of bar ``t`` is the same on ``ohlcv[:t+1]``. NaN during the warm-up.

        >>> from qml_plugin.data import load_ohlcv
        >>> sorted(regime_labels(load_ohlcv("SPY_1d")).dropna().unique())
        ['ranging', 'trending', 'volatile']
    """
    code = regime_codes(Bars(ohlcv))
    cat = pd.Categorical.from_codes(np.where(np.isnan(code), -1, code).astype(np.int8), categories=REGIMES)
    return pd.Series(cat, index=ohlcv.index, name="regime")


def regime_features(b: Bars, add: Add) -> None:
    """``regime_``: the regime label (one-hot), how long it has held, and the rule's inputs."""
    for code, name in enumerate(REGIMES):
        add(f"regime_{name}", f"1 if the regime rule labels this bar {name}, else 0 (NaN in warm-up)",
            lambda code=code: np.where(np.isnan(regime_codes(b)), np.nan, regime_codes(b) == code))
    add("regime_bars_in_state", "bars since the regime label last changed (1 on a change)",
        lambda: kernels.bars_in_state(regime_codes(b)))
    for code, name in ((1, "trending"), (2, "volatile")):
        add(f"regime_{name}_frac_50", f"fraction of the last 50 bars labelled {name}",
            lambda code=code: roll(np.where(np.isnan(regime_codes(b)), np.nan, regime_codes(b) == code),
                                   50).mean().to_numpy())
    add("regime_atr_pctile_250", "rule input: percentile of ATR14/Close among the last 250 bars (volatile >= 0.9)",
        lambda: _vol_rank(b))
    add("regime_trend_score", "rule input: min(ADX14 / 25, efficiency_20 / 0.3); >= 1 means trend conditions hold",
        lambda: np.minimum(b.dmi(14)[2] / REGIME_RULE["adx"], b.efficiency(20) / REGIME_RULE["efficiency"]))
    for w in (10, 20, 50):
        add(f"regime_efficiency_{w}", f"Kaufman efficiency ratio over {w} bars: |net move| / path, 0..1",
            lambda w=w: b.efficiency(w))
    add("regime_adx_change_5", "ADX14 minus ADX14 5 bars ago (rising = strengthening trend)",
        lambda: b.dmi(14)[2] - shift(b.dmi(14)[2], 5))
    for k, w in ((4, 100), (16, 200)):
        add(f"regime_hurst_{k}_{w}",
            f"Hurst-like exponent from the variance ratio of {k}-bar to 1-bar log returns over {w} bars "
            "(0.5 random walk, > 0.5 trending, < 0.5 mean-reverting)",
            lambda k=k, w=w: _hurst(b, k, w))
    add("regime_choppiness_14",
        "Choppiness index(14): 100 log10(sum TR / range) / log10(14); low trend, high chop (100 flat)",
        lambda: 100.0 * np.log10(div(roll(b.true_range(), 14).sum().to_numpy(),
                                     b.highest(14) - b.lowest(14), fill=14.0)) / np.log10(14.0))
    add("regime_autocorr_50", "lag-1 autocorrelation of 1-bar log returns over 50 bars (0 if flat)",
        lambda: _autocorr(b, 50))
    add("regime_ma_alignment", "+1 if SMA20 > SMA50 > SMA200, -1 if SMA20 < SMA50 < SMA200, else 0",
        lambda: _alignment(b))


def _hurst(b: Bars, k: int, w: int) -> np.ndarray:
    var_k = roll(b.logret(k), w).var().to_numpy()
    var_1 = roll(b.logret(1), w).var().to_numpy()
    ratio = div(var_k, k * var_1)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = 0.5 + 0.5 * np.log(ratio) / np.log(k)
    h[(var_1 == 0) & (var_k == 0)] = 0.5
    return np.clip(h, 0.0, 1.0)


def _autocorr(b: Bars, w: int) -> np.ndarray:
    r = pd.Series(b.logret(1), copy=False)
    out = r.rolling(w).corr(r.shift(1)).to_numpy().copy()
    tail = out[w + 1:]
    tail[np.isnan(tail)] = 0.0
    return np.clip(out, -1.0, 1.0)


def _alignment(b: Bars) -> np.ndarray:
    s20, s50, s200 = b.sma(20), b.sma(50), b.sma(200)
    out = np.where((s20 > s50) & (s50 > s200), 1.0, np.where((s20 < s50) & (s50 < s200), -1.0, 0.0))
    out[np.isnan(s200)] = np.nan
    return out
