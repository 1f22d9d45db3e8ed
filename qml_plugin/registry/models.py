"""The registry's model tables: trained model versions and the evaluation log (SPEC §5, §8).

A *model version* is one trained ``SignalQualityModel`` on disk (``model_path`` +
``model_sha256``) plus what it was trained on (``trained_on_start`` .. ``trained_on_end``,
``features_used``, ``feature_schema``) and how it scored (``metrics``). Its ``status`` is its role:
``production`` acts on trades, ``canary`` / ``shadow`` are scored and logged but never act,
``staging`` waits for a promotion decision, ``archived`` / ``failed`` are history.

Exactly one ``production`` version per model name: a partial unique index enforces "at most
one" in the database itself, and promoting a version archives the previous production version in
the same transaction, so two lifecycle cycles racing each other cannot leave two (or, mid-way,
none). Writes to the model table are serialized (SQLite's write lock; on PostgreSQL an advisory
lock taken first in each such transaction), so the check "is production still what I compared
against?" and the promotion happen with nobody in between, on both backends.

This mixin stays small on purpose: it stores and lists. Drift, gates and rollback policy live in
``qml_plugin.ml.lifecycle``, which builds on these calls::

    >>> from qml_plugin.registry import PatternRegistry
    >>> reg = PatternRegistry(":memory:")
    >>> mid = reg.add_model_version("signal_quality", metrics={"auc": 0.61}, model_path="models/sq/v1")
    >>> reg.set_model_status(mid, "production")       # any old production version -> archived
    >>> reg.production_model("signal_quality")["model_id"]
    'signal_quality-v1'
    >>> reg.add_eval("signal_quality", "promote", candidate_version=1)
    1
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pandas as pd

from ..errors import RegistryError
from ._frames import dumps, iso_times
from .connection import is_unique_violation, utc_now, write_transaction

__all__ = ["ModelTables", "MODEL_STATUSES", "EVAL_DECISIONS", "ANY_PRODUCTION"]

MODEL_STATUSES = ("staging", "production", "archived", "failed", "canary", "shadow")
"""Allowed ``ml_model_versions.status`` values."""

EVAL_DECISIONS = ("promote", "reject", "rollback")
"""Allowed ``ml_eval_history.decision`` values."""

ANY_PRODUCTION = object()
"""``transition_models(expect_production=ANY_PRODUCTION)``: do not check which version is production."""

_MODEL_COLUMNS = ("model_id", "model_name", "version", "status", "trained_time", "trained_on_start",
                  "trained_on_end", "features_used", "feature_schema", "params", "metrics",
                  "training_samples", "validation_samples", "model_path", "model_sha256", "notes")
_EVAL_COLUMNS = ("eval_id", "evaluated_at", "model_name", "candidate_version", "baseline_version",
                 "metrics", "drift", "decision", "notes")
_JSON = {"features_used", "params", "metrics", "drift"}


def _check(value: str, allowed: Sequence[str], what: str) -> str:
    if value not in allowed:
        raise RegistryError(f"unknown {what} {value!r}; use one of {', '.join(map(repr, allowed))}")
    return value


def _time(value: Any, what: str) -> str | None:
    if isinstance(value, str):                # one stamp: parse it directly (to_datetime's format guess is slow)
        try:
            value = pd.Timestamp(value)
        except ValueError:
            pass                              # iso_times names the bad value
    return None if value is None else iso_times([value], what)[0]


def _decode(columns: Sequence[str], row: Sequence[Any]) -> dict[str, Any]:
    return {c: (json.loads(v) if c in _JSON and v is not None else v) for c, v in zip(columns, row, strict=True)}


class ModelTables:
    """Methods on ``ml_model_versions`` and ``ml_eval_history``, mixed into ``PatternRegistry``."""

    path: str

    def _db(self) -> Any:                     # provided by PatternRegistry
        raise NotImplementedError

    def add_model_version(self, model_name: str, version: int | None = None, *, status: str = "staging",
                          trained_time: Any = None, trained_on_start: Any = None, trained_on_end: Any = None,
                          features_used: Sequence[str] | None = None, feature_schema: str | None = None,
                          params: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None,
                          training_samples: int | None = None, validation_samples: int | None = None,
                          model_path: str | None = None, model_sha256: str | None = None,
                          notes: str | None = None, model_id: str | None = None) -> str:
        """Record a trained model version; return its ``model_id`` (default ``"<name>-v<version>"``).

        ``version`` defaults to the next integer for ``model_name``. ``trained_on_start`` /
        ``trained_on_end`` bound its training data's detection times; ``trained_on_end`` should be
        the last *exit* time, which the out-of-sample guard compares with detection times.
        JSON columns (``features_used``, ``params``, ``metrics``) take lists / dicts.
        """
        _check(status, MODEL_STATUSES, "model status")
        with write_transaction(self._db(), self.path) as conn:
            conn.lock("models")            # PostgreSQL: model-table writes one at a time (SQLite: always)
            if version is None:
                version = conn.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM ml_model_versions "
                                       "WHERE model_name = ?", (model_name,)).fetchone()[0]
            mid = model_id or f"{model_name}-v{version}"
            if status == "production":
                self._archive_production(conn, model_name)
            values = (mid, model_name, int(version), status,
                      _time(trained_time, "trained_time") or utc_now(),
                      _time(trained_on_start, "trained_on_start"), _time(trained_on_end, "trained_on_end"),
                      dumps(None if features_used is None else list(features_used)), feature_schema,
                      dumps(params), dumps(metrics), training_samples, validation_samples, model_path,
                      model_sha256, notes)
            try:
                conn.execute(f"INSERT INTO ml_model_versions ({', '.join(_MODEL_COLUMNS)}) "
                             f"VALUES ({', '.join('?' * len(_MODEL_COLUMNS))})", values)
            except Exception as exc:
                if not is_unique_violation(exc):
                    raise
                raise RegistryError(f"model version {model_name!r} v{version} (id {mid!r}) already exists") from exc
        return mid

    def set_model_status(self, model_id: str, status: str) -> None:
        """Change a version's status; ``production`` archives the name's current production version."""
        _check(status, MODEL_STATUSES, "model status")
        with write_transaction(self._db(), self.path) as conn:
            conn.lock("models")            # PostgreSQL: model-table writes one at a time (SQLite: always)
            row = conn.execute("SELECT model_name FROM ml_model_versions WHERE model_id = ?", (model_id,)).fetchone()
            if row is None:
                raise RegistryError(f"unknown model_id {model_id!r}: no such model version in {self.path!r}")
            if status == "production":
                self._archive_production(conn, row[0], keep=model_id)
            conn.execute("UPDATE ml_model_versions SET status = ? WHERE model_id = ?", (status, model_id))

    @staticmethod
    def _archive_production(conn: Any, model_name: str, keep: str | None = None) -> None:
        conn.execute("UPDATE ml_model_versions SET status = 'archived' WHERE model_name = ? "
                     "AND status = 'production' AND model_id IS DISTINCT FROM ?", (model_name, keep))

    def transition_models(self, model_name: str, decision: str, *, expect_production: Any = ANY_PRODUCTION,
                          production: str | None = None, statuses: dict[str, str] | None = None,
                          candidate_version: int | None = None, baseline_version: int | None = None,
                          metrics: dict[str, Any] | None = None, drift: dict[str, Any] | None = None,
                          notes: str | None = None) -> int | None:
        """One lifecycle step in one write transaction; return its ``eval_id``, or None if it lost a race.

        If the production version of ``model_name`` is still ``expect_production`` (a ``model_id``,
        or None for "there is none"; :data:`ANY_PRODUCTION` skips the check): make ``production``
        the production version (archiving the old one), set ``statuses`` (model_id -> status) and
        log the evaluation (``decision`` = ``promote`` / ``reject`` / ``rollback``). If another
        process changed production meanwhile, nothing is written and None is returned: two
        promotions racing each other leave exactly one production version, on every backend.
        """
        _check(decision, EVAL_DECISIONS, "evaluation decision")
        for status in [*(statuses or {}).values()]:
            _check(status, MODEL_STATUSES, "model status")
        with write_transaction(self._db(), self.path) as conn:
            conn.lock("models")            # PostgreSQL: model-table writes one at a time (SQLite: always)
            row = conn.execute("SELECT model_id FROM ml_model_versions WHERE model_name = ? AND status = 'production'",
                               (model_name,)).fetchone()
            if expect_production is not ANY_PRODUCTION and (row[0] if row else None) != expect_production:
                return None
            if production is not None:
                self._archive_production(conn, model_name)
                cur = conn.execute("UPDATE ml_model_versions SET status = 'production' WHERE model_id = ?",
                                   (production,))
                if cur.rowcount != 1:
                    raise RegistryError(f"unknown model_id {production!r}: no such model version in {self.path!r}")
            for mid, status in (statuses or {}).items():
                conn.execute("UPDATE ml_model_versions SET status = ? WHERE model_id = ?", (status, mid))
            return self._insert_eval(conn, model_name, decision, candidate_version=candidate_version,
                                     baseline_version=baseline_version, metrics=metrics, drift=drift, notes=notes)

    def get_model_version(self, model_id: str) -> dict[str, Any]:
        """One version's row as a dict (JSON columns decoded)."""
        row = self._db().execute(f"SELECT {', '.join(_MODEL_COLUMNS)} FROM ml_model_versions WHERE model_id = ?",
                                 (model_id,)).fetchone()
        if row is None:
            raise RegistryError(f"unknown model_id {model_id!r}: no such model version in {self.path!r}")
        return _decode(_MODEL_COLUMNS, row)

    def list_model_versions(self, model_name: str | None = None) -> list[dict[str, Any]]:
        """Every version (of ``model_name``, or all), by name then version."""
        rows = self._db().execute(
            f"SELECT {', '.join(_MODEL_COLUMNS)} FROM ml_model_versions "
            "WHERE CAST(?1 AS TEXT) IS NULL OR model_name = ?1 "
            "ORDER BY model_name, version", (model_name,)).fetchall()
        return [_decode(_MODEL_COLUMNS, r) for r in rows]

    def production_model(self, model_name: str) -> dict[str, Any] | None:
        """The ``production`` version of ``model_name``, or None."""
        row = self._db().execute(f"SELECT {', '.join(_MODEL_COLUMNS)} FROM ml_model_versions "
                                 "WHERE model_name = ? AND status = 'production'", (model_name,)).fetchone()
        return None if row is None else _decode(_MODEL_COLUMNS, row)

    def add_eval(self, model_name: str, decision: str, *, candidate_version: int | None = None,
                 baseline_version: int | None = None, metrics: dict[str, Any] | None = None,
                 drift: dict[str, Any] | None = None, notes: str | None = None) -> int:
        """Log one evaluation (``promote`` / ``reject`` / ``rollback``); return its ``eval_id``."""
        with write_transaction(self._db(), self.path) as conn:
            return self._insert_eval(conn, model_name, decision, candidate_version=candidate_version,
                                     baseline_version=baseline_version, metrics=metrics, drift=drift, notes=notes)

    @staticmethod
    def _insert_eval(conn: Any, model_name: str, decision: str, *, candidate_version: int | None = None,
                     baseline_version: int | None = None, metrics: dict[str, Any] | None = None,
                     drift: dict[str, Any] | None = None, notes: str | None = None) -> int:
        """The ``ml_eval_history`` row, inside the caller's write transaction (lifecycle transitions too)."""
        _check(decision, EVAL_DECISIONS, "evaluation decision")
        cur = conn.execute(
            "INSERT INTO ml_eval_history (evaluated_at, model_name, candidate_version, baseline_version, "
            "metrics, drift, decision, notes) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING eval_id",
            (utc_now(), model_name, candidate_version, baseline_version, dumps(metrics), dumps(drift),
             decision, notes))
        return int(cur.fetchone()[0])

    def eval_history(self, model_name: str | None = None) -> list[dict[str, Any]]:
        """Evaluations (of ``model_name``, or all), oldest first."""
        rows = self._db().execute(
            f"SELECT {', '.join(_EVAL_COLUMNS)} FROM ml_eval_history "
            "WHERE CAST(?1 AS TEXT) IS NULL OR model_name = ?1 "
            "ORDER BY evaluated_at, eval_id", (model_name,)).fetchall()
        return [_decode(_EVAL_COLUMNS, r) for r in rows]
