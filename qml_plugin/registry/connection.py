"""Opening the registry's SQLite file: paths and URLs, pragmas, write transactions, clear errors.

This module owns *how* the registry talks to SQLite. Locking, durability and crash recovery are
left to SQLite itself, configured for a sweep where several processes write at once:

- ``journal_mode=WAL``: readers never block the writer and the writer never blocks readers;
  a commit is one append to the ``-wal`` file, and a process killed mid-transaction leaves
  nothing half-written (the next open rolls the log back to the last commit).
- ``busy_timeout`` of :data:`BUSY_TIMEOUT_S` seconds: a second writer queues instead of failing
  with "database is locked".
- ``synchronous=NORMAL``: in WAL mode a commit survives a crash of the process; only a power cut
  can lose the last few commits, never corrupt the file.
- every write runs in ``BEGIN IMMEDIATE`` (:func:`write_transaction`), which takes the write lock
  up front, so two writers can never both read and then both try to upgrade (the case WAL cannot
  retry and reports as "database is locked").

``db`` may be a path or an SQLAlchemy-style URL; a missing parent folder is created::

    >>> conn, path = connect("sqlite:///results/experiments.db")   # relative path
    >>> conn, path = connect("sqlite:////tmp/experiments.db")      # absolute path
    >>> conn, path = connect(":memory:")                           # private, in memory
"""
from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path

from ..errors import RegistryError

__all__ = ["DEFAULT_DB", "BUSY_TIMEOUT_S", "PAGE_SIZE", "WAL_SIZE_LIMIT", "resolve_db_path", "connect",
           "write_transaction", "read_snapshot", "translate_errors", "utc_now"]

DEFAULT_DB = "results/experiments.db"
"""Where the registry lives unless configured (relative to the working folder), e.g.
``PatternRegistry()`` == ``PatternRegistry("results/experiments.db")``."""

BUSY_TIMEOUT_S = 30.0
"""How long a writer waits for another process's transaction before giving up (seconds)."""

PAGE_SIZE = 16384
"""Page size of a new file (bytes). A pattern row is ~1.6 kB with 170 features: 16 kB pages hold
ten of them with little slack, against two in SQLite's default 4 kB page."""

WAL_SIZE_LIMIT = 64 * 1024 * 1024
"""After a checkpoint the ``-wal`` file is truncated to this many bytes (one big transaction,
e.g. outcomes for 100k patterns, would otherwise leave a WAL file of its size behind)."""

_URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://(.*)$", re.DOTALL)
_MEMORY = ":memory:"
_BROKEN_FILE_CODES = {"SQLITE_NOTADB", "SQLITE_CORRUPT"}


def resolve_db_path(db: str | os.PathLike[str]) -> str:
    """Turn a path or an SQLAlchemy-style URL into what ``sqlite3.connect`` takes.

    ``sqlite:///rel/path.db`` is relative, ``sqlite:////abs/path.db`` absolute (three slashes, then
    the path), ``sqlite://`` and ``":memory:"`` a private in-memory database. Any other scheme
    (``postgresql://`` ...) is a :class:`RegistryError`: only SQLite is supported for now.
    """
    if isinstance(db, os.PathLike):
        return os.fspath(db)
    if not isinstance(db, str) or not db:
        raise RegistryError(f"registry db must be a file path or a sqlite:/// URL, got {db!r}")
    match = _URL_RE.match(db)
    if match is None:
        return db
    scheme, rest = match.group(1).lower(), match.group(2)
    if scheme != "sqlite" and not scheme.startswith("sqlite+"):
        raise RegistryError(
            f"registry URL {db!r} uses the scheme {scheme!r}: only sqlite is supported for now "
            f"(use a file path or sqlite:///path/to/file.db)")
    if "?" in rest:
        raise RegistryError(f"registry URL {db!r} has query options; they are not supported, "
                            "use sqlite:///path/to/file.db")
    if rest == "":
        return _MEMORY
    if not rest.startswith("/"):
        raise RegistryError(f"registry URL {db!r} is malformed: use sqlite:///relative/path.db "
                            "or sqlite:////absolute/path.db")
    return rest[1:] or _MEMORY


def utc_now() -> str:
    """The current UTC time as ISO-8601 text with microseconds and a ``Z`` (audit columns)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _is_broken_file(exc: sqlite3.DatabaseError) -> bool:
    if isinstance(exc, sqlite3.OperationalError):     # locked, busy, I/O: not the file's content
        return False
    name = getattr(exc, "sqlite_errorname", "")
    return name in _BROKEN_FILE_CODES or "not a database" in str(exc) or "malformed" in str(exc)


@contextmanager
def translate_errors(path: str) -> Iterator[None]:
    """Re-raise "file is not a database" / "malformed" as a RegistryError naming the file."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        if _is_broken_file(exc):
            raise RegistryError(
                f"registry file {path!r} is not a valid SQLite database ({exc}); move it away "
                "or point the registry at another file") from exc
        raise


def _set_wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL, retrying while another process holds the lock the switch needs."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if mode.lower() not in ("wal", "memory"):
                conn.execute("PRAGMA journal_mode=WAL").fetchone()
            return
        except sqlite3.OperationalError as exc:
            transient = "locked" in str(exc) or "busy" in str(exc)
            if not transient or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def connect(db: str | os.PathLike[str] = DEFAULT_DB) -> tuple[sqlite3.Connection, str]:
    """Open ``db`` in autocommit mode with the registry's pragmas; return (connection, path).

    Transactions are explicit (:func:`write_transaction`), so the connection uses
    ``isolation_level=None``. A file that is not SQLite raises :class:`RegistryError`.
    """
    path = resolve_db_path(db)
    if path != _MEMORY:
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        path = str(Path(path).expanduser())
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as exc:
        raise RegistryError(f"cannot open registry file {path!r}: {exc}") from exc
    try:
        with translate_errors(path):
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute(f"PRAGMA page_size={PAGE_SIZE}")      # no-op unless the file is new
            _set_wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            # checkpoint when the WAL reaches its size limit, not every 1000 pages (SQLite's default):
            # fewer copies back into the database file during big batches (~10-20 % faster inserts)
            conn.execute(f"PRAGMA wal_autocheckpoint={WAL_SIZE_LIMIT // PAGE_SIZE}")
    except sqlite3.Error as exc:
        conn.close()
        raise RegistryError(f"cannot open registry file {path!r}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn, path


@contextmanager
def _transaction(conn: sqlite3.Connection, path: str, begin: str) -> Iterator[sqlite3.Connection]:
    with translate_errors(path):
        conn.execute(begin)
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def write_transaction(conn: sqlite3.Connection, path: str = "") -> AbstractContextManager[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` on any exception: all or nothing."""
    return _transaction(conn, path, "BEGIN IMMEDIATE")


def read_snapshot(conn: sqlite3.Connection, path: str = "") -> AbstractContextManager[sqlite3.Connection]:
    """A deferred read transaction: every statement inside sees the same committed state."""
    return _transaction(conn, path, "BEGIN")
