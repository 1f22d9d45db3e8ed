"""Shared building blocks of the feature families, each computed at most once per series.

:class:`Bars` wraps one OHLCV series. Its methods (``atr(14)``, ``ema(21)``, ``dmi(14)``,
``linreg(50)``, ...) are the indicators several families read; each result is memoized on the
instance, so ATR14 is computed once whether five features or fifty divide by it. A :class:`Bars`
lives for one ``compute`` / ``extract`` call and is then dropped: there is no global cache.

Conventions (they make every family scale-free and causal):

- prices enter features only as ratios (% of Close, log returns) or as distances divided by
  Wilder's ATR14, so EURUSD at 1.1 and BTC at 8000 give comparable numbers;
- every value at bar ``t`` uses bars ``<= t`` only: pandas rolling windows, forward recursions
  (:mod:`.kernels`) and shifts to the past. Nothing is normalized over the whole frame;
- an indicator is NaN until its window is complete; ``div`` turns a division by zero into a
  documented neutral value instead of ``inf``.

The recursions are written in :mod:`.kernels`; rolling sums, standard deviations, ranks and
correlations are pandas'. No TA library is used.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from pandas.core.window.rolling import Rolling

from ..patterns.swings import wilder_atr
from . import kernels

__all__ = ["Bars", "div", "roll", "rolling_rank", "shift"]

_F = TypeVar("_F", bound=Callable[..., Any])


def div(a: np.ndarray | float, b: np.ndarray | float, fill: float = np.nan) -> np.ndarray:
    """``a / b`` with ``fill`` where ``b == 0`` (NaN in either input stays NaN)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    out = np.full(np.broadcast_shapes(a.shape, b.shape), fill)
    np.divide(a, b, out=out, where=b != 0)
    return out


def roll(x: np.ndarray, w: int, min_periods: int | None = None) -> Rolling:
    """pandas' rolling window over the last ``w`` bars (complete windows only unless ``min_periods``)."""
    return pd.Series(x, copy=False).rolling(w, min_periods=w if min_periods is None else min_periods)


def rolling_rank(x: np.ndarray, w: int, min_periods: int) -> np.ndarray:
    """Percentile (0..1] of each value among the last ``w`` values (ties share their mean rank).

    pandas' ``rolling(w, min_periods).rank(pct=True)``, counted by :func:`.kernels.rolling_rank_codes`;
    like pandas, +-inf counts as missing.
    """
    if not 1 <= w or not 0 <= min_periods <= w:
        raise ValueError(f"rolling_rank needs w >= 1 and 0 <= min_periods <= w, got w={w}, min_periods={min_periods}")
    x = np.asarray(x, dtype=np.float64)
    known = np.isfinite(x)
    codes = np.full(x.shape[0], -1, dtype=np.int64)
    codes[known] = np.unique(x[known], return_inverse=True)[1]
    return kernels.rolling_rank_codes(codes, w, min_periods)


def shift(x: np.ndarray, k: int) -> np.ndarray:
    """``x`` delayed by ``k`` bars (the value of ``k`` bars ago), NaN-padded at the start."""
    out = np.full(x.shape[0], np.nan)
    if k < x.shape[0]:
        out[k:] = x[: x.shape[0] - k]
    return out


def _memo(method: _F) -> _F:
    @functools.wraps(method)
    def wrapper(self: Bars, *args: Any) -> Any:
        key = (method.__name__, *args)
        if key not in self._cache:
            self._cache[key] = method(self, *args)
        return self._cache[key]

    return wrapper  # type: ignore[return-value]


class Bars:
    """One OHLCV series and its memoized building blocks (float64 numpy arrays, one value per bar)."""

    def __init__(self, ohlcv: pd.DataFrame):
        self.index = ohlcv.index
        self.n = len(ohlcv)
        self.open, self.high, self.low, self.close, self.volume = (
            np.ascontiguousarray(ohlcv[k].to_numpy(dtype=np.float64))
            for k in ("Open", "High", "Low", "Close", "Volume")
        )
        self._cache: dict[tuple, Any] = {}

    # -- prices and returns ---------------------------------------------------------------------
    @_memo
    def prev_close(self) -> np.ndarray:
        return shift(self.close, 1)

    @_memo
    def logret(self, k: int = 1) -> np.ndarray:
        """Log return over ``k`` bars, ``ln(C[t] / C[t-k])``."""
        return np.log(self.close / shift(self.close, k))

    @_memo
    def typical(self) -> np.ndarray:
        """Typical price ``(H + L + C) / 3``."""
        return (self.high + self.low + self.close) / 3.0

    @_memo
    def highest(self, w: int) -> np.ndarray:
        return roll(self.high, w).max().to_numpy()

    @_memo
    def lowest(self, w: int) -> np.ndarray:
        return roll(self.low, w).min().to_numpy()

    # -- averages ----------------------------------------------------------------------------------
    @_memo
    def sma(self, w: int) -> np.ndarray:
        return roll(self.close, w).mean().to_numpy()

    @_memo
    def ema(self, w: int) -> np.ndarray:
        return kernels.smooth(self.close, w, False)

    @_memo
    def close_std(self, w: int) -> np.ndarray:
        """Population standard deviation of Close (Bollinger's convention)."""
        return roll(self.close, w).std(ddof=0).to_numpy()

    # -- true range and the Wilder family ----------------------------------------------------------
    @_memo
    def true_range(self) -> np.ndarray:
        """``TR[0] = H - L``; then ``max(H - L, |H - C[t-1]|, |L - C[t-1]|)`` (SPEC §2)."""
        pc = self.prev_close()
        tr = np.fmax(self.high - self.low, np.fmax(np.abs(self.high - pc), np.abs(self.low - pc)))
        return tr

    @_memo
    def atr(self, w: int = 14) -> np.ndarray:
        """Wilder's ATR(w): the detector's own (:func:`qml_plugin.patterns.swings.wilder_atr`), so
        ``atr(14)`` is SPEC's ATR14 bit for bit."""
        return wilder_atr(self.high, self.low, self.close, n=w)

    @_memo
    def natr(self, w: int = 14) -> np.ndarray:
        """ATR(w) as a fraction of Close."""
        return self.atr(w) / self.close

    def in_atr(self, x: np.ndarray) -> np.ndarray:
        """A price distance expressed in ATR14 units (0 for no distance in a market that never moved)."""
        out = div(x, self.atr(14))
        out[(x == 0) & (self.atr(14) == 0)] = 0.0
        return out

    @_memo
    def rsi(self, w: int) -> np.ndarray:
        """Wilder's RSI in [0, 100]; 50 when the window has no move at all."""
        d = np.diff(self.close, prepend=np.nan)
        gain = kernels.smooth(np.where(d > 0, d, np.where(np.isnan(d), np.nan, 0.0)), w, True)
        loss = kernels.smooth(np.where(d < 0, -d, np.where(np.isnan(d), np.nan, 0.0)), w, True)
        return 100.0 * div(gain, gain + loss, fill=0.5)

    @_memo
    def dmi(self, w: int = 14) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Wilder's directional movement: ``(+DI, -DI, ADX)``, each in [0, 100]."""
        up = np.diff(self.high, prepend=np.nan)
        down = -np.diff(self.low, prepend=np.nan)
        valid = ~np.isnan(up)
        plus_dm = np.where(valid, np.where((up > down) & (up > 0), up, 0.0), np.nan)
        minus_dm = np.where(valid, np.where((down > up) & (down > 0), down, 0.0), np.nan)
        tr = np.where(valid, self.true_range(), np.nan)
        atr = kernels.smooth(tr, w, True)
        plus_di = 100.0 * div(kernels.smooth(plus_dm, w, True), atr, fill=0.0)
        minus_di = 100.0 * div(kernels.smooth(minus_dm, w, True), atr, fill=0.0)
        dx = 100.0 * div(np.abs(plus_di - minus_di), plus_di + minus_di, fill=0.0)
        return plus_di, minus_di, kernels.smooth(dx, w, True)

    @_memo
    def macd(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """MACD(12, 26, 9) in price units: ``(line, signal, histogram)``."""
        line = self.ema(12) - self.ema(26)
        signal = kernels.smooth(line, 9, False)
        return line, signal, line - signal

    # -- windows over returns and volume -----------------------------------------------------------
    @_memo
    def realized_vol(self, w: int) -> np.ndarray:
        """Sample standard deviation of 1-bar log returns over ``w`` bars, in % per bar."""
        return 100.0 * roll(self.logret(1), w).std().to_numpy()

    @_memo
    def linreg(self, w: int) -> tuple[np.ndarray, np.ndarray]:
        """Rolling regression of Close on bar number: ``(slope per bar, R^2)``."""
        return kernels.rolling_linreg(self.close, w)

    @_memo
    def efficiency(self, w: int) -> np.ndarray:
        """Kaufman's efficiency ratio: net move / path length over ``w`` bars, in [0, 1]."""
        path = roll(np.abs(np.diff(self.close, prepend=np.nan)), w).sum().to_numpy()
        return div(np.abs(self.close - shift(self.close, w)), path, fill=0.0)

    @_memo
    def volume_mean(self, w: int) -> np.ndarray:
        return roll(self.volume, w).mean().to_numpy()

    @_memo
    def obv(self) -> np.ndarray:
        """On-balance volume: cumulative volume signed by the close-to-close direction."""
        return np.cumsum(np.sign(np.nan_to_num(np.diff(self.close, prepend=np.nan))) * self.volume)

    @_memo
    def money_flow_multiplier(self) -> np.ndarray:
        """Where the Close sits in the bar, from -1 (at the Low) to +1 (at the High); 0 for a flat bar."""
        return div((self.close - self.low) - (self.high - self.close), self.high - self.low, fill=0.0)

    @_memo
    def natr_rank(self, w: int, min_periods: int) -> np.ndarray:
        """Percentile (0..1] of the current ATR14 / Close among its last ``w`` values."""
        return rolling_rank(self.natr(14), w, min_periods)

    def memo(self, key: str, fn: Callable[[], Any]) -> Any:
        """``fn()`` computed once per series under ``key`` (for building blocks defined elsewhere)."""
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]
