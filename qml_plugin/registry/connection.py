"""Opening the registry on SQLite or PostgreSQL: URLs, one small connection type, transactions, clear errors.

This module owns *how* the registry talks to its database; the rest of ``registry/`` writes its SQL
once, in SQLite's spelling with ``?`` / ``?N`` parameters, and :class:`Connection` hands it to
PostgreSQL as ``$N`` (psycopg 3's raw cursor: server-side parameters, nothing ever formatted into
SQL). Locking, durability and crash recovery are left to the database itself:

**SQLite** (a path, ``sqlite:///relative.db`` or ``sqlite:////absolute.db``), set up for a sweep
where several processes write at once: ``journal_mode=WAL`` (readers and the writer never block each
other; a process killed mid-transaction leaves nothing half-written), ``busy_timeout`` of
:data:`BUSY_TIMEOUT_S` (a second writer queues instead of failing), ``synchronous=NORMAL`` (a
commit survives a crash of the process), and every write in ``BEGIN IMMEDIATE`` (the write lock is
taken up front, so two writers never both read and then both try to upgrade).

**PostgreSQL** (``postgresql://user[:password]@host:port/dbname``; ``postgresql+psycopg://`` and
``postgres://`` too), a shared registry for a team or a cluster: installed with
``pip install ".[postgres]"`` (from the source folder). Writes run in ``READ COMMITTED`` transactions; the registry
serializes what must be serialized with row and table locks (see ``store`` and ``models``), reads
that must agree run in one ``REPEATABLE READ`` snapshot.

    >>> conn, where = connect(":memory:")
    >>> conn.dialect, conn.execute("SELECT 1 + ?1", (41,)).fetchone()[0]
    ('sqlite', 42)
    >>> display_url("postgresql://ana:secret@db.example:5432/registry")
    'postgresql://ana:***@db.example:5432/registry'
"""
from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import RegistryError
from .health import _MEMORY, _check_file, check_writable, remember_intact, translate_errors

__all__ = ["DEFAULT_DB", "BUSY_TIMEOUT_S", "PAGE_SIZE", "WAL_SIZE_LIMIT", "Connection", "parse_db",
           "resolve_db_path", "display_url", "sqlalchemy_url", "connect", "write_transaction", "read_snapshot",
           "translate_errors", "utc_now", "is_unique_violation", "registry_exists", "check_writable",
           "remember_intact"]

DEFAULT_DB = "results/experiments.db"
"""Where the registry lives unless configured (relative to the working folder), e.g.
``PatternRegistry()`` == ``PatternRegistry("results/experiments.db")``."""

BUSY_TIMEOUT_S = 30.0
"""How long a writer waits for another process's transaction before giving up (seconds)."""

PAGE_SIZE = 16384
"""Page size of a new SQLite file (bytes). A pattern row is ~1.6 kB with 170 features: 16 kB pages
hold ten of them with little slack, against two in SQLite's default 4 kB page."""

WAL_SIZE_LIMIT = 64 * 1024 * 1024
"""After a checkpoint the ``-wal`` file is truncated to this many bytes (one big transaction,
e.g. outcomes for 100k patterns, would otherwise leave a WAL file of its size behind)."""

_URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://(.*)$", re.DOTALL)
_PARAM = re.compile(r"\?(\d*)")


def parse_db(db: str | os.PathLike[str]) -> tuple[str, str]:
    """``("sqlite", path)`` or ``("postgresql", libpq URL)`` for a path or an SQLAlchemy-style URL.

    ``sqlite:///rel/path.db`` is relative, ``sqlite:////abs/path.db`` absolute (three slashes, then
    the path), ``sqlite://`` and ``":memory:"`` a private in-memory database. Any other scheme is a
    :class:`RegistryError` naming the schemes that work.
    """
    if isinstance(db, os.PathLike):
        return "sqlite", os.fspath(db)
    if not isinstance(db, str) or not db:
        raise RegistryError(f"registry db must be a file path, a sqlite:/// URL or a postgresql:// URL, got {db!r}")
    match = _URL_RE.match(db)
    if match is None:
        return "sqlite", db
    scheme, rest = match.group(1).lower(), match.group(2)
    base = scheme.split("+", 1)[0]
    if base in ("postgresql", "postgres"):
        return "postgresql", f"postgresql://{rest}"
    if base != "sqlite":
        raise RegistryError(
            f"registry URL {display_url(db)!r} uses the scheme {scheme!r}: use a file path, sqlite:///path/to/file.db "
            "or postgresql://user@host:port/dbname")
    if "?" in rest:
        raise RegistryError(f"registry URL {db!r} has query options; they are not supported, "
                            "use sqlite:///path/to/file.db")
    if rest == "":
        return "sqlite", _MEMORY
    if not rest.startswith("/"):
        raise RegistryError(f"registry URL {db!r} is malformed: use sqlite:///relative/path.db "
                            "or sqlite:////absolute/path.db")
    return "sqlite", rest[1:] or _MEMORY


def resolve_db_path(db: str | os.PathLike[str]) -> str:
    """The SQLite file (or ``:memory:``) of ``db``; for a PostgreSQL URL, the URL itself."""
    return parse_db(db)[1]


def display_url(url: str) -> str:
    """A URL fit for messages and logs: any password replaced by ``***``."""
    return re.sub(r"(://[^/:@]*:)[^@/]*@", r"\1***@", url)


def sqlalchemy_url(db: str | os.PathLike[str]) -> str:
    """The SQLAlchemy URL of the same database, e.g. for Optuna's ``RDBStorage`` (``qml optimize``).

    PostgreSQL -> ``postgresql+psycopg://...`` (psycopg 3, the driver the registry uses; SQLAlchemy
    must be installed), SQLite -> ``sqlite:///<absolute path>``.

    >>> sqlalchemy_url("postgresql://qml@127.0.0.1:5432/team")
    'postgresql+psycopg://qml@127.0.0.1:5432/team'
    """
    dialect, where = parse_db(db)
    if dialect == "postgresql":
        return "postgresql+psycopg://" + where.split("://", 1)[1]
    return "sqlite://" if where == _MEMORY else f"sqlite:///{Path(where).expanduser().resolve()}"


def registry_exists(db: str | os.PathLike[str]) -> bool:
    """Whether ``db`` already holds a registry, without creating anything (``qml learn --status``).

    SQLite: the file exists. PostgreSQL: the server answers and the database has the registry's
    ``schema_migrations`` table (an unreachable server is a :class:`RegistryError`).
    """
    dialect, where = parse_db(db)
    if dialect == "sqlite":
        return where != _MEMORY and Path(where).expanduser().is_file()
    conn, _ = _connect_postgres(where)
    try:
        return "schema_migrations" in conn.tables()
    finally:
        conn.close()


def utc_now() -> str:
    """The current UTC time as ISO-8601 text with microseconds and a ``Z`` (audit columns)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def is_unique_violation(exc: BaseException) -> bool:
    """Whether a driver error is a UNIQUE / primary-key violation (either backend)."""
    return "UNIQUE" in str(exc) or type(exc).__name__ == "UniqueViolation"


def _to_dollars(sql: str) -> str:
    """``?`` / ``?N`` parameters as PostgreSQL's ``$N`` (the registry's SQL holds no ``?`` in literals)."""
    count = 0

    def repl(m: re.Match) -> str:
        nonlocal count
        if m.group(1):
            return f"${m.group(1)}"
        count += 1
        return f"${count}"

    return _PARAM.sub(repl, sql)


class Connection:
    """One connection to the registry's database, SQLite or PostgreSQL, in autocommit mode.

    ``execute`` / ``executemany`` take the registry's SQLite-spelled SQL on both backends;
    transactions are explicit (:func:`write_transaction`, :func:`read_snapshot`).
    """

    def __init__(self, raw: Any, dialect: str) -> None:
        self.raw, self.dialect = raw, dialect
        self._sql: dict[str, str] = {}

    def _q(self, sql: str) -> str:
        if self.dialect == "sqlite":
            return sql
        out = self._sql.get(sql)
        if out is None:
            out = self._sql[sql] = _to_dollars(sql)
        return out

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement; return its cursor (``fetchone`` / ``fetchall`` / ``rowcount``)."""
        return self.raw.execute(self._q(sql), params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        """Run one statement per row (one round trip per batch on PostgreSQL); return the rows changed."""
        if self.dialect == "sqlite":
            return self.raw.executemany(sql, rows).rowcount
        cur = self.raw.cursor()
        cur.executemany(self._q(sql), rows)
        return cur.rowcount

    def copy_into_temp(self, temp: str, like: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """PostgreSQL: COPY ``rows`` into the session's temporary table ``temp`` (shaped like the
        table ``like``, emptied at each commit), inside the caller's transaction. ``temp``, ``like``
        and ``columns`` are the registry's fixed identifiers, never user input."""
        self.execute(f"CREATE TEMP TABLE IF NOT EXISTS {temp} (LIKE {like}) ON COMMIT DELETE ROWS")
        self.insert_rows(temp, columns, rows)

    def insert_rows(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """Plain inserts of many rows: ``COPY`` on PostgreSQL, ``executemany`` on SQLite (fixed identifiers)."""
        if self.dialect == "sqlite":
            self.raw.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                                 rows)
            return
        with self.raw.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def stream(self, sql: str, size: int = 5000) -> Iterator[list[Any]]:
        """The rows of a query in chunks of ``size`` without holding them all (PostgreSQL: a server-side
        cursor, so call it inside a transaction)."""
        cur = self.raw.execute(sql) if self.dialect == "sqlite" else self.raw.cursor(name="qml_stream")
        if self.dialect == "postgresql":
            cur.execute(sql)
        try:
            while chunk := cur.fetchmany(size):
                yield chunk
        finally:
            cur.close()

    def columns(self, table: str) -> list[str]:
        """A table's columns in order (``table`` is one of the registry's fixed names)."""
        cur = self.raw.execute(f"SELECT * FROM {table} WHERE 1 = 0")
        return [d[0] for d in cur.description]

    @property
    def in_transaction(self) -> bool:
        if self.dialect == "sqlite":
            return self.raw.in_transaction
        return self.raw.info.transaction_status != 0           # psycopg.pq.TransactionStatus.IDLE

    def tables(self) -> list[str]:
        """Names of the registry's tables (SQLite's own excluded; on PostgreSQL, the current schema)."""
        if self.dialect == "sqlite":
            q = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        else:
            q = "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        return sorted(r[0] for r in self.execute(q).fetchall())

    def lock(self, what: str) -> None:
        """Serialize one kind of write on PostgreSQL (a transaction-scoped advisory lock); SQLite's
        ``BEGIN IMMEDIATE`` already serializes every write."""
        if self.dialect == "postgresql":
            self.execute("SELECT pg_advisory_xact_lock(hashtext(?))", (f"qml_plugin.{what}",))

    def close(self) -> None:
        self.raw.close()


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


def _connect_sqlite(path: str) -> tuple[Connection, str]:
    if path != _MEMORY:
        folder = Path(path).expanduser().parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a folder that cannot exist (read-only place, a file in the way, /proc ...)
            raise RegistryError(f"cannot create the registry's folder {str(folder)[:200]!r} for {path[:200]!r}: "
                                f"{exc.strerror or exc}; give a registry path in a writable folder") from None
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
        _check_file(conn, path)
    except sqlite3.Error as exc:
        conn.close()
        raise RegistryError(f"cannot open registry file {path!r}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return Connection(conn, "sqlite"), path


def _connect_postgres(url: str) -> tuple[Connection, str]:
    shown = display_url(url)
    try:
        import psycopg
    except ImportError as exc:
        raise RegistryError(f"registry {shown!r} is PostgreSQL, which needs psycopg 3: "
                            'pip install ".[postgres]" from the qml-plugin source folder') from exc
    try:
        raw = psycopg.connect(url, autocommit=True, cursor_factory=psycopg.RawCursor, connect_timeout=15)
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split())[:300]
        raise RegistryError(f"cannot connect to the registry {shown!r}: {reason}") from exc
    return Connection(raw, "postgresql"), shown


def connect(db: str | os.PathLike[str] = DEFAULT_DB) -> tuple[Connection, str]:
    """Open ``db`` (path or URL); return (connection, where) with ``where`` fit for messages.

    A missing SQLite folder is created; a file that is not SQLite, or a server that cannot be
    reached, raises :class:`RegistryError`.
    """
    dialect, where = parse_db(db)
    return _connect_postgres(where) if dialect == "postgresql" else _connect_sqlite(where)


_BEGIN = {("sqlite", "write"): "BEGIN IMMEDIATE", ("sqlite", "read"): "BEGIN",
          ("postgresql", "write"): "BEGIN ISOLATION LEVEL READ COMMITTED",
          ("postgresql", "read"): "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"}


@contextmanager
def _transaction(conn: Connection, path: str, kind: str) -> Iterator[Connection]:
    with translate_errors(path):
        conn.execute(_BEGIN[conn.dialect, kind])
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def write_transaction(conn: Connection, path: str = "") -> AbstractContextManager[Connection]:
    """A write transaction, ``COMMIT`` at the end or ``ROLLBACK`` on any exception: all or nothing."""
    return _transaction(conn, path, "write")


def read_snapshot(conn: Connection, path: str = "") -> AbstractContextManager[Connection]:
    """A read transaction: every statement inside sees the same committed state."""
    return _transaction(conn, path, "read")
