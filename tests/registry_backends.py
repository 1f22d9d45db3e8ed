"""Throw-away PostgreSQL databases for the registry tests (a real server: ``QML_TEST_POSTGRES_URL``)."""
from __future__ import annotations

import uuid
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit


def with_database(url: str, dbname: str) -> str:
    """``url`` pointing at another database on the same server."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{dbname}"))


@contextmanager
def fresh_postgres_db(server_url: str):
    """Create an empty database on the server, yield its URL, drop it afterwards (even if in use)."""
    import psycopg

    name = f"qml_t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')          # a generated identifier, never user input
    try:
        yield with_database(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


_STATE_SQL = {
    # every schema a user could have made, with its owner and privileges (a new database: public only)
    "schemas": "SELECT nspname, pg_get_userbyid(nspowner), coalesce(nspacl::text, '') FROM pg_namespace "
               "WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema' ORDER BY 1",
    # tables, indexes, sequences, views, types, functions outside the system catalogs (a new database: none)
    "relations": "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                 "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_t%'",
    "types": "SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
             "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_t%'",
    "functions": "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                 "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')",
    "extensions": "SELECT extname FROM pg_extension ORDER BY 1",
    "large_objects": "SELECT count(*) FROM pg_largeobject_metadata",
    "settings": "SELECT count(*) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
                "WHERE d.datname = current_database()",
}


def database_state(url: str) -> dict:
    """What a test could have left in a database, beyond the server's own catalogs."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return {k: conn.execute(q).fetchall() for k, q in _STATE_SQL.items()}


class RecycledDatabases:
    """Empty PostgreSQL databases for the registry tests: made once, emptied after each test, reused.

    ``CREATE DATABASE`` costs about 0.6 s on the CI machine, and about a hundred tests take a
    PostgreSQL registry. Emptying a used one back costs about 0.03 s: end every other session on it
    (as ``DROP DATABASE ... WITH (FORCE)`` would), drop every user schema with what is in it, and
    make ``public`` again as a new database has it. A test then gets a database whose
    :func:`database_state` equals that of one just created (checked every time; one that differs is
    dropped and replaced by a new one), so for the registry it *is* a new database: no tables, no
    migrations applied, no rows. All of them are dropped when the session ends.
    """

    def __init__(self) -> None:
        self._free: dict[str, list[str]] = {}
        self._made: dict[str, list[str]] = {}
        self._new_state: dict[str, dict] = {}

    def _create(self, server_url: str) -> str:
        import psycopg

        name = f"qml_t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')      # a generated identifier, never user input
        self._made.setdefault(server_url, []).append(name)
        if server_url not in self._new_state:
            self._new_state[server_url] = database_state(with_database(server_url, name))
        return name

    def _drop(self, server_url: str, name: str) -> None:
        import psycopg

        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._made[server_url].remove(name)

    def _empty_again(self, server_url: str, name: str) -> bool:
        """Empty ``name`` back to a new database's state; False when that failed (then it is dropped)."""
        import psycopg

        url = with_database(server_url, name)
        try:
            with psycopg.connect(server_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
            with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
                schemas = [r[0] for r in conn.execute(_STATE_SQL["schemas"]).fetchall()]
                for schema in schemas:
                    conn.execute(f'DROP SCHEMA "{schema}" CASCADE')   # names read from the catalog, quoted
                conn.execute("SELECT lo_unlink(oid) FROM pg_largeobject_metadata")
                conn.execute(f'ALTER DATABASE "{name}" RESET ALL')
                conn.execute("CREATE SCHEMA public AUTHORIZATION pg_database_owner")
                conn.execute("GRANT USAGE ON SCHEMA public TO PUBLIC")
                conn.execute("COMMENT ON SCHEMA public IS 'standard public schema'")
            return database_state(url) == self._new_state[server_url]
        except psycopg.Error:
            return False

    @contextmanager
    def database(self, server_url: str):
        """Yield the URL of an empty database on ``server_url``; empty it again (or drop it) afterwards."""
        free = self._free.setdefault(server_url, [])
        name = free.pop() if free else self._create(server_url)
        try:
            yield with_database(server_url, name)
        finally:
            if self._empty_again(server_url, name):
                free.append(name)
            else:
                self._drop(server_url, name)

    def close(self) -> None:
        """Drop every database this pool made."""
        for server_url, names in self._made.items():
            for name in list(names):
                self._drop(server_url, name)
        self._free.clear()
