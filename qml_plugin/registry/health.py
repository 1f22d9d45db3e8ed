"""Is the registry usable? Damaged files, read-only files and roles, caught when the registry is opened.

:mod:`.connection` opens the database; this module judges what it opened, before anything is written:

- a file that is not a database, or is damaged in the middle (``PRAGMA quick_check``, run once per state
  of the file per process), is a :class:`~qml_plugin.errors.RegistryError` naming the file;
- a registry this process may not write (a read-only file or folder, an immutable file, a read-only
  PostgreSQL server, transaction or role) is refused at open, not after a backtest's work.

The checks themselves are SQLite's and PostgreSQL's own; this module only asks and words the answer.
"""
from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..errors import RegistryError

if TYPE_CHECKING:
    from .connection import Connection

__all__ = ["translate_errors", "check_writable", "remember_intact"]

_MEMORY = ":memory:"
_BROKEN_FILE_CODES = {"SQLITE_NOTADB", "SQLITE_CORRUPT"}


def _is_broken_file(exc: sqlite3.DatabaseError) -> bool:
    if isinstance(exc, sqlite3.OperationalError):     # locked, busy, I/O: not the file's content
        return False
    name = getattr(exc, "sqlite_errorname", "")
    return name in _BROKEN_FILE_CODES or "not a database" in str(exc) or "malformed" in str(exc)


def _read_only(path: str, why: str) -> RegistryError:
    return RegistryError(f"registry {path!r} is read-only ({why}): qml writes patterns, outcomes and model "
                         "versions to it; make it writable, or point ml_data_collection.db_path / --db elsewhere")


@contextmanager
def translate_errors(path: str) -> Iterator[None]:
    """Re-raise "file is not a database" / "malformed" / "read-only" as a RegistryError naming the file."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        if _is_broken_file(exc):
            raise RegistryError(
                f"registry file {path!r} is not a valid SQLite database ({exc}); move it away "
                "or point the registry at another file") from exc
        if isinstance(exc, sqlite3.OperationalError) and "readonly" in str(exc):
            raise _read_only(path, str(exc)) from exc
        raise


_CHECKED: dict[tuple[int, int], tuple[int, int]] = {}     # (device, inode) -> (size, mtime) found intact


def _stamp(path: str) -> tuple[tuple[int, int], tuple[int, int]]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino), (st.st_size, st.st_mtime_ns)


def remember_intact(path: str) -> None:
    """After this process closed a file it found intact, its own writes do not call for a new check."""
    if path != _MEMORY and os.path.exists(path):
        key, stamp = _stamp(path)
        if key in _CHECKED:
            _CHECKED[key] = stamp


def _check_file(conn: sqlite3.Connection, path: str) -> None:
    """``PRAGMA quick_check`` when this process opens a file it has not checked in its present state:
    a file damaged in the middle (its header intact) is refused before anything is written into it.
    It reads every page once: ~0.5 s for 100k patterns (98 MB) on a warm cache; it runs again only
    when the file changed since this process last had it (WAL commits leave the main file alone
    until a checkpoint, and the registry notes the file's state when it closes it)."""
    if path == _MEMORY:
        return
    key, stamp = _stamp(path)
    if _CHECKED.get(key) == stamp or stamp[0] == 0:
        return
    with translate_errors(path):
        problems = [r[0] for r in conn.execute("PRAGMA quick_check(5)").fetchall()]
    if problems != ["ok"]:
        shown = " ".join("; ".join(problems).split())[:300]      # one line: a CLI error is one line
        raise RegistryError(f"registry file {path!r} is damaged (SQLite quick_check: {shown}); nothing was "
                            "written to it: restore it from a backup, or move it away and start anew")
    _CHECKED[key] = stamp


def check_writable(conn: Connection, path: str) -> None:
    """Refuse a registry this process cannot write (a read-only file or folder, an immutable file, a
    read-only PostgreSQL role or replica) when it is opened, before any work is done."""
    if conn.dialect == "sqlite":
        if path == _MEMORY:
            return
        with translate_errors(path):
            conn.execute("BEGIN IMMEDIATE")
            try:       # a write that changes nothing: SQLite checks it may write, then we roll it back
                conn.execute("UPDATE registry_meta SET value = value WHERE key = 'rev'")
            finally:
                conn.execute("ROLLBACK")
        return
    ro, may = conn.execute("SELECT current_setting('transaction_read_only'), "
                           "has_table_privilege('ml_pattern_registry', 'INSERT, UPDATE')").fetchone()
    if ro == "on" or not may:
        raise _read_only(path, "a read-only server or transaction" if ro == "on"
                         else "this role may not insert into ml_pattern_registry")
