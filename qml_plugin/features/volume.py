"""Volume features of every bar (``volu_``): relative volume, OBV and A/D slopes, money flow.

Volume is made scale-free by dividing it by its own recent mean, so 300 BTC and 3 million SPY
shares read alike. Many FX feeds carry **no volume at all** (the shipped EURUSD and GBPUSD files
are all zeros): every feature here then takes a documented neutral value (relative volume 1,
money-flow 50 or 0, slope 0, VWAP = the typical-price mean) and stays finite, so one model can
learn from FX and futures together; ``volu_zero_frac_50`` tells the model when that happened.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import kernels
from .catalog import Add
from .indicators import Bars, div, roll, rolling_rank, shift

__all__ = ["volume_features"]


def volume_features(b: Bars, add: Add) -> None:
    """``volu_``: activity relative to its own history; neutral and finite when volume is all zero."""
    for w in (5, 20, 50):
        add(f"volu_rel_{w}", f"Volume / its {w}-bar mean (1 when there is no volume)",
            lambda w=w: div(b.volume, b.volume_mean(w), fill=1.0))
    add("volu_zscore_20", "(Volume - 20-bar mean) / 20-bar sd (0 when volume is constant)",
        lambda: div(b.volume - b.volume_mean(20), roll(b.volume, 20).std().to_numpy(), fill=0.0))
    add("volu_pctile_100", "percentile (0..1] of this bar's volume among the last 100 bars",
        lambda: rolling_rank(b.volume, 100, 100))
    add("volu_trend_5_20", "5-bar mean volume / 20-bar mean volume (1 when there is no volume)",
        lambda: div(b.volume_mean(5), b.volume_mean(20), fill=1.0))
    add("volu_trend_20_100", "20-bar mean volume / 100-bar mean volume (1 when there is no volume)",
        lambda: div(b.volume_mean(20), b.volume_mean(100), fill=1.0))
    for w in (20, 50):
        add(f"volu_obv_slope_{w}", f"slope of on-balance volume over {w} bars / {w}-bar mean volume, -1..1",
            lambda w=w: div(kernels.rolling_linreg(b.obv(), w)[0], b.volume_mean(w), fill=0.0))
    add("volu_ad_slope_20", "slope of the Chaikin accumulation/distribution line over 20 bars / mean volume",
        lambda: div(kernels.rolling_linreg(np.cumsum(b.money_flow_multiplier() * b.volume), 20)[0],
                    b.volume_mean(20), fill=0.0))
    add("volu_cmf_20", "Chaikin money flow(20): volume-weighted close location, -1..1 (0 without volume)",
        lambda: div(roll(b.money_flow_multiplier() * b.volume, 20).sum().to_numpy(),
                    roll(b.volume, 20).sum().to_numpy(), fill=0.0))
    add("volu_mfi_14", "Money Flow Index(14), a volume-weighted RSI, 0..100 (50 without volume)",
        lambda: _mfi(b, 14))
    add("volu_vwap_dist_20_atr", "(Close - 20-bar VWAP of the typical price) / ATR14 (plain mean without volume)",
        lambda: b.in_atr(b.close - _vwap(b, 20)))
    add("volu_force_13", "Elder force index: EMA13 of (Close change * Volume) / (ATR14 * 20-bar mean volume)",
        lambda: div(kernels.smooth(np.diff(b.close, prepend=np.nan) * b.volume, 13, False),
                    b.atr(14) * b.volume_mean(20), fill=0.0))
    add("volu_up_share_20", "share of the last 20 bars' volume traded on up-closes (0.5 without volume)",
        lambda: div(roll(np.where(np.diff(b.close, prepend=np.nan) > 0, b.volume, 0.0), 20).sum().to_numpy(),
                    roll(b.volume, 20).sum().to_numpy(), fill=0.5))
    add("volu_move_corr_20", "correlation of Volume with |1-bar log return| over 20 bars (0 if either is flat)",
        lambda: _move_corr(b, 20))
    add("volu_zero_frac_50", "fraction of the last 50 bars with zero volume (1 for FX feeds without volume)",
        lambda: roll((b.volume == 0).astype(float), 50).mean().to_numpy())


def _mfi(b: Bars, w: int) -> np.ndarray:
    tp = b.typical()
    change = tp - shift(tp, 1)
    flow = tp * b.volume
    pos = roll(np.where(change > 0, flow, 0.0), w).sum().to_numpy()
    neg = roll(np.where(change < 0, flow, 0.0), w).sum().to_numpy()
    out = 100.0 * div(pos, pos + neg, fill=0.5)
    out[:w] = np.nan  # the first change is undefined, so the first full window ends at bar w
    return out


def _vwap(b: Bars, w: int) -> np.ndarray:
    tp = b.typical()
    vwap = div(roll(tp * b.volume, w).sum().to_numpy(), roll(b.volume, w).sum().to_numpy())
    plain = roll(tp, w).mean().to_numpy()
    return np.where(np.isnan(vwap), plain, vwap)


def _move_corr(b: Bars, w: int) -> np.ndarray:
    move = pd.Series(np.abs(b.logret(1)), copy=False)
    corr = move.rolling(w).corr(pd.Series(b.volume, copy=False)).to_numpy().copy()
    tail = corr[w:]
    tail[np.isnan(tail)] = 0.0
    return np.clip(corr, -1.0, 1.0)
