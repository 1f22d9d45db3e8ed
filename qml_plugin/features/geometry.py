"""Pattern geometry (``geo_``) and pattern timing (``temp_pattern_*``): one value per pattern.

A QML pattern is three swings (``P1`` shoulder, ``P2`` break level, ``P3`` head) plus its trade
levels, detected at bar ``t``. This module turns those into shape features a model can compare
across markets: every price distance is divided by ATR14 at ``t`` (or by the price), every
directional quantity is multiplied by ``direction`` so a bullish and a bearish pattern of the same
shape get the same numbers.

Causality: the features read the pattern's own columns, ATR14 at bars ``<= t`` and OHLC at bars
``<= t`` only (the break bar and the post-head extreme are found by scanning ``P3 .. t``), so a
pattern's geometry is the same on ``ohlcv[:t+1]`` as on the full frame.

The ``geo_validity_*`` parts are copied from the detector's ``validity_*`` columns when the pattern
frame has them (``detect_patterns`` does), and are NaN otherwise. Shoulder symmetry in time is
``geo_validity_symmetry`` (the detector's :func:`~qml_plugin.patterns.qml.leg_symmetry` of the leg
bars; a separate ``geo_time_symmetry`` repeated it exactly and was dropped from the schema).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import DataError
from ..patterns.qml import leg_symmetry
from . import kernels
from .catalog import Add
from .indicators import Bars, div

__all__ = ["PatternView", "geometry_features", "timing_features", "REQUIRED_PATTERN_COLUMNS"]

REQUIRED_PATTERN_COLUMNS = ("direction", "detection_bar", "p1_bar", "p1_price", "p2_bar", "p2_price",
                            "p3_bar", "p3_price", "entry", "stop", "target", "rr", "validity_score")
"""Pattern columns (SPEC §2) that :meth:`FeatureExtractor.extract` needs."""

_PRICE_COLUMNS = ("p1_price", "p2_price", "p3_price", "entry", "stop", "target", "rr", "validity_score")
_VALIDITY_PARTS = ("depth", "symmetry", "break", "rr")


class PatternView:
    """The patterns of one series as plain arrays, with the bars they were found on."""

    def __init__(self, bars: Bars, patterns: pd.DataFrame):
        missing = [c for c in REQUIRED_PATTERN_COLUMNS if c not in patterns.columns]
        if missing:
            raise DataError(f"pattern frame is missing columns {missing}; "
                            f"need {list(REQUIRED_PATTERN_COLUMNS)} (see detect_patterns)")
        self.bars = bars
        self.m = len(patterns)
        self.direction = patterns["direction"].to_numpy(np.float64)
        ints = {}
        for col in ("p1_bar", "p2_bar", "p3_bar", "detection_bar"):
            raw = patterns[col].to_numpy()
            if self.m and (not np.issubdtype(raw.dtype, np.number) or np.isnan(raw.astype(float)).any()
                           or (raw.astype(float) % 1 != 0).any()):
                raise DataError(f"pattern column {col!r} must hold whole bar numbers, got dtype {raw.dtype}")
            ints[col] = raw.astype(np.int64)
        self.p1_bar, self.p2_bar, self.p3_bar, self.t = (ints[c] for c in ("p1_bar", "p2_bar", "p3_bar",
                                                                          "detection_bar"))
        bad = ~((0 <= self.p1_bar) & (self.p1_bar <= self.p2_bar) & (self.p2_bar <= self.p3_bar)
                & (self.p3_bar <= self.t) & (self.t < bars.n))
        if bad.any():
            i = int(np.argmax(bad))
            who = patterns["pattern_id"].iloc[i] if "pattern_id" in patterns.columns else patterns.index[i]
            raise DataError(
                f"pattern {who}: bars p1={self.p1_bar[i]}, p2={self.p2_bar[i]}, p3={self.p3_bar[i]}, "
                f"detection={self.t[i]} must satisfy 0 <= p1 <= p2 <= p3 <= detection_bar < {bars.n} "
                "(the number of bars of ohlcv)")
        if ((self.direction != 1) & (self.direction != -1)).any():
            raise DataError("pattern column 'direction' must be +1 (bullish) or -1 (bearish)")
        self.cols = {c: patterns[c].to_numpy(np.float64) for c in _PRICE_COLUMNS}
        self.validity = {p: (patterns[f"validity_{p}"].to_numpy(np.float64)
                             if f"validity_{p}" in patterns.columns else np.full(self.m, np.nan))
                         for p in _VALIDITY_PARTS}
        self._scan: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def __getitem__(self, col: str) -> np.ndarray:
        return self.cols[col]

    def atr(self, bar: np.ndarray | None = None) -> np.ndarray:
        """ATR14 at ``bar`` (default: the detection bar)."""
        return self.bars.atr(14)[self.t if bar is None else bar]

    def in_atr(self, x: np.ndarray) -> np.ndarray:
        return div(x, self.atr())

    def scan(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(break_bar, extreme_price, extreme_bar)`` from :func:`.kernels.pattern_scan`."""
        if self._scan is None:
            b = self.bars
            self._scan = kernels.pattern_scan(b.open, b.high, b.low, b.close, self.direction,
                                              self["p2_price"], self.p3_bar, self.t)
        return self._scan

    def at_break(self, x: np.ndarray) -> np.ndarray:
        """``x`` at each pattern's break bar (NaN when the pattern has none)."""
        brk = self.scan()[0]
        return np.where(brk >= 0, x[np.maximum(brk, 0)], np.nan)


def geometry_features(p: PatternView, add: Add) -> None:
    """``geo_``: the pattern's shape, its break and its trade levels, in ATR14 and signed by direction."""
    d = p.direction
    add("geo_direction", "+1 bullish QML (a buy), -1 bearish QML (a sell)", lambda: d)
    add("geo_head_depth_atr", "head depth beyond the shoulder, direction * (P1 - P3) / ATR14",
        lambda: p.in_atr(d * (p["p1_price"] - p["p3_price"])))
    add("geo_head_depth_pct", "head depth beyond the shoulder as % of Close at detection",
        lambda: 100.0 * d * (p["p1_price"] - p["p3_price"]) / p.bars.close[p.t])
    add("geo_left_leg_atr", "shoulder-to-P2 leg, |P2 - P1| / ATR14",
        lambda: p.in_atr(np.abs(p["p2_price"] - p["p1_price"])))
    add("geo_right_leg_atr", "P2-to-head leg, |P2 - P3| / ATR14",
        lambda: p.in_atr(np.abs(p["p2_price"] - p["p3_price"])))
    add("geo_leg_ratio", "right leg / left leg in price (> 1: the head leg is longer)",
        lambda: div(np.abs(p["p2_price"] - p["p3_price"]), np.abs(p["p2_price"] - p["p1_price"])))
    add("geo_price_symmetry", "shoulder symmetry in price: min(left, right leg) / max(...), 0..1",
        lambda: leg_symmetry(np.abs(p["p2_price"] - p["p1_price"]), np.abs(p["p2_price"] - p["p3_price"])))
    add("geo_left_leg_bars", "bars from P1 to P2", lambda: (p.p2_bar - p.p1_bar).astype(float))
    add("geo_right_leg_bars", "bars from P2 to P3", lambda: (p.p3_bar - p.p2_bar).astype(float))
    add("geo_head_share", "head depth / right leg, (P1 - P3) / (P2 - P3): how much of the leg is the head, 0..1",
        lambda: div(d * (p["p1_price"] - p["p3_price"]), d * (p["p2_price"] - p["p3_price"])))
    add("geo_shoulder_head_slope_atr", "slope of the line P1 -> P3 toward the head, ATR14 per bar",
        lambda: p.in_atr(div(d * (p["p1_price"] - p["p3_price"]), (p.p3_bar - p.p1_bar).astype(float))))
    add("geo_neckline_slope_atr",
        "neckline slope from P2 to the post-head extreme (highest High / lowest Low since the head), ATR14 per bar",
        lambda: p.in_atr(d * (p.scan()[1] - p["p2_price"]) / np.maximum(p.scan()[2] - p.p2_bar, 1)))
    add("geo_post_head_extreme_atr", "how far price went beyond P2 after the head (up to detection) / ATR14",
        lambda: p.in_atr(d * (p.scan()[1] - p["p2_price"])))
    add("geo_structure_height_atr", "from the head to the post-head extreme, / ATR14",
        lambda: p.in_atr(d * (p.scan()[1] - p["p3_price"])))
    add("geo_break_bars", "bars from the head P3 to the break of structure (first Close beyond P2)",
        lambda: np.where(p.scan()[0] >= 0, p.scan()[0] - p.p3_bar, np.nan))
    add("geo_break_strength_atr", "break strength: how far the break bar closed beyond P2 / ATR14",
        lambda: p.in_atr(d * (p.at_break(p.bars.close) - p["p2_price"])))
    add("geo_break_body_atr", "body of the break bar in the pattern's direction / ATR14",
        lambda: p.in_atr(d * (p.at_break(p.bars.close) - p.at_break(p.bars.open))))
    add("geo_break_range_atr", "High - Low of the break bar / ATR14",
        lambda: p.in_atr(p.at_break(p.bars.high) - p.at_break(p.bars.low)))
    add("geo_head_rejection_atr", "how far the head bar closed back from its extreme / ATR14",
        lambda: p.in_atr(d * (p.bars.close[p.p3_bar] - p["p3_price"])))
    add("geo_head_bar_range_atr", "High - Low of the head bar / ATR14",
        lambda: p.in_atr(p.bars.high[p.p3_bar] - p.bars.low[p.p3_bar]))
    add("geo_prior_trend_atr", "move into the shoulder: direction * (P1 - Close 20 bars before P1) / ATR14",
        lambda: p.in_atr(d * (p["p1_price"] - _close_before(p, 20))))
    add("geo_atr_change", "ATR14 at the head / ATR14 at detection (volatility change during the pattern)",
        lambda: div(p.atr(p.p3_bar), p.atr()))
    add("geo_close_to_entry_atr", "distance the price must retrace to the entry, direction * (Close - entry) / ATR14",
        lambda: p.in_atr(d * (p.bars.close[p.t] - p["entry"])))
    add("geo_risk_atr", "planned risk |entry - stop| / ATR14", lambda: p.in_atr(np.abs(p["entry"] - p["stop"])))
    add("geo_reward_atr", "planned reward |target - entry| / ATR14", lambda: p.in_atr(np.abs(p["target"] - p["entry"])))
    add("geo_risk_pct", "planned risk |entry - stop| as % of the entry price",
        lambda: 100.0 * div(np.abs(p["entry"] - p["stop"]), p["entry"]))
    add("geo_rr", "planned reward:risk, the pattern's rr column", lambda: p["rr"])
    add("geo_validity_score", "the detector's rule-based technical score, 0..1", lambda: p["validity_score"])
    for part in _VALIDITY_PARTS:
        add(f"geo_validity_{part}", f"the {part} part of validity_score, 0..1 (NaN if the detector gives none)",
            lambda part=part: p.validity[part])


def _close_before(p: PatternView, k: int) -> np.ndarray:
    bar = p.p1_bar - k
    return np.where(bar >= 0, p.bars.close[np.maximum(bar, 0)], np.nan)


def timing_features(p: PatternView, add: Add) -> None:
    """``temp_pattern_*``: how long the pattern took to form and to confirm."""
    add("temp_pattern_bars", "pattern duration, bars from P1 to detection", lambda: (p.t - p.p1_bar).astype(float))
    add("temp_pattern_formation_bars", "bars from P1 to the head P3", lambda: (p.p3_bar - p.p1_bar).astype(float))
    add("temp_pattern_confirm_bars", "bars from the head P3 to detection", lambda: (p.t - p.p3_bar).astype(float))
    add("temp_pattern_days", "pattern duration in calendar days, P1 to detection (NaN without a DatetimeIndex)",
        lambda: _days(p))


def _days(p: PatternView) -> np.ndarray:
    idx = p.bars.index
    if not isinstance(idx, pd.DatetimeIndex):
        return np.full(p.m, np.nan)
    return np.asarray((idx[p.t] - idx[p.p1_bar]) / pd.Timedelta(days=1), dtype=np.float64)
