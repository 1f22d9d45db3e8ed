"""What the model side reads from the registry: training data with the heads' targets, recent features,
labeled counts (a mixin of ``PatternRegistry``; private to ``registry/``, public through it).

Feature blobs are decoded by ``_frames`` (float32-precision values as float64), times come back as
datetimes: naive ones in the data's clock, and the ``*_utc`` instants tz-aware in UTC.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InsufficientDataError
from . import _frames as fr
from . import _sql as sql
from .connection import translate_errors

__all__ = ["TrainingReads"]


class TrainingReads:
    """``get_training_data``, ``get_recent_features``, ``count_labeled``, ``training_feature_schema``."""

    path: str

    def _db(self) -> Any:                     # provided by PatternRegistry
        raise NotImplementedError

    def _feature_names(self, set_ids: Sequence[int]) -> Mapping[int, list[str]]:   # provided by PatternRegistry
        raise NotImplementedError

    def get_training_data(self, min_labels: int = 30, start: Any = None, end: Any = None, *,
                          targets: bool = False) -> tuple[pd.DataFrame, np.ndarray | pd.DataFrame]:
        """Features and labels of every trainable pattern, oldest first.

        Trainable = a label (1/0) exists, the user did not say ``ignore``, and features were
        stored. The user's label wins where there is one. ``start`` (inclusive) and ``end``
        (exclusive) filter on ``detection_time``.

        Returns ``(X, y)``: ``X`` is a float64 DataFrame of the stored (float32-precision) values,
        one column per feature (the order of the stored feature sets, stable), indexed by a
        MultiIndex ``(pattern_id, detection_time, exit_time)`` (times as naive datetimes in the
        data's clock, ``exit_time`` NaT when unknown), sorted by ``detection_time`` then
        ``pattern_id``; ``y`` is an int64 ndarray of 0/1 aligned with ``X``.

        With ``targets=True`` the second item is a DataFrame on ``X``'s index holding the targets of
        the three model heads (SPEC §7) and the instants the guard compares: ``label`` (int64 0/1,
        as ``y``), ``r_multiple`` (float, NaN when the pattern has no outcome of its own, e.g. only
        a user's win/loss: a user's label sets ``label`` only), ``stop_first`` (float 1.0 / 0.0 /
        NaN), ``exit_known_at_utc`` and ``known_at_utc`` (tz-aware UTC, NaT when not recorded).
        Fewer than ``min_labels`` rows raise :class:`InsufficientDataError`.
        """
        lo = fr.iso_times([start], "start")[0] if start is not None else None
        hi = fr.iso_times([end], "end")[0] if end is not None else None
        query = ("SELECT pattern_id, detection_time, exit_time, label, feature_set_id, features, r_multiple, "
                 f"stop_first, exit_known_at_utc, known_at_utc FROM ml_pattern_registry WHERE {sql.TRAINABLE} "
                 "AND (CAST(?1 AS TEXT) IS NULL OR detection_time >= ?1) "
                 "AND (CAST(?2 AS TEXT) IS NULL OR detection_time < ?2) ORDER BY detection_time, pattern_id")
        with translate_errors(self.path):
            rows = self._db().execute(query, (lo, hi)).fetchall()
        if len(rows) < min_labels:
            window = "" if lo is None and hi is None else f" with detection_time in [{lo}, {hi})"
            raise InsufficientDataError(
                f"training needs at least {min_labels} labeled patterns but the registry has {len(rows)}"
                f"{window} (rows labeled 'ignore' or without features do not count); record more "
                "outcomes, label patterns with `qml label`, or lower min_labels")
        pids, det, ext, lab, sets, blobs, r_mult, stop_first, exit_known, known = (
            zip(*rows, strict=True) if rows else ([],) * 10)
        names, matrix = fr.unpack_features(sets, blobs, self._feature_names(sets))
        index = pd.MultiIndex.from_arrays(
            [pd.Index(pids, dtype=object), fr.read_times(det), fr.read_times(ext)],
            names=["pattern_id", "detection_time", "exit_time"])
        X = pd.DataFrame(matrix, index=index, columns=pd.Index(names, dtype=object))
        y = np.asarray(lab, dtype=np.int64)
        if not targets:
            return X, y
        return X, pd.DataFrame({
            "label": y, "r_multiple": np.asarray(r_mult, dtype=np.float64),
            "stop_first": np.asarray(stop_first, dtype=np.float64),
            "exit_known_at_utc": fr.read_times(exit_known, utc=True), "known_at_utc": fr.read_times(known, utc=True),
        }, index=index)

    def count_labeled(self, *, detected_after: Any = None) -> int:
        """How many patterns have a win/loss label (detected strictly after ``detected_after``, if given)."""
        after = fr.iso_times([detected_after], "detected_after")[0] if detected_after is not None else None
        return int(self._db().execute(
            "SELECT COUNT(*) FROM ml_pattern_registry WHERE label IS NOT NULL "
            "AND (CAST(?1 AS TEXT) IS NULL OR detection_time > ?1)", (after,)).fetchone()[0])

    def training_feature_schema(self) -> str | None:
        """The ``feature_schema`` most trainable patterns were stored with (None on an empty registry)."""
        row = self._db().execute(
            f"SELECT feature_schema FROM ml_pattern_registry WHERE {sql.TRAINABLE} GROUP BY feature_schema "
            "ORDER BY COUNT(*) DESC, feature_schema LIMIT 1").fetchone()
        return None if row is None else row[0]

    def get_recent_features(self, after: Any = None, limit: int = 300) -> pd.DataFrame:
        """Features of the newest ``limit`` patterns detected after ``after`` (labeled or not), oldest
        first, indexed by ``(pattern_id, detection_time)``: what drift detection compares. One read."""
        text = fr.iso_times([after], "after")[0] if after is not None else None
        with translate_errors(self.path):
            rows = self._db().execute(
                "SELECT pattern_id, detection_time, feature_set_id, features FROM ml_pattern_registry "
                "WHERE features IS NOT NULL AND (CAST(?1 AS TEXT) IS NULL OR detection_time > ?1) "
                "ORDER BY detection_time DESC, pattern_id DESC LIMIT ?2", (text, int(limit))).fetchall()[::-1]
        pids, det, sets, blobs = zip(*rows, strict=True) if rows else ([],) * 4
        names, matrix = fr.unpack_features(sets, blobs, self._feature_names(sets))
        index = pd.MultiIndex.from_arrays(
            [pd.Index(pids, dtype=object), pd.to_datetime(pd.Series(det, dtype=object), format="ISO8601")],
            names=["pattern_id", "detection_time"])
        return pd.DataFrame(matrix, index=index, columns=pd.Index(names, dtype=object))

