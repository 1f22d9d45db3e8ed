"""Copying a whole registry between backends (``qml registry copy``, SPEC §5).

``copy_registry("results/experiments.db", "postgresql://qml@db:5432/team")`` moves a registry
from one SQLite file to a shared PostgreSQL database, or back, or between two of either kind.
Everything goes: patterns with their features, labels and outcomes (the feature name lists with
them), model versions, the evaluation history, the prediction log, and the registry's write
counter. Row values are copied as stored (features stay the same float32 bytes), so the copy
answers every query exactly as the original does.

Rules it keeps:

- the source must exist (a missing file is an error, never created empty); both ends are opened
  as registries, so both are brought to the current schema by the numbered migrations (the
  source too, as on any open);
- the target must be empty (a fresh file or database): merging two registries would have to
  renumber feature sets and evaluations, which is not what a copy promises;
- the copy is one transaction on the target: all of it or, on any error, nothing;
- afterwards the rows of every table are counted on both sides; a difference is a
  :class:`RegistryError` naming the table (the target keeps the rows for inspection).
"""
from __future__ import annotations

import os
from typing import Any

from ..errors import RegistryError
from .connection import display_url, read_snapshot, registry_exists, write_transaction
from .store import PatternRegistry

__all__ = ["COPIED_TABLES", "copy_registry"]

COPIED_TABLES = (("feature_sets", "feature_set_id"), ("ml_pattern_registry", "pattern_id"),
                 ("ml_model_versions", "model_id"), ("ml_eval_history", "eval_id"),
                 ("ml_predictions", "pattern_id, model_id, run_id, mode"))
"""The tables ``copy_registry`` copies, with the key they are read in order of (parents first)."""

_IDENTITY = (("feature_sets", "feature_set_id"), ("ml_eval_history", "eval_id"))


def _count(conn: Any, table: str) -> int:
    return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])   # fixed table names


def copy_registry(source: str | os.PathLike[str], target: str | os.PathLike[str], *,
                  batch: int = 5000) -> dict[str, int]:
    """Copy every table of the registry ``source`` into the empty registry ``target``; return rows per table.

    ``source`` and ``target`` are paths or URLs (``sqlite:///...``, ``postgresql://...``). Raises
    :class:`RegistryError` when the target already holds data or a count differs afterwards.
    """
    if not registry_exists(source):                       # never create an empty source by opening it
        shown = display_url(source) if isinstance(source, str) else os.fspath(source)
        raise RegistryError(f"registry copy: there is no registry at {shown!r} to copy from")
    with PatternRegistry(source) as src, PatternRegistry(target) as dst:
        if src.url == dst.url:
            raise RegistryError(f"registry copy: source and target are the same registry ({src.path})")
        s, d = src._db(), dst._db()
        busy = {t: n for t, _ in COPIED_TABLES if (n := _count(d, t))}
        if busy:
            raise RegistryError(f"registry copy: the target {dst.path} is not empty ({busy}); copy into a new "
                                "file or an empty database")
        with read_snapshot(s, src.path), write_transaction(d, dst.path):
            for table, key in COPIED_TABLES:
                columns = s.columns(table)
                for chunk in s.stream(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {key}", batch):
                    d.insert_rows(table, columns, [tuple(r) for r in chunk])
            rev = s.execute("SELECT value FROM registry_meta WHERE key = 'rev'").fetchone()[0]
            d.execute("UPDATE registry_meta SET value = ? WHERE key = 'rev'", (int(rev),))
            if d.dialect == "postgresql":               # identity columns continue after the copied ids
                for table, column in _IDENTITY:
                    d.execute(f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
                              f"COALESCE((SELECT MAX({column}) FROM {table}), 0) + 1, false)")
        counts = {t: (_count(s, t), _count(d, t)) for t, _ in COPIED_TABLES}
    wrong = {t: c for t, c in counts.items() if c[0] != c[1]}
    if wrong:
        raise RegistryError(f"registry copy: row counts differ (source, target): {wrong}")
    return {t: c[0] for t, c in counts.items()}
