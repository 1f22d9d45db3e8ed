"""Synthetic markets with a known answer, to check that the ML pipeline finds real signal and no other.

* :func:`random_walk_ohlcv`: a geometric random walk with realistic candles. Nothing in it is
  predictable, so an ML filter must not beat a random filter there (the *null* test).
* :func:`plant_volume_signal`: takes a series and its labeled patterns and rewrites only the
  **Volume** at each pattern's detection bar: ``log(volume / base) = strength * label + noise``.
  Volume never enters detection, levels or outcomes, so patterns and labels are unchanged, and
  the volume at bar ``t`` is observable at ``t`` (an "informed flow" story). The best possible
  classifier ranks patterns by that volume, so the ceiling AUC is known in closed form:
  ``Phi(strength / (noise * sqrt(2)))`` for Gaussian noise; the realized ceiling on a sample is
  ``roc_auc_score(label, planted_volume)``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import norm

__all__ = ["random_walk_ohlcv", "plant_volume_signal", "ceiling_auc", "planted_universe"]


def random_walk_ohlcv(n_bars: int, seed: int = 0, *, vol: float = 0.004, start_price: float = 100.0,
                      freq: str = "4h", start: str = "2005-01-03", symbol: str = "RW") -> pd.DataFrame:
    """A random-walk OHLCV frame (valid candles, constant volume 1000) with ``attrs`` symbol/timeframe."""
    rng = np.random.default_rng(seed)
    close = start_price * np.exp(np.cumsum(rng.normal(0.0, vol, n_bars)))
    open_ = np.r_[start_price, close[:-1]] * np.exp(rng.normal(0.0, vol / 4, n_bars))
    wick = np.abs(rng.normal(0.0, vol / 2, (2, n_bars)))
    df = pd.DataFrame({"Open": open_, "High": np.maximum(open_, close) * np.exp(wick[0]),
                       "Low": np.minimum(open_, close) * np.exp(-wick[1]), "Close": close,
                       "Volume": np.full(n_bars, 1000.0)},
                      index=pd.date_range(start, periods=n_bars, freq=freq))
    df.attrs.update(symbol=symbol, timeframe=freq)
    return df


def ceiling_auc(strength: float, noise: float = 1.0) -> float:
    """AUC of the Bayes-optimal score when ``signal = strength * label + N(0, noise)``."""
    return float(norm.cdf(strength / (noise * np.sqrt(2.0))))


def plant_volume_signal(ohlcv: pd.DataFrame, labeled: pd.DataFrame, *, strength: float = 1.5, noise: float = 1.0,
                        seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """A copy of ``ohlcv`` whose Volume at each detection bar carries ``strength * label + noise`` (log scale).

    Patterns without an outcome get pure noise. Returns ``(frame, planted)`` where ``planted`` is the
    log-volume signal per pattern (aligned with ``labeled``): the Bayes-optimal score.
    """
    rng = np.random.default_rng(seed)
    label = labeled["label"].to_numpy(float)
    planted = strength * np.nan_to_num(label, nan=0.0) + rng.normal(0.0, noise, len(labeled))
    out = ohlcv.copy()
    bars = labeled["detection_bar"].to_numpy(int)
    first = ~pd.Series(bars).duplicated().to_numpy()  # one value per bar: the first pattern's
    vol = out["Volume"].to_numpy(float).copy()
    vol[bars[first]] = 1000.0 * np.exp(planted[first])
    out["Volume"] = vol
    out.attrs.update(ohlcv.attrs)
    return out, planted


def planted_universe(n_markets: int = 12, n_bars: int = 6000, *, strength: float = 1.5, noise: float = 1.0,
                     seed: int = 0, freq: str = "4h", start: str = "2010-01-04",
                     ) -> tuple[dict[str, pd.DataFrame], dict[str, pd.Series]]:
    """Random-walk markets sharing one planted effect: ``log(volume)`` at detection = ``strength * label + noise``.

    Each market alone holds too few patterns to learn the effect well (about 150 for 6,000 4h bars);
    pooled, they hold thousands. All markets share one calendar (UTC, ``attrs["tz"] = "UTC"``), so a
    pooled walk-forward model learns from every market's past. Returns ``(universe, planted)``: the
    frames keyed ``SYNkk_<freq>`` and, per market, the planted log-volume of each pattern (indexed by
    ``pattern_id``): the Bayes-optimal score, whose AUC is the realized ceiling.
    ``strength=0`` gives a null universe (pure random walks).
    """
    from .patterns import detect_patterns, label_patterns

    universe, planted = {}, {}
    for k in range(n_markets):
        sym = f"SYN{k:02d}"
        df = random_walk_ohlcv(n_bars, seed=seed * 1009 + k, freq=freq, start=start, symbol=sym,
                               start_price=float(np.random.default_rng(seed * 7 + k).uniform(20, 200)))
        labeled = label_patterns(df, detect_patterns(df))
        out, signal = plant_volume_signal(df, labeled, strength=strength, noise=noise, seed=seed * 1009 + k)
        out.attrs.update(symbol=sym, timeframe=freq, tz="UTC")
        universe[f"{sym}_{freq}"] = out
        planted[f"{sym}_{freq}"] = pd.Series(signal, index=labeled["pattern_id"].to_numpy())
    return universe, planted
