"""The out-of-sample guard: which model may score which pattern (SPEC §7).

Every model stores ``trained_on_end``: the moment all its training labels were known (the last
exit time of its training data). It may score a pattern only when ``trained_on_end < detection_time
- embargo``. With several models (walk-forward versions), each pattern is scored by the *latest*
model that passes. This is the one implementation; walk-forward training, the scorer
(:mod:`qml_plugin.scoring`), the universe job and the vectorbt sweep all call it.

Times are compared on one clock. Across datasets that clock is UTC: pass ``known_at_utc`` (the
close of the detection bar) as the detection times, and models trained on ``exit_known_at_utc``
carry UTC ``trained_on_end`` (tz-aware, or naive UTC throughout). Mixing tz-aware instants with
naive stamps is refused: a naive stamp may be New York time, and comparing it with a UTC instant is
exactly the leak the guard exists to stop. A model without ``trained_on_end`` (trained without
times) is admissible for no pattern.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..errors import ModelError

__all__ = ["admissible_model"]


def _instants(values, what: str) -> pd.DatetimeIndex:
    idx = pd.DatetimeIndex(pd.to_datetime(pd.Index(list(values) if not hasattr(values, "dtype") else values)))
    return idx.tz_convert("UTC").as_unit("ns") if idx.tz is not None else idx.as_unit("ns")


def admissible_model(detection_times, trained_on_end: Sequence, *, embargo: pd.Timedelta | None = None) -> np.ndarray:
    """Index of the latest model whose training data all exited before each pattern (-1: none).

    ``trained_on_end`` is one timestamp per model, in any order; the *latest* admissible model is
    the one with the greatest ``trained_on_end`` still ``< detection_time - embargo`` (a duration).

        >>> admissible_model(pd.to_datetime(["2011-06-01"]), pd.to_datetime(["2010-01-01", "2011-01-01"]))
        array([1])
        >>> admissible_model(pd.to_datetime(["2011-01-01 12:00"]), pd.to_datetime(["2011-01-01"]), embargo="1D")
        array([-1])
    """
    # compare in one unit: pandas keeps s/ms/us/ns resolutions apart, and asi8 counts in each one's own unit
    det = _instants(detection_times, "detection_times")
    ends = _instants(trained_on_end, "trained_on_end")
    if len(ends) == 0:
        return np.full(len(det), -1)
    if len(det) and (det.tz is None) != (ends.tz is None):
        raise ModelError(f"cannot compare {'tz-aware' if det.tz is not None else 'naive'} detection times with "
                         f"{'tz-aware' if ends.tz is not None else 'naive'} model training ends: score UTC instants "
                         "(known_at_utc) with models trained on UTC instants (exit_known_at_utc), or naive stamps "
                         "of one clock with models trained on the same clock")
    if embargo is not None:
        delta = pd.Timedelta(embargo)
        if delta is pd.NaT or delta < pd.Timedelta(0):
            raise ValueError(f"embargo must be a duration >= 0, got {embargo!r}")
        det = (det - delta).as_unit("ns")
    end_ns = ends.asi8.copy()
    end_ns[ends.isna()] = np.iinfo(np.int64).max          # never known: admissible for nothing
    order = np.argsort(end_ns, kind="stable")
    pos = np.searchsorted(end_ns[order], det.asi8, side="left") - 1
    return np.where(pos >= 0, order[np.maximum(pos, 0)], -1)
