"""The registry's SQL statements, built once at import from fixed column lists (private).

Only identifiers from the tuples below are ever formatted into SQL; every value is a ``?``
parameter. The label ranking lives here, in SQL, so it is applied atomically by SQLite inside
the same statement that writes the row (no read-modify-write race between processes):

- an outcome *wins* when it has a label and its source ranks at least as high as the stored one
  (``user`` 3 > ``trade`` 2 > ``triple_barrier`` 1 > none 0); a winner sets ``label`` and
  ``label_source`` and its known values replace the stored ``r_multiple``, ``trade_outcome``,
  ``exit_time``, ``exit_known_at_utc``, ``stop_first``, ``status``, ``exit_reason`` (a trade
  record without ``r_multiple`` keeps the triple barrier's);
- a loser only fills outcome columns that are still NULL, and never touches ``label``.
"""
from __future__ import annotations

__all__ = ["LABEL_RANK", "COLUMNS", "PUBLIC_COLUMNS", "UPSERT", "UPSERT_FROM_BATCH", "BATCH_TABLE", "RECORD",
           "LABEL_USER", "TRAINABLE", "STAT_GROUPS"]

COLUMNS = ("pattern_id", "symbol", "timeframe", "detection_time", "known_at_utc", "pattern_type", "direction",
           "detection_bar", "entry", "stop", "target", "rr", "validity_score", "ml_confidence",
           "ml_decision", "regime_at_detection", "run_id", "paper_traded", "live_traded",
           "feature_set_id", "features", "feature_schema", "label", "label_source", "r_multiple",
           "trade_outcome", "exit_time", "exit_known_at_utc", "stop_first", "status", "exit_reason", "created_at",
           "updated_at", "rev")
"""Columns ``UPSERT`` writes, in parameter order."""

PUBLIC_COLUMNS = tuple(c for c in COLUMNS if c not in ("features", "feature_set_id", "rev")) + ("user_label",)
"""What a pattern looks like as a dict (everything but the packed features and the write counter)."""

_NEWEST_WINS = ("timeframe", "detection_time", "known_at_utc", "pattern_type", "direction", "detection_bar", "entry",
                "stop", "target", "rr", "validity_score", "ml_confidence", "ml_decision",
                "regime_at_detection", "run_id")
_OUTCOME = ("r_multiple", "trade_outcome", "exit_time", "exit_known_at_utc", "stop_first", "status", "exit_reason")


LABEL_RANK = {"user": 3, "trade": 2, "triple_barrier": 1}
"""Which label source may overwrite which: higher or equal rank replaces, lower only fills gaps."""


def _rank(expr: str) -> str:
    # the sources and ranks are the fixed constants above, never user input
    return f"(CASE {expr} {' '.join(f'WHEN {s!r} THEN {r}' for s, r in LABEL_RANK.items())} ELSE 0 END)"


_WINS = f"(excluded.label IS NOT NULL AND {_rank('excluded.label_source')} >= {_rank('t.label_source')})"


def _greater(c: str) -> str:
    return f"{c} = CASE WHEN excluded.{c} > t.{c} THEN excluded.{c} ELSE t.{c} END, "


UPSERT = (
    f"INSERT INTO ml_pattern_registry AS t ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
    "ON CONFLICT (pattern_id) DO UPDATE SET symbol = excluded.symbol, "
    + "".join(f"{c} = COALESCE(excluded.{c}, t.{c}), " for c in _NEWEST_WINS)
    + _greater("paper_traded") + _greater("live_traded")
    + "feature_set_id = CASE WHEN excluded.features IS NULL THEN t.feature_set_id ELSE excluded.feature_set_id END, "
      "features = COALESCE(excluded.features, t.features), "
      "feature_schema = CASE WHEN excluded.features IS NULL THEN t.feature_schema ELSE excluded.feature_schema END, "
    f"label = CASE WHEN {_WINS} THEN excluded.label ELSE t.label END, "
    f"label_source = CASE WHEN {_WINS} THEN excluded.label_source ELSE t.label_source END, "
    + "".join(f"{c} = CASE WHEN {_WINS} THEN COALESCE(excluded.{c}, t.{c}) ELSE COALESCE(t.{c}, excluded.{c}) END, "
              for c in _OUTCOME)
    + "updated_at = excluded.updated_at, rev = excluded.rev"
)
"""Insert a pattern or update it in place: descriptive columns take the newest non-NULL value,
``created_at`` and user labels are kept, outcomes follow the ranking rule. The stored row is
``t`` (PostgreSQL needs every reference to it qualified), the new one ``excluded``."""

BATCH_TABLE = "qml_batch_patterns"
"""PostgreSQL: the session's temporary table a batch is COPYed into before one ``UPSERT_FROM_BATCH``."""

UPSERT_FROM_BATCH = UPSERT.replace(f"VALUES ({', '.join('?' * len(COLUMNS))})",
                                   f"SELECT {', '.join(COLUMNS)} FROM {BATCH_TABLE}")
"""The same upsert for a whole batch at once (ids must be unique within it)."""

_WINS_UPDATE = f"(CAST(?1 AS INTEGER) IS NOT NULL AND {_rank('CAST(?2 AS TEXT)')} >= {_rank('label_source')})"
_N_OUT = len(_OUTCOME)
RECORD = (
    f"UPDATE ml_pattern_registry SET label = CASE WHEN {_WINS_UPDATE} THEN ?1 ELSE label END, "
    f"label_source = CASE WHEN {_WINS_UPDATE} THEN ?2 ELSE label_source END, "
    + "".join(f"{c} = CASE WHEN {_WINS_UPDATE} THEN COALESCE(?{i}, {c}) ELSE COALESCE({c}, ?{i}) END, "
              for i, c in enumerate(_OUTCOME, start=3))
    + f"updated_at = ?{_N_OUT + 3}, rev = ?{_N_OUT + 4} WHERE pattern_id = ?{_N_OUT + 5}"
)
"""Record one outcome. Parameters: ?1 label, ?2 source, then one per ``_OUTCOME`` column
(``r_multiple, trade_outcome, exit_time, exit_known_at_utc, stop_first, status, exit_reason``),
then updated_at, rev, pattern_id."""

LABEL_USER = ("UPDATE ml_pattern_registry SET user_label = ?1, label = ?2, label_source = 'user', "
              "trade_outcome = COALESCE(?3, trade_outcome), updated_at = ?4, rev = ?5 WHERE pattern_id = ?6")
"""A user's label outranks everything, so it is a plain update."""

TRAINABLE = ("label IS NOT NULL AND (user_label IS NULL OR user_label <> 'ignore') "
             "AND features IS NOT NULL")
"""The rows training and similarity use."""

STAT_GROUPS = {
    "by_symbol": "symbol",
    "by_pattern_type": "pattern_type",
    "by_label": ("CASE WHEN user_label = 'ignore' THEN 'ignore' WHEN label = 1 THEN 'win' "
                 "WHEN label = 0 THEN 'loss' ELSE 'unlabeled' END"),
    "by_label_source": "label_source",
    "by_regime": "regime_at_detection",
}
"""``get_statistics`` groupings: key -> the (fixed) expression counted by."""
