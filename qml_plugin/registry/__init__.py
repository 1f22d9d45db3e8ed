"""The pattern registry: every pattern, its features and outcome, and the model versions (SQLite or PostgreSQL).

Modules, one concern each: ``connection`` (opening SQLite or PostgreSQL: URLs, WAL and busy timeout,
the one connection type, transactions, damaged / read-only checks), ``migrations`` (the numbered
schema on both backends, ``qml migrate``), ``store`` (``PatternRegistry``: register, label,
outcomes, statistics), ``training`` (training data and the heads' targets), ``similarity``
(nearest labeled patterns, cached), ``models`` (model versions and evaluation history),
``predictions`` (the prediction log), ``transfer`` (``qml registry copy``), ``_sql`` / ``_frames``
(the SQL text; frame <-> row conversions).

    >>> import os, tempfile
    >>> from qml_plugin.registry import PatternRegistry, migrate
    >>> db = os.path.join(tempfile.mkdtemp(), "experiments.db")    # or "postgresql://user@host:5432/team"
    >>> migrate(db)
    [1, 2, 3, 4, 5]
    >>> with PatternRegistry(db) as reg:
    ...     reg.get_statistics()["total"]
    0
"""
from .connection import BUSY_TIMEOUT_S, DEFAULT_DB, registry_exists, sqlalchemy_url
from .migrations import CURRENT_SCHEMA_VERSION, MIGRATIONS, migrate
from .models import ANY_PRODUCTION, EVAL_DECISIONS, MODEL_STATUSES
from .predictions import DECISIONS, PERFORMANCE_COLUMNS, TOP_CONTRIBUTIONS
from .store import LABEL_RANK, PUBLIC_COLUMNS, USER_LABELS, PatternRegistry

__all__ = [
    "PatternRegistry", "migrate", "registry_exists", "sqlalchemy_url", "DEFAULT_DB", "BUSY_TIMEOUT_S",
    "CURRENT_SCHEMA_VERSION", "MIGRATIONS",
    "USER_LABELS", "LABEL_RANK", "MODEL_STATUSES", "EVAL_DECISIONS", "PUBLIC_COLUMNS", "DECISIONS",
    "TOP_CONTRIBUTIONS", "PERFORMANCE_COLUMNS", "ANY_PRODUCTION",
]
