"""A small in-process memo of pattern features, for repeated backtests on the same data.

``Backtest.optimize``, ``qml run`` (four backtests of one series) and parameter studies run the same
strategy many times on the same bars. Pattern features depend only on the bars, the patterns and
the feature schema, so they are computed once and reused: the key is a fingerprint of the OHLCV
values and index, the pattern ids and the extractor's ``schema_hash``. At most ``MAX_ENTRIES``
results are kept (least recently used first out); :func:`clear` empties it. Callers get a copy.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np
import pandas as pd

from .extractor import FeatureExtractor

__all__ = ["pattern_features", "clear", "MAX_ENTRIES"]

MAX_ENTRIES = 8
_memo: OrderedDict[tuple, pd.DataFrame] = OrderedDict()


def _fingerprint(ohlcv: pd.DataFrame) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(ohlcv.index.as_unit("ns").asi8).tobytes())
    for col in ("Open", "High", "Low", "Close", "Volume"):
        h.update(np.ascontiguousarray(ohlcv[col].to_numpy(np.float64)).tobytes())
    return h.hexdigest()


def pattern_features(ohlcv: pd.DataFrame, patterns: pd.DataFrame,
                     extractor: FeatureExtractor | None = None) -> pd.DataFrame:
    """``extractor.extract(ohlcv, patterns)``, computed once per (bars, patterns, schema)."""
    extractor = extractor or FeatureExtractor()
    ids = hashlib.blake2b("\n".join(map(str, patterns["pattern_id"])).encode(), digest_size=16).hexdigest()
    key = (_fingerprint(ohlcv), ids, extractor.schema_hash)
    if key in _memo:
        _memo.move_to_end(key)
    else:
        _memo[key] = extractor.extract(ohlcv, patterns)
        while len(_memo) > MAX_ENTRIES:
            _memo.popitem(last=False)
    return _memo[key].copy()


def clear() -> None:
    """Forget every memoized result."""
    _memo.clear()
