"""Features: causal, scale-free descriptions of the market and of each QML pattern.

Seven families, named by prefix: ``ctx_`` market context, ``vol_`` volatility, ``mom_`` momentum,
``volu_`` volume, ``regime_`` market regime, ``temp_`` calendar and pattern timing (see
:mod:`.market`, :mod:`.volume`, :mod:`.regime`, :mod:`.temporal`) and ``geo_`` pattern geometry
(:mod:`.geometry`). :class:`FeatureExtractor` (:mod:`.extractor`) assembles them;
:func:`feature_docs` renders the one-line documentation of every feature (``docs/FEATURES.md``).

    >>> from qml_plugin.data import load_ohlcv
    >>> from qml_plugin.patterns import detect_patterns
    >>> ohlcv = load_ohlcv("EURUSD_1h").iloc[:4000]
    >>> fx = FeatureExtractor()
    >>> X = fx.extract(ohlcv, detect_patterns(ohlcv))          # one row per pattern, indexed by pattern_id
    >>> len(fx.feature_names) >= 170, list(X.columns) == fx.feature_names
    (True, True)
"""
from .catalog import FAMILIES, Family, FeatureInfo
from .docs import feature_docs, feature_table
from .extractor import MARKET_FAMILIES, PATTERN_FAMILIES, FeatureExtractor
from .regime import REGIME_RULE, REGIMES, regime_labels

__all__ = [
    "FeatureExtractor", "regime_labels", "feature_docs", "feature_table",
    "FAMILIES", "Family", "FeatureInfo", "MARKET_FAMILIES", "PATTERN_FAMILIES", "REGIMES", "REGIME_RULE",
]
