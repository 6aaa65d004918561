"""Database access: the one place that opens PostgreSQL connections.

`database_url()` resolves the server: `RECSYS_DATABASE_URL` when set, else an embedded
PostgreSQL (the `pgserver` package) in a project-local folder, started on first use and kept
running for the next command. `connect()` is a context manager that commits on success, rolls
back on error and always closes. Values always travel as query parameters.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from recsys.errors import ConfigError, RecsysError
from recsys.settings import Settings

log = logging.getLogger(__name__)

Connection = psycopg2.extensions.connection


def embedded_url(pgdata: Path) -> str:
    """Start (or reuse) the embedded PostgreSQL server in `pgdata` and return its URL."""
    try:
        import pgserver
    except ImportError as e:  # pragma: no cover - pgserver is in requirements.txt
        raise ConfigError("RECSYS_DATABASE_URL is not set and the embedded server (pgserver) is not installed") from e
    pgdata.mkdir(parents=True, exist_ok=True)
    # pgserver asks platformdirs for a runtime folder it does not need; without a login session
    # (XDG_RUNTIME_DIR unset, as under cron, CI or Airflow) that only warns.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set", category=UserWarning)
    # cleanup_mode=None keeps the server running after this process exits, so the next
    # command (or Airflow task) reuses it instead of paying the start-up again.
    server = pgserver.get_server(pgdata, cleanup_mode=None)
    url = server.get_uri()
    log.info("RECSYS_DATABASE_URL is not set: using the embedded PostgreSQL in %s", pgdata)
    return url


def database_url(settings: Settings) -> str:
    """The PostgreSQL URL for this run."""
    if settings.database_url:
        return settings.database_url
    return embedded_url(settings.embedded_pgdata)


@contextmanager
def connect(url: str, *, autocommit: bool = False, **session: Any) -> Iterator[Connection]:
    """A connection that commits when the block succeeds and rolls back when it raises.

    Keyword arguments become session settings (`work_mem="256MB"`), set for this connection only.
    """
    try:
        conn = psycopg2.connect(url, application_name="recsys")
    except psycopg2.OperationalError as e:
        raise RecsysError(f"cannot connect to PostgreSQL ({redact(url)}): {str(e).strip()}") from e
    conn.autocommit = autocommit
    try:
        with conn.cursor() as cur:
            cur.execute("set time zone 'UTC'")
            for name, value in session.items():
                cur.execute(sql.SQL("select set_config({}, %s, false)").format(sql.Literal(name)), (str(value),))
        yield conn
        if not autocommit:
            conn.commit()
    except BaseException:
        if not conn.closed and not autocommit:
            conn.rollback()
        raise
    finally:
        conn.close()


def redact(url: str) -> str:
    """The URL with any password replaced, for messages and logs."""
    try:
        from psycopg2.extensions import parse_dsn

        parts = parse_dsn(url)
    except psycopg2.ProgrammingError:
        return "<unparseable database URL>"
    host = parts.get("host", "localhost")
    return f"{parts.get('user', '')}@{host}:{parts.get('port', '5432')}/{parts.get('dbname', '')}"


def fetch_all(conn: Connection, query: str | sql.Composable, params: Any = None) -> list[dict[str, Any]]:
    """Run a query and return its rows as dicts."""
    with conn.cursor() as cur:
        cur.execute(query, params)
        if cur.description is None:
            return []
        names = [d.name for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def fetch_value(conn: Connection, query: str | sql.Composable, params: Any = None) -> Any:
    """Run a query and return the first column of its first row (None if no row)."""
    with conn.cursor() as cur:
        cur.execute(query, params)
        row = cur.fetchone()
        return None if row is None else row[0]
