"""``PatternRegistry``: every detected pattern with its features, levels, score and outcome.

The registry is the project's memory between runs (SPEC §5). Backtests and sweeps *register*
patterns (an upsert: the same ``pattern_id`` from two runs is one row), the triple barrier and
real trades *record outcomes*, a person *labels* patterns, and the model *trains* from it.

Labels rank ``user`` > ``trade`` > ``triple_barrier``. An outcome replaces the stored one only
when its source ranks at least as high; a lower-ranked one only fills columns still empty. The
rule is written once, in SQL (a ``CASE`` on the source's rank inside the ``ON CONFLICT`` /
``UPDATE``), so it holds under concurrent writers without a read-modify-write race.

Columns worth knowing (times are UTC ISO text, see ``_frames``):

- ``label``: the training label, 1 win / 0 loss / NULL unknown, from the highest-ranked source
  (``label_source``). A user's ``ignore`` sets it NULL and keeps the row out of training.
- ``user_label``: ``win`` / ``loss`` / ``ignore`` as the user gave it.
- ``trade_outcome``: PnL in percent (1.5 = +1.5 %); ``r_multiple``: PnL in units of risk.
- ``exit_time``: when the outcome became known, what the ML out-of-sample guard needs.

SQLite does the locking and the durability (``connection``), the schema lives in
``migrations``, the nearest-neighbour search in ``similarity``, the model tables in ``models``.

    >>> import pandas as pd
    >>> patterns = pd.DataFrame({"pattern_id": ["p1"], "symbol": ["EURUSD"],
    ...                          "detection_time": [pd.Timestamp("2024-03-01 14:00")]})
    >>> with PatternRegistry(":memory:") as reg:      # or a file, or "postgresql://user@host:5432/team"
    ...     reg.register_patterns(patterns, pd.DataFrame({"ctx_rsi_14": [55.0]}), run_id="sweep-7")
    ...     reg.record_outcomes(pd.DataFrame({"pattern_id": ["p1"], "label": [1.0], "r_multiple": [2.0]}))
    ...     X, y = reg.get_training_data(min_labels=1)
    ['p1']
    1
    >>> X.columns.tolist(), y.tolist()
    (['ctx_rsi_14'], [1])
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from itertools import repeat
from typing import Any

import numpy as np
import pandas as pd

from ..errors import RegistryError
from . import _frames as fr
from . import _sql as sql
from .connection import (
    DEFAULT_DB,
    check_writable,
    connect,
    parse_db,
    read_snapshot,
    remember_intact,
    sqlalchemy_url,
    utc_now,
    write_transaction,
)
from .migrations import apply_migrations
from .models import ModelTables
from .predictions import PredictionLog
from .similarity import SimilarityIndex
from .training import TrainingReads

__all__ = ["PatternRegistry", "USER_LABELS", "LABEL_RANK", "PUBLIC_COLUMNS"]

PUBLIC_COLUMNS = sql.PUBLIC_COLUMNS
"""The keys of a pattern dict from ``get_pattern`` / ``get_unlabeled_patterns`` (no packed features)."""

USER_LABELS = ("win", "loss", "ignore")
"""What ``label_pattern`` accepts (case-insensitive)."""

LABEL_RANK = sql.LABEL_RANK
"""Which label source may overwrite which: higher or equal rank replaces, lower only fills gaps."""

_USER_TO_LABEL = {"win": 1, "loss": 0, "ignore": None}
_COPY_FROM = 20        # PostgreSQL: batches from this size are COPYed (~5x faster than one statement per row)


class PatternRegistry(TrainingReads, ModelTables, PredictionLog):
    """The pattern registry on an SQLite file (path or ``sqlite:///`` URL) or a PostgreSQL database
    (``postgresql://user@host:port/dbname``, the ``[postgres]`` extra).

    Opening creates the file (and its folder) if needed and applies pending migrations. Use it as
    a context manager, or call :meth:`close`. One instance per process; several processes (or
    machines, on PostgreSQL) may write at once. Attributes: ``backend`` (``"sqlite"`` /
    ``"postgresql"``), ``path`` (the file, or the URL with its password hidden: for messages),
    ``url`` (what to pass to open the same registry elsewhere, password included) and
    ``sqlalchemy_url`` (the same database for SQLAlchemy, e.g. Optuna's study storage).
    """

    def __init__(self, db: str | os.PathLike[str] = DEFAULT_DB) -> None:
        self._conn, self.path = connect(db)
        self.backend: str = self._conn.dialect
        where = parse_db(db)[1]
        self.url: str = where if self.backend == "postgresql" else (
            "sqlite://" if self.path == ":memory:" else f"sqlite:///{os.path.abspath(self.path)}")
        self.sqlalchemy_url: str = sqlalchemy_url(self.url)
        try:
            apply_migrations(self._conn, path=self.path)
            check_writable(self._conn, self.path)
        except BaseException:
            self._conn.close()
            raise
        self._names_by_set: dict[int, list[str]] = {}
        self._set_by_key: dict[str, int] = {}
        self._similar = SimilarityIndex()

    # -- lifecycle -----------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection (idempotent). Committed data is already on disk."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
            if self.backend == "sqlite":
                remember_intact(self.path)

    def __enter__(self) -> PatternRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PatternRegistry({self.path!r}{'' if self._conn else ', closed'})"

    def _db(self):
        if self._conn is None:
            raise RegistryError(f"registry {self.path!r} is closed; open a new PatternRegistry")
        return self._conn

    def _next_rev(self) -> int:
        """Bump the write counter (inside the caller's transaction): the similarity cache's watermark."""
        # On PostgreSQL the row lock this UPDATE takes also orders concurrent writers: rows stamped
        # with rev N are committed before any transaction can stamp N + 1 (the cache's invariant).
        return self._db().execute("UPDATE registry_meta SET value = value + 1 WHERE key = 'rev' "
                                  "RETURNING value").fetchone()[0]

    def _feature_set_id(self, names: list[str], created: dict[str, tuple[int, list[str]]]) -> int:
        key = fr.names_key(names)
        if key in self._set_by_key:
            return self._set_by_key[key]
        conn = self._db()
        row = conn.execute("SELECT feature_set_id FROM feature_sets WHERE names_sha256 = ?", (key,)).fetchone()
        if row is None:
            row = conn.execute(
                "INSERT INTO feature_sets (names_sha256, names_json, n_features, created_at) VALUES (?, ?, ?, ?) "
                "RETURNING feature_set_id", (key, fr.dumps(names), len(names), utc_now())).fetchone()
        created[key] = (row[0], names)            # cached only once the transaction commits
        return row[0]

    def _feature_names(self, set_ids: Sequence[int]) -> dict[int, list[str]]:
        wanted = {int(s) for s in set_ids} - self._names_by_set.keys()
        for sid in wanted:
            row = self._db().execute("SELECT names_json FROM feature_sets WHERE feature_set_id = ?",
                                     (sid,)).fetchone()
            self._names_by_set[sid] = list(json.loads(row[0])) if row else []
        return self._names_by_set

    # -- writing ---------------------------------------------------------------------------------
    def register_pattern(self, pattern_data: Mapping[str, Any] | pd.Series,
                         features: Mapping[str, float] | pd.Series | None,
                         ml_confidence: float | None = None, **kwargs: Any) -> str:
        """Register (upsert) one pattern with its features (name -> value); return its ``pattern_id``.

        ``kwargs`` are those of :meth:`register_patterns` (``run_id``, ``symbol``, ...).
        """
        frame = fr.as_frame(pattern_data, "pattern_data")
        feats = None if features is None else fr.as_frame(features, "features").set_axis(frame.index)
        return self.register_patterns(frame, feats, ml_confidence=ml_confidence, **kwargs)[0]

    def register_patterns(self, patterns_df: pd.DataFrame, features_df: pd.DataFrame | None = None,
                          ml_confidence: float | Sequence[float] | pd.Series | None = None,
                          run_id: str | None = None, *, symbol: str | None = None,
                          timeframe: str | None = None, feature_schema: str | None = None,
                          label_source: str = "triple_barrier") -> list[str]:
        """Upsert many patterns in one transaction; return their ids in input order.

        ``patterns_df`` has ``detect_patterns``' columns (``pattern_id`` and ``symbol`` required;
        ``symbol`` / ``timeframe`` may instead come as keywords or ``patterns_df.attrs``). Optional
        columns stored too: ``regime_at_detection``, ``ml_confidence``, ``ml_decision``,
        ``paper_traded``, ``live_traded``, ``known_at_utc`` (when the detection bar closed, a UTC
        instant; naive = UTC), and ``label_patterns``' outcome columns (``label``, ``r_multiple``,
        ``pnl_pct``, ``exit_time``, ``exit_known_at_utc``, ``stop_first`` (else read off
        ``exit_reason``), ``status``, ``exit_reason``), recorded as
        ``label_source`` outcomes under the ranking rule. Every column of ``features_df`` is a
        feature (numeric) except ``pattern_id``; rows match by ``pattern_id`` or by index;
        ``feature_schema`` is the extractor's ``schema_hash`` (default: a hash of
        the names). A re-registered pattern keeps ``created_at`` and its labels.
        """
        frame = fr.as_frame(patterns_df, "patterns_df")
        n = len(frame)
        if n == 0:
            return []
        ids = fr.pattern_ids(frame)
        symbols = fr.text_values(frame, "symbol", symbol if symbol is not None else frame.attrs.get("symbol"))
        missing = [pid for pid, s in zip(ids, symbols, strict=True) if s is None or not s.strip()]
        if missing:
            raise RegistryError(f"symbol is required: patterns {missing[:5]} have none; add a 'symbol' "
                                "column or pass register_patterns(..., symbol='EURUSD')")
        block = fr.feature_block(features_df, frame, ids)
        labels = fr.int_values(frame, "label", (0, 1))
        now = utc_now()
        values: dict[str, Any] = {                     # every column of sql.COLUMNS, converted up front
            "pattern_id": ids, "symbol": symbols,
            "timeframe": fr.text_values(frame, "timeframe", timeframe or frame.attrs.get("timeframe")),
            "detection_time": fr.time_values(frame, "detection_time"),
            "known_at_utc": fr.time_values(frame, "known_at_utc"),
            "exit_known_at_utc": fr.time_values(frame, "exit_known_at_utc"),
            "stop_first": fr.stop_first_values(frame),
            "pattern_type": fr.text_values(frame, "pattern_type"),
            "direction": fr.int_values(frame, "direction", (-1, 1)),
            "detection_bar": fr.int_values(frame, "detection_bar"),
            **{c: fr.real_values(frame, c) for c in ("entry", "stop", "target", "rr", "validity_score",
                                                     "r_multiple")},
            "ml_confidence": fr.confidence_values(frame, ml_confidence),
            **{c: fr.text_values(frame, c) for c in ("ml_decision", "regime_at_detection", "exit_reason")},
            "run_id": fr.text_values(frame, "run_id", run_id),
            "paper_traded": fr.flag_values(frame, "paper_traded"),
            "live_traded": fr.flag_values(frame, "live_traded"),
            "features": repeat(None) if block is None else fr.pack_rows(block[1]),
            "feature_schema": repeat(None if block is None else feature_schema or fr.names_key(block[0])[:16]),
            "label": labels, "label_source": fr.auto_sources(frame, label_source, labels),
            "trade_outcome": fr.real_values(frame, "pnl_pct" if "pnl_pct" in frame.columns else "trade_outcome"),
            "exit_time": fr.time_values(frame, "exit_time"), "status": fr.outcome_status(frame, labels),
            "created_at": repeat(now), "updated_at": repeat(now),
        }
        created: dict[str, tuple[int, list[str]]] = {}
        with write_transaction(self._db(), self.path) as conn:    # the write lock is held only here
            values["rev"] = repeat(self._next_rev())
            values["feature_set_id"] = repeat(None if block is None else self._feature_set_id(block[0], created))
            rows = zip(*(values[c] for c in sql.COLUMNS))
            if conn.dialect == "postgresql" and n >= _COPY_FROM and len(set(ids)) == n:
                conn.copy_into_temp(sql.BATCH_TABLE, "ml_pattern_registry", sql.COLUMNS, rows)
                conn.execute(sql.UPSERT_FROM_BATCH)              # the whole batch in one statement
            else:
                conn.executemany(sql.UPSERT, list(rows))
        self._remember_sets(created)
        return ids

    def record_outcomes(self, outcomes_df: pd.DataFrame, *, label_source: str = "triple_barrier",
                        skip_unknown: bool = False) -> int:
        """Store outcomes of registered patterns in one transaction; return how many rows were updated.

        Columns: ``pattern_id``, ``label`` (1 / 0 / NaN = still open or never filled),
        ``r_multiple``, ``pnl_pct`` (percent, stored as ``trade_outcome``), ``exit_time``,
        ``exit_known_at_utc`` (UTC instant the exit bar closed), ``stop_first`` (1 / 0; default
        read off ``exit_reason``: ``stop`` -> 1, ``target`` / ``timeout`` -> 0), and
        optionally ``label_source`` (``triple_barrier`` or ``trade``; default the keyword),
        ``status``, ``exit_reason``; other columns are ignored. The ranking rule decides per row.
        An unknown ``pattern_id`` raises :class:`RegistryError` and nothing is written, unless
        ``skip_unknown=True`` (then only the known patterns are updated).
        """
        frame = fr.as_frame(outcomes_df, "outcomes_df")
        if len(frame) == 0:
            return 0
        ids = fr.pattern_ids(frame)
        labels = fr.int_values(frame, "label", (0, 1))
        sources = fr.auto_sources(frame, label_source, labels)
        status = fr.outcome_status(frame, labels)
        pnl = fr.real_values(frame, "pnl_pct" if "pnl_pct" in frame.columns else "trade_outcome")
        columns = [labels, sources, fr.real_values(frame, "r_multiple"), pnl, fr.time_values(frame, "exit_time"),
                   fr.time_values(frame, "exit_known_at_utc"), fr.stop_first_values(frame), status,
                   fr.text_values(frame, "exit_reason"), repeat(utc_now())]
        with write_transaction(self._db(), self.path) as conn:
            changed = conn.executemany(sql.RECORD, list(zip(*columns, repeat(self._next_rev()), ids)))
            if changed != len(ids) and not skip_unknown:
                unknown = self._unknown_ids(ids)
                raise RegistryError(f"unknown pattern_id {unknown[:5]} ({len(unknown)} of {len(ids)}); "
                                    "register the patterns before recording their outcomes")
        return changed

    def label_pattern(self, pattern_id: str, label: str, outcome: float | None = None) -> bool:
        """Set a user's label (``win`` / ``loss`` / ``ignore``), which outranks every automatic one.

        ``outcome`` is the PnL in percent, if known (stored as ``trade_outcome``). ``ignore`` keeps
        the pattern out of training. Returns True once the row is updated.
        """
        key = str(label).strip().lower() if isinstance(label, str) else label
        if key not in _USER_TO_LABEL:
            raise RegistryError(f"unknown label {label!r} for pattern {pattern_id!r}; "
                                f"use one of {', '.join(repr(x) for x in USER_LABELS)}")
        if outcome is not None and not isinstance(outcome, int | float | np.number):
            raise RegistryError(f"outcome must be a PnL in percent (a number), got {outcome!r}")
        with write_transaction(self._db(), self.path) as conn:
            rev = self._next_rev()
            cur = conn.execute(sql.LABEL_USER, (key, _USER_TO_LABEL[key], None if outcome is None else float(outcome),
                                             utc_now(), rev, str(pattern_id)))
            if cur.rowcount == 0:
                raise RegistryError(f"unknown pattern_id {pattern_id!r}: no such pattern in {self.path!r}")
        return True

    # -- reading ---------------------------------------------------------------------------------
    def get_features(self, pattern_id: str) -> dict[str, float]:
        """One pattern's stored features, name -> value (NaN where missing); {} if none stored.

        Values are stored at float32 precision, the precision XGBoost trains and predicts in
        (see :mod:`qml_plugin.registry._frames`), and returned as Python floats.
        """
        row = self._db().execute("SELECT feature_set_id, features FROM ml_pattern_registry WHERE pattern_id = ?",
                                 (str(pattern_id),)).fetchone()
        if row is None:
            raise RegistryError(f"unknown pattern_id {pattern_id!r}: no such pattern in {self.path!r}")
        if row[1] is None:
            return {}
        names, m = fr.unpack_features([row[0]], [row[1]], self._feature_names([row[0]]))
        return dict(zip(names, m[0].tolist(), strict=True))

    def get_pattern(self, pattern_id: str) -> dict[str, Any]:
        """One pattern's row as a dict (:data:`PUBLIC_COLUMNS`, no features)."""
        row = self._db().execute(f"SELECT {', '.join(sql.PUBLIC_COLUMNS)} FROM ml_pattern_registry "
                                 "WHERE pattern_id = ?", (str(pattern_id),)).fetchone()
        if row is None:
            raise RegistryError(f"unknown pattern_id {pattern_id!r}: no such pattern in {self.path!r}")
        return dict(zip(sql.PUBLIC_COLUMNS, row, strict=True))

    def get_unlabeled_patterns(self, limit: int = 50, *, with_features: bool = False) -> list[dict[str, Any]]:
        """Patterns with no label from any source, newest first (what ``qml label`` asks about).

        Each dict holds :data:`PUBLIC_COLUMNS`; with ``with_features=True`` also ``features``
        (name -> value), ready for :meth:`find_similar_patterns`.
        """
        rows = self._db().execute(
            f"SELECT {', '.join(sql.PUBLIC_COLUMNS)} FROM ml_pattern_registry WHERE label IS NULL "
            "AND user_label IS NULL ORDER BY detection_time DESC, pattern_id LIMIT ?", (int(limit),)).fetchall()
        out = [dict(zip(sql.PUBLIC_COLUMNS, r, strict=True)) for r in rows]
        if with_features:
            for d in out:
                d["features"] = self.get_features(d["pattern_id"])
        return out

    def find_similar_patterns(self, current_features: Mapping[str, float] | pd.Series, n: int = 5, *,
                              exclude: str | None = None) -> list[dict[str, Any]]:
        """The ``n`` labeled patterns nearest to ``current_features`` (name -> value), nearest first.

        Distance: Euclidean over z-scores (mean and std of the labeled rows), on the features
        both sides know; a NaN counts as the mean. Each neighbour: ``pattern_id``, ``distance``,
        ``label``, ``outcome`` (``win`` / ``loss``), ``label_source``, ``user_label``,
        ``r_multiple``, ``trade_outcome``, ``symbol``, ``timeframe``, ``pattern_type``,
        ``detection_time``. ``exclude`` skips one pattern id (the query itself). The standardized
        matrix is cached and brought up to date from the rows written since (any process).
        """
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise RegistryError(f"n must be a positive integer, got {n!r}")
        query = dict(current_features.items()) if isinstance(current_features, Mapping | pd.Series) else None
        if query is None:
            raise RegistryError("current_features must be a dict or Series of feature name -> value, "
                                f"got {type(current_features).__name__}")
        with read_snapshot(self._db(), self.path) as conn:
            self._similar.sync(conn, self._feature_names)
        return self._similar.query(query, int(n), exclude)

    def get_statistics(self) -> dict[str, Any]:
        """Counts for ``qml stats``: totals, win rate, and per symbol / type / label / source / regime."""
        conn = self._db()
        with read_snapshot(conn, self.path):
            total, labeled, wins, ignored, first, last = conn.execute(
                "SELECT COUNT(*), COUNT(label), CAST(COALESCE(SUM(label), 0) AS BIGINT), "
                "CAST(COALESCE(SUM(CASE WHEN user_label = 'ignore' THEN 1 ELSE 0 END), 0) AS BIGINT), "
                "MIN(detection_time), MAX(detection_time) "
                "FROM ml_pattern_registry").fetchone()
            stats: dict[str, Any] = {
                "db": self.path, "total": total, "labeled": labeled, "unlabeled": total - labeled - ignored,
                "ignored": ignored, "wins": wins, "losses": labeled - wins,
                "win_rate": wins / labeled if labeled else None,
                "first_detection": first, "last_detection": last,
            }
            for key, expr in sql.STAT_GROUPS.items():   # expressions from the fixed table above
                rows = conn.execute(f"SELECT {expr} AS k, COUNT(*) FROM ml_pattern_registry GROUP BY k "
                                    "ORDER BY COUNT(*) DESC, k").fetchall()
                stats[key] = {("none" if k is None else k): c for k, c in rows}
        return stats

    # -- helpers ---------------------------------------------------------------------------------
    def _unknown_ids(self, ids: list[str]) -> list[str]:
        wanted, found = list(dict.fromkeys(ids)), set()
        for lo in range(0, len(wanted), 500):
            part = wanted[lo:lo + 500]
            found |= {r[0] for r in self._db().execute(
                f"SELECT pattern_id FROM ml_pattern_registry WHERE pattern_id IN ({', '.join('?' * len(part))})",
                part).fetchall()}
        return [p for p in dict.fromkeys(ids) if p not in found]

    def _remember_sets(self, created: dict[str, tuple[int, list[str]]]) -> None:
        for key, (sid, names) in created.items():
            self._set_by_key[key] = sid
            self._names_by_set[sid] = names
