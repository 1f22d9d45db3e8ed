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
