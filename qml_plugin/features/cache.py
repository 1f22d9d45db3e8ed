"""A small in-process memo of features, for repeated backtests on the same data.

``Backtest.optimize``, ``qml run`` (four backtests of one series) and parameter studies run the same
strategy many times on the same bars. Two things are remembered, both keyed by a fingerprint of
the OHLCV values and index and by the extractor's ``schema_hash``:

- the **market features** of every bar (:func:`market_features`), which do not depend on the
  patterns: a new parameter set on the same bars (other swings, other patterns) only computes its
  pattern-geometry features. At most ``MAX_MARKET_ENTRIES`` series are kept. A series whose
  matrix would exceed ``MAX_MARKET_BYTES`` (1M bars take 1.2 GB) is never built whole for a
  pattern lookup: :meth:`FeatureExtractor.extract` then computes the pattern rows as usual;
- the **pattern features** of one pattern set (:func:`pattern_features`), keyed also by the
  pattern ids. At most ``MAX_ENTRIES`` results are kept.

Least recently used goes first; :func:`clear` empties both. Callers get copies, so nothing they do
changes what the next caller sees. A lock makes the memo safe to share between threads.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np
import pandas as pd

from .extractor import FeatureExtractor

__all__ = ["pattern_features", "pattern_regimes", "market_features", "clear", "MAX_ENTRIES", "MAX_MARKET_ENTRIES",
           "MAX_MARKET_BYTES"]

MAX_ENTRIES = 8
MAX_MARKET_ENTRIES = 2
MAX_MARKET_BYTES = 256 * 1024 * 1024
_memo: OrderedDict[tuple, pd.DataFrame] = OrderedDict()
_market: OrderedDict[tuple, pd.DataFrame] = OrderedDict()
_lock = threading.RLock()


def _fingerprint(ohlcv: pd.DataFrame) -> str:
    h = hashlib.blake2b(digest_size=16)
    idx = ohlcv.index  # any index backtesting.py accepts (a RangeIndex too)
    stamps = idx.as_unit("ns").asi8 if isinstance(idx, pd.DatetimeIndex) else pd.util.hash_pandas_object(idx).to_numpy()
    h.update(np.ascontiguousarray(stamps).tobytes())
    for col in ("Open", "High", "Low", "Close", "Volume"):
        h.update(np.ascontiguousarray(ohlcv[col].to_numpy(np.float64)).tobytes())
    return h.hexdigest()


def _remember(memo: OrderedDict, key: tuple, value: pd.DataFrame, limit: int) -> None:
    memo[key] = value
    while len(memo) > limit:
        memo.popitem(last=False)


def _fits(ohlcv: pd.DataFrame, extractor: FeatureExtractor) -> bool:
    """Whether the market matrix of ``ohlcv`` is small enough to keep (known before computing it)."""
    return len(ohlcv) * len(extractor.market_feature_names) * 8 <= MAX_MARKET_BYTES


def _market_features(ohlcv: pd.DataFrame, extractor: FeatureExtractor, series: str, keep: bool) -> pd.DataFrame:
    key = (series, extractor.schema_hash)
    with _lock:
        if key in _market:
            _market.move_to_end(key)
            return _market[key]
    market = extractor.compute(ohlcv)
    if keep:
        with _lock:
            _remember(_market, key, market, MAX_MARKET_ENTRIES)
    return market


def market_features(ohlcv: pd.DataFrame, extractor: FeatureExtractor | None = None) -> pd.DataFrame:
    """``extractor.compute(ohlcv)``, computed once per (bars, schema) while it fits the memo."""
    extractor = extractor or FeatureExtractor()
    return _market_features(ohlcv, extractor, _fingerprint(ohlcv), _fits(ohlcv, extractor)).copy()


def pattern_features(ohlcv: pd.DataFrame, patterns: pd.DataFrame,
                     extractor: FeatureExtractor | None = None) -> pd.DataFrame:
    """``extractor.extract(ohlcv, patterns)``, computed once per (bars, patterns, schema).

    On a miss, the market features come from :func:`market_features`' memo when the same bars
    were seen with other patterns.
    """
    extractor = extractor or FeatureExtractor()
    series = _fingerprint(ohlcv)
    ids = hashlib.blake2b("\n".join(map(str, patterns["pattern_id"])).encode(), digest_size=16).hexdigest()
    key = (series, ids, extractor.schema_hash)
    with _lock:
        if key in _memo:
            _memo.move_to_end(key)
            return _memo[key].copy()
    if _fits(ohlcv, extractor):
        feats = extractor.extract(ohlcv, patterns, market=_market_features(ohlcv, extractor, series, keep=True))
    else:                      # too long to keep: extract's row lookup never holds the whole matrix
        feats = extractor.extract(ohlcv, patterns)
    with _lock:
        _remember(_memo, key, feats, MAX_ENTRIES)
    return feats.copy()


def pattern_regimes(ohlcv: pd.DataFrame, patterns: pd.DataFrame,
                    extractor: FeatureExtractor | None = None) -> pd.Series:
    """``extractor.regimes(ohlcv, patterns)``, read off the memoized market features when they fit."""
    extractor = extractor or FeatureExtractor()
    if _fits(ohlcv, extractor):
        market = _market_features(ohlcv, extractor, _fingerprint(ohlcv), keep=True)
        return extractor.regimes(ohlcv, patterns, market=market)
    return extractor.regimes(ohlcv, patterns)


def clear() -> None:
    """Forget every memoized result."""
    with _lock:
        _memo.clear()
        _market.clear()
