"""FeatureExtractor: the market features of every bar, and the feature vector of every pattern.

    >>> from qml_plugin.data import load_ohlcv
    >>> from qml_plugin.patterns import detect_patterns
    >>> ohlcv = load_ohlcv("EURUSD_1h").iloc[:4000]
    >>> fx = FeatureExtractor()
    >>> market = fx.compute(ohlcv)                      # one row per bar, same index as ohlcv
    >>> pats = detect_patterns(ohlcv)
    >>> X = fx.extract(ohlcv, pats, market=market)      # one row per pattern, index pattern_id
    >>> X.index.name, list(X.columns) == fx.feature_names, len(fx.schema_hash)
    ('pattern_id', True, 64)
    >>> fx.regimes(ohlcv, pats).isin(["trending", "ranging", "volatile"]).all()
    np.True_

``compute`` runs each family once over the whole series (numpy, pandas rolling windows, numba
kernels; never a loop over bars). ``extract`` is the same computation kept only at the detection
bars (a row lookup, so memory stays small on long series) plus the per-pattern ``geo_`` and
``temp_pattern_*`` columns; it also adds ``pattern_id`` (first, when the pattern frame has one)
and ``regime_at_detection`` (last, a label, not a feature).

The feature set is declared once, in the family functions (see :mod:`.catalog`), so names, docs
and code agree. ``feature_names`` is: the market features in family order ``ctx, vol, mom, volu,
regime, temp``, then the pattern features ``geo`` and ``temp_pattern_*``. ``schema_hash`` is the
sha256 of :attr:`FeatureExtractor.schema_version` and those names in order: two extractors with the
same hash produce the same columns, in any process.

``config`` (a mapping, validated when first used; a bad key is a :class:`ConfigError`):

- ``families``: the families to keep, default all seven, e.g. ``["ctx", "geo", "vol"]``;
- ``exclude``: feature names to drop, e.g. ``["temp_month_sin", "temp_month_cos"]``.

To add features, subclass and extend :meth:`market_families` or :meth:`pattern_families` with a
:class:`~.catalog.Family`; the new names change ``schema_hash``.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ..data import OHLCV_COLUMNS
from ..errors import ConfigError, DataError
from .catalog import FAMILIES, Collector, Family, FeatureInfo
from .geometry import REQUIRED_PATTERN_COLUMNS, PatternView, geometry_features, timing_features
from .indicators import Bars
from .market import context_features, momentum_features, volatility_features
from .regime import REGIMES, regime_codes, regime_features
from .temporal import calendar_features
from .volume import volume_features

__all__ = ["FeatureExtractor", "MARKET_FAMILIES", "PATTERN_FAMILIES"]

MARKET_FAMILIES: tuple[Family, ...] = (
    Family("ctx", context_features), Family("vol", volatility_features), Family("mom", momentum_features),
    Family("volu", volume_features), Family("regime", regime_features), Family("temp", calendar_features),
)
"""Families with one value per bar, in column order."""

PATTERN_FAMILIES: tuple[Family, ...] = (
    Family("geo", geometry_features, per="pattern"), Family("temp", timing_features, per="pattern"),
)
"""Families with one value per pattern, in column order (after the market features)."""

_CONFIG_KEYS = ("families", "exclude")


class FeatureExtractor:
    """Causal, scale-free features for QML patterns (>= 170, in seven prefixed families).

    Parameters are stored as given (scikit-learn style); nothing is computed until asked.
    """

    schema_version: ClassVar[str] = "qml-features/1"
    """Bumped when a feature keeps its name but changes its meaning; part of :attr:`schema_hash`."""

    def __init__(self, config: Mapping[str, Any] | None = None):
        self.config = config

    # -- scikit-learn conventions ------------------------------------------------------------------
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"config": self.config}

    def set_params(self, **params: Any) -> FeatureExtractor:
        for key, value in params.items():
            if key != "config":
                raise ConfigError(f"FeatureExtractor has no parameter {key!r}; allowed: 'config'")
            self.config = value
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}(config={self.config!r})"

    # -- the feature set ---------------------------------------------------------------------------
    def market_families(self) -> tuple[Family, ...]:
        """Families computed for every bar; override to add some."""
        return MARKET_FAMILIES

    def pattern_families(self) -> tuple[Family, ...]:
        """Families computed for every pattern; override to add some."""
        return PATTERN_FAMILIES

    def describe(self) -> list[FeatureInfo]:
        """``(name, family, doc)`` of every feature, in :attr:`feature_names` order."""
        market, pattern = self._plan()
        return market + pattern

    @property
    def feature_names(self) -> list[str]:
        """The columns of :meth:`extract`, in order."""
        return [f.name for f in self.describe()]

    @property
    def market_feature_names(self) -> list[str]:
        """The columns of :meth:`compute`, in order."""
        return [f.name for f in self._plan()[0]]

    @property
    def schema_hash(self) -> str:
        """sha256 hex of :attr:`schema_version` and the ordered feature names."""
        text = "\n".join([self.schema_version, *self.feature_names])
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    # -- computing -----------------------------------------------------------------------------
    def compute(self, ohlcv: pd.DataFrame) -> pd.DataFrame:
        """Market features of every bar (float64, same index as ``ohlcv``); causal bar by bar."""
        bars = Bars(_check_ohlcv(ohlcv))
        market, _ = self._plan()
        out = np.empty((bars.n, len(market)), order="F")
        self._fill(self._selected(self.market_families()), bars, market, out, rows=None, start=0)
        return pd.DataFrame(out, index=ohlcv.index, columns=[f.name for f in market], copy=False)

    def extract(self, ohlcv: pd.DataFrame, patterns: pd.DataFrame, *,
                market: pd.DataFrame | None = None) -> pd.DataFrame:
        """One row per pattern: market features at ``detection_bar``, then the pattern features.

        The columns are exactly :attr:`feature_names` (all float64, NaN where undefined) and the
        index is the patterns' ``pattern_id`` (their own index when they have no such column), so
        ``register_patterns(patterns, X)`` and ``SignalQualityModel().fit(X, y)`` take it as is.
        ``detection_bar`` etc. are positions in ``ohlcv`` (as :func:`detect_patterns` returns them).
        ``market``: this extractor's :meth:`compute` of the same ``ohlcv``, when already at hand
        (another parameter set on the same bars); its rows are used instead of recomputing them.
        """
        bars, view = self._pattern_view(ohlcv, patterns)
        market_infos, pattern = self._plan()
        out = np.empty((view.m, len(market_infos) + len(pattern)), order="F")
        if market is None:
            self._fill(self._selected(self.market_families()), bars, market_infos, out, rows=view.t, start=0)
        else:
            names = [f.name for f in market_infos]
            self._check_market(market, ohlcv, names, bars.n)
            out[:, :len(names)] = market.to_numpy(dtype=np.float64)[view.t]
        self._fill(self._selected(self.pattern_families()), view, pattern, out, rows=None, start=len(market_infos))
        return pd.DataFrame(out, index=_pattern_index(patterns), columns=[f.name for f in market_infos + pattern],
                            copy=False)

    def regimes(self, ohlcv: pd.DataFrame, patterns: pd.DataFrame, *,
                market: pd.DataFrame | None = None) -> pd.Series:
        """``regime_at_detection`` of every pattern: ``trending`` / ``ranging`` / ``volatile``
        (:data:`~.regime.REGIMES`; None in the warm-up), on the same index as :meth:`extract`.

        The registry stores it beside the features, and regime models (SPEC §13) split on it.
        ``market``: as in :meth:`extract` (its one-hot ``regime_*`` columns are read, not recomputed).
        """
        bars, view = self._pattern_view(ohlcv, patterns)
        if market is not None:
            self._check_market(market, ohlcv, list(market.columns), bars.n)
        code = _regime_at(bars, view.t, market)
        labels = np.array(REGIMES, dtype=object)[np.where(np.isnan(code), 0, code).astype(np.int64)]
        labels[np.isnan(code)] = None
        return pd.Series(labels, index=_pattern_index(patterns), dtype=object, name="regime_at_detection")

    @staticmethod
    def _pattern_view(ohlcv: pd.DataFrame, patterns: pd.DataFrame) -> tuple[Bars, PatternView]:
        if not isinstance(patterns, pd.DataFrame):
            raise DataError(f"patterns must be a DataFrame from detect_patterns, got {type(patterns).__name__}")
        bars = Bars(_check_ohlcv(ohlcv))
        return bars, PatternView(bars, patterns)

    @staticmethod
    def _check_market(market: Any, ohlcv: pd.DataFrame, names: list[str], n: int) -> None:
        if (not isinstance(market, pd.DataFrame) or list(market.columns) != names
                or not market.index.equals(ohlcv.index)):
            raise DataError(f"market must be this extractor's compute() of the same {n} bars "
                            f"(same index, its {len(names)} market columns); got "
                            f"{type(market).__name__} of shape {getattr(market, 'shape', None)}")

    # -- internals -----------------------------------------------------------------------------
    def _config(self) -> tuple[set[str], set[str]]:
        config = {} if self.config is None else self.config
        if not isinstance(config, Mapping):
            raise ConfigError(f"FeatureExtractor config must be a mapping with keys {list(_CONFIG_KEYS)}, "
                              f"got {type(config).__name__}")
        unknown = [k for k in config if k not in _CONFIG_KEYS]
        if unknown:
            raise ConfigError(f"unknown FeatureExtractor config key {unknown[0]!r}; allowed: {list(_CONFIG_KEYS)}")
        families = _str_list(config.get("families", FAMILIES), "families")
        bad = [f for f in families if f not in FAMILIES]
        if bad:
            raise ConfigError(f"features.families: unknown family {bad[0]!r}; allowed: {list(FAMILIES)}")
        return set(families), set(_str_list(config.get("exclude", ()), "exclude"))

    def _selected(self, families: Sequence[Family]) -> list[Family]:
        wanted, _ = self._config()
        return [f for f in families if f.prefix in wanted]

    def _plan(self) -> tuple[list[FeatureInfo], list[FeatureInfo]]:
        """List (never compute) the selected features: ``(market, pattern)``."""
        _, exclude = self._config()
        lists: list[list[FeatureInfo]] = []
        everything: set[str] = set()
        empty = Bars(pd.DataFrame({c: np.empty(0) for c in OHLCV_COLUMNS}, index=pd.DatetimeIndex([])))
        no_patterns = PatternView(empty, pd.DataFrame({c: np.empty(0) for c in REQUIRED_PATTERN_COLUMNS}))
        for families, src in ((self.market_families(), empty), (self.pattern_families(), no_patterns)):
            infos: list[FeatureInfo] = []
            for family in families:
                collector = Collector(family.prefix)
                family.declare(src, collector)
                everything.update(f.name for f in collector.infos)
                if family in self._selected(families):
                    infos.extend(f for f in collector.infos if f.name not in exclude)
            lists.append(infos)
        unknown = sorted(exclude - everything)
        if unknown:
            raise ConfigError(f"features.exclude: unknown feature {unknown[0]!r}; "
                              "see FeatureExtractor().feature_names for the valid names")
        names = [f.name for f in lists[0] + lists[1]]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise ConfigError(f"feature {dup!r} is declared twice; feature names must be unique")
        return lists[0], lists[1]

    @staticmethod
    def _fill(families: Sequence[Family], src: Any, infos: list[FeatureInfo], out: np.ndarray,
              rows: np.ndarray | None, start: int) -> None:
        keep = {f.name for f in infos}
        column = start
        for family in families:
            collector = Collector(family.prefix, keep=keep, out=out, rows=rows, start=column)
            family.declare(src, collector)
            column = collector.column
        if column != start + len(infos):
            raise RuntimeError("feature families declared a different set of features than they computed")


def _pattern_index(patterns: pd.DataFrame) -> pd.Index:
    """The rows' identity: ``pattern_id`` when the patterns have it, else their own index."""
    if "pattern_id" in patterns.columns:
        return pd.Index(patterns["pattern_id"].to_numpy(), name="pattern_id")
    return patterns.index


def _regime_at(bars: Bars, rows: np.ndarray, market: pd.DataFrame | None) -> np.ndarray:
    """Regime codes at ``rows``: read off the one-hot ``regime_*`` columns of a precomputed market
    matrix when it has them (no second pass over the series), else computed from the bars."""
    onehot = [f"regime_{name}" for name in REGIMES]
    if market is None or not set(onehot) <= set(market.columns):
        return regime_codes(bars)[rows] if len(rows) else np.empty(0)
    hot = market[onehot].to_numpy(dtype=np.float64)[rows]
    return np.where(np.isnan(hot[:, 0]), np.nan, hot @ np.arange(len(REGIMES), dtype=np.float64))


def _str_list(value: Any, key: str) -> list[str]:
    if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)) or \
            not all(isinstance(v, str) for v in value):
        raise ConfigError(f"features.{key} must be a list of names, got {value!r}")
    return list(value)


def _check_ohlcv(ohlcv: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(ohlcv, pd.DataFrame):
        raise DataError(f"expected a pandas DataFrame of OHLCV bars, got {type(ohlcv).__name__}")
    missing = [c for c in OHLCV_COLUMNS if c not in ohlcv.columns]
    if missing:
        raise DataError(f"missing columns {missing}; need {list(OHLCV_COLUMNS)} (see load_ohlcv)")
    return ohlcv
