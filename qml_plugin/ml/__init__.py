"""The model layer: walk-forward validation, the XGBoost signal-quality model, its metrics.

``validation`` (purged walk-forward splits) <- ``metrics`` (scores, honest cross-validation)
<- ``model`` (``SignalQualityModel``, JSON persistence, feature contract). Nothing here reads the
registry or knows a backtesting engine: it takes a feature frame, labels and label windows.
"""
from .metrics import calibration_table, cross_validate_walk_forward, evaluate, expected_calibration_error
from .model import SignalQualityModel, check_features
from .validation import PeriodFold, PurgedWalkForward, walk_forward_by_period

__all__ = [
    "PurgedWalkForward", "PeriodFold", "walk_forward_by_period",
    "evaluate", "calibration_table", "expected_calibration_error", "cross_validate_walk_forward",
    "SignalQualityModel", "check_features",
]
