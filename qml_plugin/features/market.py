"""Market features of every bar: context (``ctx_``), volatility (``vol_``) and momentum (``mom_``).

Each family is one function that declares its features with ``add(name, doc, fn)`` (see
:mod:`.catalog`); the shared indicators come from :class:`~.indicators.Bars`, so an indicator used
by many features is computed once. Units are chosen to be scale-free: distances in ATR14, levels
as % of Close or log returns in %, oscillators on their usual 0..100 scale.

- ``ctx_``: where price sits relative to its classic indicators (ATR, RSI, MACD, Bollinger,
  ADX/DI, SMA/EMA distances, Stochastic, CCI, Donchian, Aroon, Ichimoku, candle anatomy);
- ``vol_``: how much price moves (ATR percentiles, realized, Parkinson, Garman-Klass,
  Rogers-Satchell and Yang-Zhang volatility, vol of vol, return shape);
- ``mom_``: where price is going (returns over 1..100 bars, ROC, regression slope and R^2, TSI,
  PPO, TRIX).

Volume, regime and calendar features live in :mod:`.volume`, :mod:`.regime` and :mod:`.temporal`;
pattern geometry in :mod:`.geometry`.
"""
from __future__ import annotations

import numpy as np

from . import kernels
from .catalog import Add
from .indicators import Bars, div, roll, rolling_rank, shift

__all__ = ["context_features", "volatility_features", "momentum_features"]

_LN2 = np.log(2.0)


def context_features(b: Bars, add: Add) -> None:
    """``ctx_``: market context from classic indicators, each made scale-free."""
    for w in (7, 14, 28):
        add(f"ctx_atr_pct_{w}", f"Wilder ATR({w}) as % of Close", lambda w=w: 100.0 * b.natr(w))
    for w in (7, 14, 28):
        add(f"ctx_rsi_{w}", f"Wilder RSI({w}), 0..100 (50 when nothing moved)", lambda w=w: b.rsi(w))
    add("ctx_macd_atr", "MACD(12,26) line / ATR14", lambda: b.in_atr(b.macd()[0]))
    add("ctx_macd_signal_atr", "MACD signal line (EMA9 of the line) / ATR14", lambda: b.in_atr(b.macd()[1]))
    add("ctx_macd_hist_atr", "MACD histogram (line - signal) / ATR14", lambda: b.in_atr(b.macd()[2]))
    add("ctx_macd_hist_change_atr", "change of the MACD histogram over 3 bars / ATR14",
        lambda: b.in_atr(b.macd()[2] - shift(b.macd()[2], 3)))
    for w in (20, 50):
        add(f"ctx_bb_pctb_{w}", f"Bollinger %B({w}, 2 sd): 0 at the lower band, 1 at the upper (0.5 if flat)",
            lambda w=w: div(b.close - b.sma(w) + 2 * b.close_std(w), 4 * b.close_std(w), fill=0.5))
        add(f"ctx_bb_width_{w}", f"Bollinger band width({w}, 2 sd) as % of the middle band",
            lambda w=w: 100.0 * 4 * b.close_std(w) / b.sma(w))
    add("ctx_adx_14", "Wilder ADX(14), trend strength 0..100", lambda: b.dmi(14)[2])
    add("ctx_plus_di_14", "Wilder +DI(14), 0..100", lambda: b.dmi(14)[0])
    add("ctx_minus_di_14", "Wilder -DI(14), 0..100", lambda: b.dmi(14)[1])
    add("ctx_di_spread_14", "+DI(14) - -DI(14): direction of the trend, -100..100",
        lambda: b.dmi(14)[0] - b.dmi(14)[1])
    for w in (10, 20, 50, 100, 200):
        add(f"ctx_dist_sma_{w}_atr", f"(Close - SMA{w}) / ATR14", lambda w=w: b.in_atr(b.close - b.sma(w)))
    for w in (9, 21, 50, 200):
        add(f"ctx_dist_ema_{w}_atr", f"(Close - EMA{w}) / ATR14", lambda w=w: b.in_atr(b.close - b.ema(w)))
    add("ctx_sma_20_50_spread_atr", "(SMA20 - SMA50) / ATR14", lambda: b.in_atr(b.sma(20) - b.sma(50)))
    add("ctx_sma_50_200_spread_atr", "(SMA50 - SMA200) / ATR14", lambda: b.in_atr(b.sma(50) - b.sma(200)))
    add("ctx_ema_9_21_spread_atr", "(EMA9 - EMA21) / ATR14", lambda: b.in_atr(b.ema(9) - b.ema(21)))
    add("ctx_stoch_k_14", "fast Stochastic %K(14): Close within the 14-bar High-Low range, 0..100",
        lambda: _stoch(b, 14))
    add("ctx_stoch_d_14", "Stochastic %D: 3-bar mean of %K(14)", lambda: roll(_stoch(b, 14), 3).mean().to_numpy())
    add("ctx_stoch_k_5", "fast Stochastic %K(5), 0..100", lambda: _stoch(b, 5))
    for w in (20, 50):
        add(f"ctx_cci_{w}", f"Commodity Channel Index({w}) of the typical price (0 when flat)",
            lambda w=w: _cci(b, w))
    for w in (20, 55):
        add(f"ctx_donchian_pos_{w}", f"Close within the {w}-bar Donchian channel, 0 (Low) .. 1 (High)",
            lambda w=w: div(b.close - b.lowest(w), b.highest(w) - b.lowest(w), fill=0.5))
    add("ctx_donchian_width_20_atr", "20-bar High-Low range / ATR14",
        lambda: b.in_atr(b.highest(20) - b.lowest(20)))
    for w in (20, 100):
        add(f"ctx_dist_high_{w}_atr", f"(highest High of {w} bars - Close) / ATR14",
            lambda w=w: b.in_atr(b.highest(w) - b.close))
        add(f"ctx_dist_low_{w}_atr", f"(Close - lowest Low of {w} bars) / ATR14",
            lambda w=w: b.in_atr(b.close - b.lowest(w)))
    add("ctx_body_atr", "candle body (Close - Open) / ATR14", lambda: b.in_atr(b.close - b.open))
    add("ctx_upper_wick_atr", "upper wick (High - max(Open, Close)) / ATR14",
        lambda: b.in_atr(b.high - np.maximum(b.open, b.close)))
    add("ctx_lower_wick_atr", "lower wick (min(Open, Close) - Low) / ATR14",
        lambda: b.in_atr(np.minimum(b.open, b.close) - b.low))
    add("ctx_range_atr", "bar range (High - Low) / ATR14", lambda: b.in_atr(b.high - b.low))
    add("ctx_close_location", "Close within the bar, 0 (Low) .. 1 (High); 0.5 for a flat bar",
        lambda: div(b.close - b.low, b.high - b.low, fill=0.5))
    add("ctx_aroon_up_25", "Aroon up(25): 100 * (25 - bars since the 26-bar high) / 25",
        lambda: 100.0 * (25 - kernels.extreme_age(b.high, 26, True)) / 25)
    add("ctx_aroon_down_25", "Aroon down(25): 100 * (25 - bars since the 26-bar low) / 25",
        lambda: 100.0 * (25 - kernels.extreme_age(b.low, 26, False)) / 25)
    add("ctx_dist_tenkan_atr", "(Close - Ichimoku tenkan, the 9-bar mid-range) / ATR14",
        lambda: b.in_atr(b.close - (b.highest(9) + b.lowest(9)) / 2))
    add("ctx_dist_kijun_atr", "(Close - Ichimoku kijun, the 26-bar mid-range) / ATR14",
        lambda: b.in_atr(b.close - (b.highest(26) + b.lowest(26)) / 2))
    add("ctx_up_streak", "consecutive closes above the previous close, ending at this bar",
        lambda: kernels.run_length(np.diff(b.close, prepend=np.nan) > 0))
    add("ctx_down_streak", "consecutive closes below the previous close, ending at this bar",
        lambda: kernels.run_length(np.diff(b.close, prepend=np.nan) < 0))


def _stoch(b: Bars, w: int) -> np.ndarray:
    return b.memo(f"stoch{w}", lambda: 100.0 * div(b.close - b.lowest(w), b.highest(w) - b.lowest(w), fill=0.5))


def _cci(b: Bars, w: int) -> np.ndarray:
    tp = b.typical()
    return div(tp - roll(tp, w).mean().to_numpy(), 0.015 * kernels.rolling_mad(tp, w), fill=0.0)


def volatility_features(b: Bars, add: Add) -> None:
    """``vol_``: volatility level, its percentile in recent history, its estimators and its shape."""
    add("vol_atr_pctile_100", "percentile (0..1] of ATR14/Close among the last 100 bars",
        lambda: b.natr_rank(100, 100))
    add("vol_atr_pctile_500", "percentile of ATR14/Close among the last 500 bars (from 100 bars on)",
        lambda: b.natr_rank(500, 100))
    add("vol_atr_pctile_2000", "percentile of ATR14/Close among the last 2000 bars (from 100 bars on)",
        lambda: b.natr_rank(2000, 100))
    add("vol_atr_ratio_7_28", "ATR7 / ATR28: short-term versus longer-term range (1 when no move)",
        lambda: div(b.atr(7), b.atr(28), fill=1.0))
    add("vol_atr_ratio_14_100", "ATR14 / its 100-bar mean (1 when no move)",
        lambda: div(b.atr(14), roll(b.atr(14), 100).mean().to_numpy(), fill=1.0))
    for w in (10, 20, 50, 100):
        add(f"vol_realized_{w}", f"realized volatility: sd of 1-bar log returns over {w} bars, % per bar",
            lambda w=w: b.realized_vol(w))
    for w in (20, 50):
        add(f"vol_parkinson_{w}", f"Parkinson volatility from High/Low over {w} bars, % per bar",
            lambda w=w: 100.0 * np.sqrt(roll(_hl2(b), w).mean().to_numpy() / (4 * _LN2)))
        add(f"vol_garman_klass_{w}", f"Garman-Klass volatility from OHLC over {w} bars, % per bar",
            lambda w=w: 100.0 * np.sqrt(np.maximum(
                roll(0.5 * _hl2(b) - (2 * _LN2 - 1) * _co2(b), w).mean().to_numpy(), 0.0)))
    add("vol_rogers_satchell_20", "Rogers-Satchell (drift-free) volatility over 20 bars, % per bar",
        lambda: 100.0 * np.sqrt(roll(_rs_term(b), 20).mean().to_numpy()))
    add("vol_yang_zhang_20", "Yang-Zhang volatility over 20 bars (overnight + open-close + RS), % per bar",
        lambda: _yang_zhang(b, 20))
    for w in (20, 50):
        add(f"vol_of_vol_{w}", f"vol of vol: sd / mean of realized_20 over {w} bars (0 when no move)",
            lambda w=w: div(roll(b.realized_vol(20), w).std().to_numpy(),
                            roll(b.realized_vol(20), w).mean().to_numpy(), fill=0.0))
    add("vol_ratio_10_50", "realized_10 / realized_50 (1 when no move)",
        lambda: div(b.realized_vol(10), b.realized_vol(50), fill=1.0))
    add("vol_range_pctile_100", "percentile of this bar's (High-Low)/Close among the last 100 bars",
        lambda: rolling_rank((b.high - b.low) / b.close, 100, 100))
    add("vol_gap_atr", "|Open - previous Close| / ATR14", lambda: b.in_atr(np.abs(b.open - b.prev_close())))
    add("vol_downside_20", "downside semi-deviation of 1-bar log returns over 20 bars, % per bar",
        lambda: 100.0 * np.sqrt(roll(np.minimum(b.logret(1), 0.0) ** 2, 20).mean().to_numpy()))
    add("vol_upside_20", "upside semi-deviation of 1-bar log returns over 20 bars, % per bar",
        lambda: 100.0 * np.sqrt(roll(np.maximum(b.logret(1), 0.0) ** 2, 20).mean().to_numpy()))
    add("vol_return_zscore", "this bar's log return / realized_20 (0 when no move)",
        lambda: div(100.0 * b.logret(1), b.realized_vol(20), fill=0.0))
    add("vol_max_move_20", "largest |1-bar log return| of 20 bars / realized_20 (0 when no move)",
        lambda: div(100.0 * roll(np.abs(b.logret(1)), 20).max().to_numpy(), b.realized_vol(20), fill=0.0))
    for name, stat in (("skew", "skewness"), ("kurt", "excess kurtosis")):
        add(f"vol_{name}_50", f"{stat} of 1-bar log returns over 50 bars (0 when no move)",
            lambda name=name: _moment(b, name, 50))
    add("vol_bb_squeeze_100", "percentile of the Bollinger(20) width among the last 100 bars (low = squeeze)",
        lambda: rolling_rank(div(b.close_std(20), b.sma(20)), 100, 100))


def _hl2(b: Bars) -> np.ndarray:
    return b.memo("hl2", lambda: np.log(b.high / b.low) ** 2)


def _co2(b: Bars) -> np.ndarray:
    return b.memo("co2", lambda: np.log(b.close / b.open) ** 2)


def _rs_term(b: Bars) -> np.ndarray:
    return b.memo("rs", lambda: np.log(b.high / b.close) * np.log(b.high / b.open)
                  + np.log(b.low / b.close) * np.log(b.low / b.open))


def _yang_zhang(b: Bars, w: int) -> np.ndarray:
    k = 0.34 / (1.34 + (w + 1.0) / (w - 1.0))
    overnight = roll(np.log(b.open / b.prev_close()), w).var().to_numpy()
    open_close = roll(np.log(b.close / b.open), w).var().to_numpy()
    rs = roll(_rs_term(b), w).mean().to_numpy()
    return 100.0 * np.sqrt(np.maximum(overnight + k * open_close + (1 - k) * rs, 0.0))


def _moment(b: Bars, name: str, w: int) -> np.ndarray:
    r = roll(b.logret(1), w)
    out = (r.skew() if name == "skew" else r.kurt()).to_numpy(copy=True)
    flat = b.realized_vol(w) == 0
    out[flat] = 0.0
    return out


def momentum_features(b: Bars, add: Add) -> None:
    """``mom_``: returns over 1..100 bars, rate of change, trend slope and fit, smoothed oscillators."""
    for k in (1, 2, 3, 5, 10, 20, 50, 100):
        add(f"mom_ret_{k}", f"log return over {k} bars, %", lambda k=k: 100.0 * b.logret(k))
    for k in (5, 20, 100):
        add(f"mom_ret_{k}_atr", f"Close - Close {k} bars ago, in ATR14",
            lambda k=k: b.in_atr(b.close - shift(b.close, k)))
    for k in (12, 25):
        add(f"mom_roc_{k}", f"rate of change over {k} bars: 100 * (Close / Close[-{k}] - 1)",
            lambda k=k: 100.0 * (b.close / shift(b.close, k) - 1.0))
    for w in (20, 50, 100):
        add(f"mom_slope_{w}_atr", f"least-squares slope of Close over {w} bars, ATR14 per bar",
            lambda w=w: b.in_atr(b.linreg(w)[0]))
        add(f"mom_r2_{w}", f"R^2 of the {w}-bar linear fit of Close (1 = straight line)",
            lambda w=w: b.linreg(w)[1])
    add("mom_tsi_25_13", "True Strength Index(25, 13): double-smoothed momentum, -100..100 (0 when flat)",
        lambda: _tsi(b))
    add("mom_sharpe_20", "mean / sd of 1-bar log returns over 20 bars, times sqrt(20) (0 when no move)",
        lambda: div(roll(b.logret(1), 20).mean().to_numpy() * np.sqrt(20.0) * 100.0,
                    b.realized_vol(20), fill=0.0))
    for w in (10, 20):
        add(f"mom_up_frac_{w}", f"fraction of the last {w} bars that closed above the previous close",
            lambda w=w: roll(_up_close(b), w).mean().to_numpy())
    add("mom_accel_10", "mom_ret_10 minus its value 10 bars ago (acceleration), %",
        lambda: 100.0 * (b.logret(10) - shift(b.logret(10), 10)))
    add("mom_ppo_12_26", "percentage price oscillator: 100 * (EMA12 - EMA26) / EMA26",
        lambda: 100.0 * (b.ema(12) - b.ema(26)) / b.ema(26))
    add("mom_trix_15", "TRIX(15): 1-bar % change of the triple EMA15 of Close",
        lambda: _trix(b, 15))


def _up_close(b: Bars) -> np.ndarray:
    """1.0 where Close rose from the previous bar, 0.0 where not, NaN on the first bar."""
    d = np.diff(b.close, prepend=np.nan)
    return np.where(np.isnan(d), np.nan, d > 0)


def _tsi(b: Bars) -> np.ndarray:
    d = np.diff(b.close, prepend=np.nan)
    num = kernels.smooth(kernels.smooth(d, 25, False), 13, False)
    den = kernels.smooth(kernels.smooth(np.abs(d), 25, False), 13, False)
    return 100.0 * div(num, den, fill=0.0)


def _trix(b: Bars, w: int) -> np.ndarray:
    e3 = kernels.smooth(kernels.smooth(b.ema(w), w, False), w, False)
    return 100.0 * (e3 / shift(e3, 1) - 1.0)
