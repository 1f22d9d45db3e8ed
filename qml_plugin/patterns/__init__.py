"""Swings, QML patterns and their outcomes: the causal core of qml-plugin."""
from .labels import label_patterns
from .qml import PATTERN_COLUMNS, QMLParams, detect_patterns
from .swings import atr14, swing_points

__all__ = ["swing_points", "atr14", "QMLParams", "detect_patterns", "PATTERN_COLUMNS", "label_patterns"]
