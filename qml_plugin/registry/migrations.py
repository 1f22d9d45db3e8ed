"""The registry's schema, built and upgraded by numbered migrations (``qml migrate``).

Every change to the tables is a new :class:`Migration` appended to :data:`MIGRATIONS`; an
applied migration is never edited. Each applied version is recorded in ``schema_migrations``
(``version``, ``applied_at``, ``description``). :func:`apply_migrations` runs on every
``PatternRegistry`` open, and :func:`migrate` is the ``qml migrate`` command.

Rules this module keeps:

- **All or nothing.** The pending migrations run in one ``BEGIN IMMEDIATE`` transaction (SQLite
  DDL is transactional): a failure leaves the file at its previous version. Two processes opening
  a fresh file at once are serialized by that lock; the second finds nothing left to do.
- **No lost rows.** Migrations add tables, columns and indexes and back-fill the new columns;
  a table is only ever rebuilt by copying every row before the old one is dropped. As a guard,
  every table's row count is compared before and after each migration and a shrinking table
  aborts the upgrade with a :class:`RegistryError`.
- **No downgrades.** A file written by a newer qml-plugin is refused rather than misread.

Versions:

1. initial tables: ``ml_pattern_registry`` (SPEC §5 columns, features packed as float64 bytes
   with their names stored once in ``feature_sets``), ``ml_model_versions``, ``ml_eval_history``.
2. levels, outcome and decision columns on patterns (``label``, ``direction``, ``detection_bar``,
   ``entry``, ``stop``, ``target``, ``rr``, ``status``, ``exit_reason``, ``exit_time``,
   ``ml_decision``) plus ``rev``, the write counter behind the similarity cache; ``label`` and
   ``direction`` are back-filled from the version 1 columns.
3. indexes for time windows and for the cache watermark, and a partial unique index that
   allows at most one ``production`` model per model name. Each index costs every insert, so
   only the ones a query needs are built (counts by symbol / type scan the table).
4. ``ml_pattern_registry`` rebuilt (copy, drop, rename, re-index; every row kept) so that its
   CHECK constraints say ``c = a OR c = b`` instead of ``c IN (a, b)``. Same rule, but SQLite
   builds an ephemeral table for each IN list on *every inserted row*: the four of them were
   7 us of a 20 us insert. The packed ``features`` blob is now the last column. Do not write
   ``IN (...)`` in a CHECK on a hot table again; ``test_registry`` guards this. The copy runs
   when an older file is first opened (about 2 s per 100k patterns) and holds the write lock
   meanwhile: on a large registry, run ``qml migrate`` once before starting a sweep, so its
   workers do not wait out their busy timeout.
5. ``known_at_utc`` and ``exit_known_at_utc`` on patterns (the UTC instants at which the detection
   bar and the exit bar closed, SPEC §11; ISO text in UTC like every time column), ``stop_first``
   (1 when the stop was hit before the target, the third head of §7; back-filled from
   ``exit_reason``), and the prediction log ``ml_predictions`` (SPEC §5, one row per scoring
   event keyed by ``pattern_id, model_id, run_id, mode``; ``run_id`` is ``''`` when a scoring
   event belongs to no run, so the key never holds a NULL).

``feature_set_id`` declares its reference to ``feature_sets`` but SQLite does not enforce it:
``PRAGMA foreign_keys`` stays off because the check halves the insert rate, and only the
registry writes that column, always with an id it has just looked up or created.

**PostgreSQL** runs the same numbered migrations, the same statements with PostgreSQL's type names
(:func:`for_dialect`: ``REAL`` -> ``DOUBLE PRECISION``, ``BLOB`` -> ``BYTEA``, ``INTEGER`` ->
``BIGINT``, an integer primary key -> an identity column); there the reference is enforced. Two
processes migrating one database at once are serialized by an advisory lock.

Use::

    migrate("results/experiments.db")            # -> [1, 2, 3, 4, 5] on a new file, [] afterwards
    migrate("postgresql://qml@db:5432/team")     # the same migrations on a PostgreSQL database
    migrate("old.db", target=1)                  # build (or stop) at version 1, for tests
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ..errors import RegistryError
from .connection import Connection, connect, utc_now, write_transaction

__all__ = ["Migration", "MIGRATIONS", "CURRENT_SCHEMA_VERSION", "migrate", "apply_migrations",
           "schema_version", "for_dialect"]


@dataclass(frozen=True)
class Migration:
    """One schema step: its number, a one-line description, and the SQL it runs in order."""

    version: int
    description: str
    statements: tuple[str, ...]


_V1 = (
    """CREATE TABLE feature_sets (
        feature_set_id INTEGER PRIMARY KEY,
        names_sha256   TEXT NOT NULL UNIQUE,
        names_json     TEXT NOT NULL,
        n_features     INTEGER NOT NULL,
        created_at     TEXT NOT NULL)""",
    """CREATE TABLE ml_pattern_registry (
        pattern_id          TEXT PRIMARY KEY,
        symbol              TEXT NOT NULL CHECK (symbol <> ''),
        timeframe           TEXT,
        detection_time      TEXT,
        pattern_type        TEXT,
        feature_set_id      INTEGER REFERENCES feature_sets (feature_set_id),
        features            BLOB,
        feature_schema      TEXT,
        validity_score      REAL,
        ml_confidence       REAL,
        user_label          TEXT CHECK (user_label IN ('win', 'loss', 'ignore')),
        trade_outcome       REAL,
        r_multiple          REAL,
        label_source        TEXT CHECK (label_source IN ('triple_barrier', 'trade', 'user')),
        paper_traded        INTEGER NOT NULL DEFAULT 0,
        live_traded         INTEGER NOT NULL DEFAULT 0,
        regime_at_detection TEXT,
        run_id              TEXT,
        created_at          TEXT NOT NULL,
        updated_at          TEXT NOT NULL)""",
    """CREATE TABLE ml_model_versions (
        model_id           TEXT PRIMARY KEY,
        model_name         TEXT NOT NULL,
        version            INTEGER NOT NULL,
        status             TEXT NOT NULL CHECK (status IN
                           ('staging', 'production', 'archived', 'failed', 'canary', 'shadow')),
        trained_time       TEXT,
        trained_on_start   TEXT,
        trained_on_end     TEXT,
        features_used      TEXT,
        feature_schema     TEXT,
        params             TEXT,
        metrics            TEXT,
        training_samples   INTEGER,
        validation_samples INTEGER,
        model_path         TEXT,
        model_sha256       TEXT,
        notes              TEXT,
        UNIQUE (model_name, version))""",
    """CREATE TABLE ml_eval_history (
        eval_id           INTEGER PRIMARY KEY AUTOINCREMENT,
        evaluated_at      TEXT NOT NULL,
        model_name        TEXT NOT NULL,
        candidate_version INTEGER,
        baseline_version  INTEGER,
        metrics           TEXT,
        drift             TEXT,
        decision          TEXT NOT NULL CHECK (decision IN ('promote', 'reject', 'rollback')),
        notes             TEXT)""",
)

_V2 = (
    "ALTER TABLE ml_pattern_registry ADD COLUMN label INTEGER CHECK (label IN (0, 1))",
    "ALTER TABLE ml_pattern_registry ADD COLUMN direction INTEGER CHECK (direction IN (-1, 1))",
    "ALTER TABLE ml_pattern_registry ADD COLUMN detection_bar INTEGER",
    "ALTER TABLE ml_pattern_registry ADD COLUMN entry REAL",
    "ALTER TABLE ml_pattern_registry ADD COLUMN stop REAL",
    "ALTER TABLE ml_pattern_registry ADD COLUMN target REAL",
    "ALTER TABLE ml_pattern_registry ADD COLUMN rr REAL",
    "ALTER TABLE ml_pattern_registry ADD COLUMN status TEXT",
    "ALTER TABLE ml_pattern_registry ADD COLUMN exit_reason TEXT",
    "ALTER TABLE ml_pattern_registry ADD COLUMN exit_time TEXT",
    "ALTER TABLE ml_pattern_registry ADD COLUMN ml_decision TEXT",
    "ALTER TABLE ml_pattern_registry ADD COLUMN rev INTEGER NOT NULL DEFAULT 0",
    "CREATE TABLE registry_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT INTO registry_meta (key, value) VALUES ('rev', 0)",
    # Back-fill: a user's win/loss is the label; otherwise an automatic outcome's sign is.
    """UPDATE ml_pattern_registry SET label = CASE
           WHEN user_label = 'win' THEN 1
           WHEN user_label = 'loss' THEN 0
           WHEN user_label IS NULL AND label_source IN ('trade', 'triple_barrier')
                AND r_multiple IS NOT NULL THEN (CASE WHEN r_multiple > 0 THEN 1 ELSE 0 END)
       END""",
    """UPDATE ml_pattern_registry SET direction = CASE
           WHEN pattern_type LIKE 'bullish%' THEN 1 WHEN pattern_type LIKE 'bearish%' THEN -1 END""",
)

_V3 = (
    "CREATE INDEX ix_patterns_detection_time ON ml_pattern_registry (detection_time)",
    "CREATE INDEX ix_patterns_rev ON ml_pattern_registry (rev)",
    "CREATE UNIQUE INDEX ux_models_one_production ON ml_model_versions (model_name) "
    "WHERE status = 'production'",
    "CREATE INDEX ix_eval_model_time ON ml_eval_history (model_name, evaluated_at)",
)


def _one_of(column: str, *allowed: str) -> str:
    """``CHECK (c = a OR c = b ...)``: what ``c IN (a, b)`` means, without its per-row cost.

    SQLite evaluates an ``IN (list)`` in a CHECK by building a small ephemeral table, again for
    every inserted row; with four such checks that was 7 us of a 20 us insert.
    """
    return f"CHECK ({' OR '.join(f'{column} = {a}' for a in allowed)})"


_PATTERN_COLUMNS_V4 = (
    "pattern_id", "symbol", "timeframe", "detection_time", "pattern_type", "direction", "detection_bar",
    "entry", "stop", "target", "rr", "validity_score", "ml_confidence", "ml_decision", "user_label", "label",
    "label_source", "trade_outcome", "r_multiple", "status", "exit_reason", "exit_time", "paper_traded",
    "live_traded", "regime_at_detection", "run_id", "created_at", "updated_at", "rev", "feature_set_id",
    "feature_schema", "features")

_V4 = (
    f"""CREATE TABLE ml_pattern_registry_v4 (
        pattern_id          TEXT PRIMARY KEY,
        symbol              TEXT NOT NULL CHECK (symbol <> ''),
        timeframe           TEXT,
        detection_time      TEXT,
        pattern_type        TEXT,
        direction           INTEGER {_one_of("direction", "-1", "1")},
        detection_bar       INTEGER,
        entry               REAL,
        stop                REAL,
        target              REAL,
        rr                  REAL,
        validity_score      REAL,
        ml_confidence       REAL,
        ml_decision         TEXT,
        user_label          TEXT {_one_of("user_label", "'win'", "'loss'", "'ignore'")},
        label               INTEGER {_one_of("label", "0", "1")},
        label_source        TEXT {_one_of("label_source", "'triple_barrier'", "'trade'", "'user'")},
        trade_outcome       REAL,
        r_multiple          REAL,
        status              TEXT,
        exit_reason         TEXT,
        exit_time           TEXT,
        paper_traded        INTEGER NOT NULL DEFAULT 0,
        live_traded         INTEGER NOT NULL DEFAULT 0,
        regime_at_detection TEXT,
        run_id              TEXT,
        created_at          TEXT NOT NULL,
        updated_at          TEXT NOT NULL,
        rev                 INTEGER NOT NULL DEFAULT 0,
        feature_set_id      INTEGER REFERENCES feature_sets (feature_set_id),
        feature_schema      TEXT,
        features            BLOB)""",
    f"INSERT INTO ml_pattern_registry_v4 ({', '.join(_PATTERN_COLUMNS_V4)}) "
    f"SELECT {', '.join(_PATTERN_COLUMNS_V4)} FROM ml_pattern_registry",
    "DROP TABLE ml_pattern_registry",
    "ALTER TABLE ml_pattern_registry_v4 RENAME TO ml_pattern_registry",
    "CREATE INDEX ix_patterns_detection_time ON ml_pattern_registry (detection_time)",
    "CREATE INDEX ix_patterns_rev ON ml_pattern_registry (rev)",
)

_V5 = (
    "ALTER TABLE ml_pattern_registry ADD COLUMN known_at_utc TEXT",
    "ALTER TABLE ml_pattern_registry ADD COLUMN exit_known_at_utc TEXT",
    f"ALTER TABLE ml_pattern_registry ADD COLUMN stop_first INTEGER {_one_of('stop_first', '0', '1')}",
    """UPDATE ml_pattern_registry SET stop_first = CASE
           WHEN exit_reason = 'stop' THEN 1 WHEN exit_reason = 'target' OR exit_reason = 'timeout' THEN 0 END
       WHERE exit_reason IS NOT NULL""",
    f"""CREATE TABLE ml_predictions (
        pattern_id    TEXT NOT NULL,
        model_id      TEXT NOT NULL,
        run_id        TEXT NOT NULL DEFAULT '',
        mode          TEXT NOT NULL,
        predicted_at  TEXT NOT NULL,
        ml_confidence REAL,
        expected_r    REAL,
        stop_risk     REAL,
        decision      TEXT {_one_of("decision", "'take'", "'skip'", "'reduce_size'")},
        acting        INTEGER NOT NULL {_one_of("acting", "0", "1")},
        contributions TEXT,
        PRIMARY KEY (pattern_id, model_id, run_id, mode))""",
    "CREATE INDEX ix_predictions_model ON ml_predictions (model_id, predicted_at)",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial tables: patterns, feature sets, model versions, evaluation history", _V1),
    Migration(2, "pattern levels, numeric label, exit_time, ml_decision, status and rev columns", _V2),
    Migration(3, "indexes for time windows and the similarity cache; one production model", _V3),
    Migration(4, "pattern table rebuilt: CHECKs without IN lists (7 us less per insert), features last", _V4),
    Migration(5, "known_at_utc, exit_known_at_utc and stop_first on patterns; the ml_predictions log", _V5),
)
"""Every schema step, in order. Append new ones; never edit an applied one."""

CURRENT_SCHEMA_VERSION: int = MIGRATIONS[-1].version
"""The version this qml-plugin writes and reads."""

_BOOTSTRAP = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version     INTEGER PRIMARY KEY,
    applied_at  TEXT NOT NULL,
    description TEXT NOT NULL)"""


_PG_TYPES = ((re.compile(r"\bINTEGER PRIMARY KEY( AUTOINCREMENT)?"),
              "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
             (re.compile(r"\bINTEGER\b"), "BIGINT"), (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
             (re.compile(r"\bBLOB\b"), "BYTEA"))


def for_dialect(sql: str, dialect: str) -> str:
    """A migration statement for ``dialect``: SQLite's text as written, PostgreSQL's type names there.

    >>> for_dialect("CREATE TABLE t (id INTEGER PRIMARY KEY, x REAL, b BLOB)", "postgresql")
    'CREATE TABLE t (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, x DOUBLE PRECISION, b BYTEA)'
    """
    if dialect == "sqlite":
        return sql
    for pattern, replacement in _PG_TYPES:
        sql = pattern.sub(replacement, sql)
    return sql


def schema_version(conn: Connection) -> int:
    """The highest applied migration (0 for an empty database)."""
    if "schema_migrations" not in conn.tables():
        return 0
    return conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0]


def _row_counts(conn: Connection) -> dict[str, int]:
    # Table names come from the catalog, quoted as identifiers; no value is formatted into SQL.
    return {n: conn.execute('SELECT COUNT(*) FROM "{}"'.format(n.replace('"', '""'))).fetchone()[0]
            for n in conn.tables()}


def _check_target(target: int | None) -> int:
    if target is None:
        return CURRENT_SCHEMA_VERSION
    if isinstance(target, bool) or not isinstance(target, int) or not 1 <= target <= CURRENT_SCHEMA_VERSION:
        raise RegistryError(f"migration target {target!r} is not a schema version: use an integer "
                            f"from 1 to {CURRENT_SCHEMA_VERSION}")
    return target


def _refuse_newer(found: int, path: str) -> None:
    if found > CURRENT_SCHEMA_VERSION:
        raise RegistryError(
            f"registry file {path!r} is at schema version {found}, newer than this qml-plugin "
            f"understands ({CURRENT_SCHEMA_VERSION}); upgrade qml-plugin to use it")


def apply_migrations(conn: Connection, target: int | None = None, *, path: str = "") -> list[int]:
    """Bring an open connection up to ``target`` (default: current); return the versions applied."""
    goal = _check_target(target)
    found = schema_version(conn)
    _refuse_newer(found, path)
    if found == goal:
        return []
    applied: list[int] = []
    with write_transaction(conn, path):
        conn.lock("migrations")                      # PostgreSQL: one migrating process at a time
        conn.execute(_BOOTSTRAP)
        found = schema_version(conn)                 # re-read under the write lock
        _refuse_newer(found, path)
        if found > goal:
            raise RegistryError(f"registry file {path!r} is at schema version {found}; it cannot be "
                                f"taken back to version {goal} (downgrades are not supported)")
        for step in MIGRATIONS:
            if not found < step.version <= goal:
                continue
            before = _row_counts(conn)
            for sql in step.statements:
                conn.execute(for_dialect(sql, conn.dialect))
            after = _row_counts(conn)
            lost = {t: (n, after.get(t, 0)) for t, n in before.items() if after.get(t, 0) < n}
            if lost:
                raise RegistryError(f"migration {step.version} would lose rows {lost}; nothing was changed")
            conn.execute("INSERT INTO schema_migrations (version, applied_at, description) VALUES (?, ?, ?)",
                         (step.version, utc_now(), step.description))
            applied.append(step.version)
    return applied


def migrate(db: str | os.PathLike[str], target: int | None = None) -> list[int]:
    """Create or upgrade the registry ``db`` (path, ``sqlite:///`` or ``postgresql://`` URL); ``qml migrate``.

    Returns the versions applied now (``[]`` when already current). ``target`` stops at an older
    version, which is how the tests build a version 1 file to upgrade.
    """
    conn, path = connect(db)
    try:
        return apply_migrations(conn, target, path=path)
    finally:
        conn.close()
