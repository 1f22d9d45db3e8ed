"""The out-of-sample guard: which model may score which pattern (SPEC §7).

Every model stores ``trained_on_end``: the last exit time of its training data, i.e. the moment
all its labels were known. It may score a pattern only when ``trained_on_end < detection_time -
embargo``. With several models (walk-forward versions), each pattern is scored by the *latest*
model that passes. This is the one implementation; walk-forward training, the filter
(:mod:`qml_plugin.filter`) and the vectorbt sweep all call it.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["admissible_model"]


def admissible_model(detection_times, trained_on_end: Sequence, embargo: pd.Timedelta | None = None) -> np.ndarray:
    """Index of the latest model whose training data all exited before each pattern (-1: none).

    ``trained_on_end`` is one timestamp per model, in any order; the *latest* admissible model is
    the one with the greatest ``trained_on_end`` still ``< detection_time - embargo``.

        >>> admissible_model(pd.to_datetime(["2011-06-01"]), pd.to_datetime(["2010-01-01", "2011-01-01"]))
        array([1])
    """
    # compare in one unit: pandas keeps s/ms/us/ns resolutions apart, and asi8 counts in each one's own unit
    det = pd.DatetimeIndex(detection_times).as_unit("ns")
    if embargo is not None:
        det = (det - pd.Timedelta(embargo)).as_unit("ns")
    ends = pd.DatetimeIndex(trained_on_end).as_unit("ns")
    if len(ends) == 0:
        return np.full(len(det), -1)
    if ends.tz is None and det.tz is not None:
        ends = ends.tz_localize(det.tz)
    order = np.argsort(ends.asi8, kind="stable")
    pos = np.searchsorted(ends.asi8[order], det.asi8, side="left") - 1
    return np.where(pos >= 0, order[np.maximum(pos, 0)], -1)
