"""Database access: the one place that opens PostgreSQL connections.

`database_url()` resolves the server: `RECSYS_DATABASE_URL` when set, else an embedded
PostgreSQL (the `pgserver` package) in a project-local folder, started on first use and kept
running for the next command. `connect()` is a context manager that commits on success, rolls
back on error and always closes. Values always travel as query parameters.
"""

from __future__ import annotations

import json
import logging
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import psycopg2
import psycopg2.extensions
from psycopg2 import sql
from psycopg2.extensions import parse_dsn

from recsys.config.settings import Settings
from recsys.errors import ConfigError, RecsysError

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


def open_connection(url: str, *, application_name: str = "recsys") -> Connection:
    """A new connection (the caller closes it); a clear error naming the server when it cannot."""
    try:
        return psycopg2.connect(url, application_name=application_name[:63])
    except psycopg2.OperationalError as e:
        raise RecsysError(f"cannot connect to PostgreSQL ({redact(url)}): {str(e).strip()}") from e


@contextmanager
def connect(url: str, *, autocommit: bool = False, **session: Any) -> Iterator[Connection]:
    """A connection that commits when the block succeeds and rolls back when it raises.

    Keyword arguments become session settings (`work_mem="256MB"`), set for this connection only.
    """
    conn = open_connection(url)
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
        parts = parse_dsn(url)
    except psycopg2.ProgrammingError:
        return "<unparseable database URL>"
    host = parts.get("host", "localhost")
    return f"{parts.get('user', '')}@{host}:{parts.get('port', '5432')}/{parts.get('dbname', '')}"


# --- URLs: the one place that turns connection parameters into a postgresql:// URL ----------------

# libpq options an Airflow connection may carry in its `extra`
_LIBPQ_EXTRAS = {
    "sslmode",
    "sslcert",
    "sslkey",
    "sslrootcert",
    "connect_timeout",
    "options",
    "application_name",
    "target_session_attrs",
}


def url_from_params(params: dict[str, str]) -> str:
    """A `postgresql://` URL from libpq keyword parameters (what `parse_dsn` returns).

    A host that is a folder is a unix socket directory (the embedded server's, or
    `/var/run/postgresql`): it cannot stand in the URL's authority, so it goes into the query
    string with its port, where libpq looks for them. A TCP host goes into the authority.
    """
    params = {k: str(v) for k, v in params.items() if v is not None and v != ""}
    user = quote(params.pop("user", ""), safe="")
    password = quote(params.pop("password", ""), safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = params.pop("host", "")
    port = params.pop("port", "")
    database = quote(params.pop("dbname", "postgres"), safe="")
    query: dict[str, str] = {}
    netloc = ""
    if host.startswith("/") or (host and "," in host):
        query["host"] = host
        if port:
            query["port"] = port
    elif host:
        netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
    elif port:
        query["port"] = port
    query.update(params)
    return f"postgresql://{auth}{netloc}/{database}" + (f"?{urlencode(query)}" if query else "")


def with_database(url: str, name: str) -> str:
    """`url` (a URL or a keyword DSN) pointing at database `name` instead, as a `postgresql://` URL."""
    params = parse_dsn(url)
    params["dbname"] = name
    return url_from_params(params)


def connection_url(conn: Any) -> str:
    """A PostgreSQL URL from an Airflow connection (host, port, login, password, schema = database).

    The host may be a unix socket folder, given as the host (`{"host": "/var/run/postgresql"}` in
    JSON, or percent-encoded in a URI: `postgresql://u@%2Fvar%2Frun%2Fpostgresql/db`) or as
    `?host=/var/run/postgresql` in the URI (Airflow keeps that in `extra`).
    """
    extra = conn.extra_dejson if getattr(conn, "extra", None) else {}
    params: dict[str, str] = {k: str(v) for k, v in extra.items() if k in _LIBPQ_EXTRAS}
    host = conn.host or str(extra.get("host") or "")
    port = conn.port or extra.get("port")
    params.update(
        user=conn.login or "",
        password=conn.password or "",
        host=host,
        port=str(port) if port else "",
        dbname=conn.schema or "postgres",
    )
    return url_from_params(params)


def airflow_connection(url: str) -> str:
    """The `recsys_db` Airflow connection for a PostgreSQL URL, in the JSON form that
    `AIRFLOW_CONN_RECSYS_DB` accepts; a unix-socket host is kept as the host."""
    p = parse_dsn(url)
    conn: dict[str, Any] = {
        "conn_type": "postgres",
        "host": p.pop("host", "localhost"),
        "login": p.pop("user", None),
        "password": p.pop("password", None) or None,
        "schema": p.pop("dbname", "postgres"),
    }
    if p.get("port"):
        conn["port"] = int(p.pop("port"))
    extra = {k: v for k, v in p.items() if k in _LIBPQ_EXTRAS}
    if extra:
        conn["extra"] = extra
    return json.dumps({k: v for k, v in conn.items() if v is not None})


def create_database(server_url: str, name: str, *, replace: bool = False) -> str:
    """Create database `name` on the server of `server_url` (dropping it first when `replace`);
    its URL. For the demo, the simulation and tests: each works in a database of its own."""
    try:
        admin = psycopg2.connect(server_url)
    except psycopg2.OperationalError as e:
        raise RecsysError(f"cannot connect to PostgreSQL ({redact(server_url)}): {str(e).strip()}") from e
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            if replace:
                cur.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
            cur.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    except psycopg2.Error as e:
        raise RecsysError(f"cannot create database {name!r} on {redact(server_url)}: {str(e).strip()}") from e
    finally:
        admin.close()
    return with_database(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    """Drop database `name` (closing its sessions) if it exists."""
    with connect(server_url, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


@contextmanager
def scratch_database(server_url: str, prefix: str, *, keep: bool = False) -> Iterator[str]:
    """A new database `<prefix>_<random>` on the server of `server_url`: its URL, dropped when the
    block ends, also on an error or Ctrl-C. With `keep` it stays, and its name is printed. For
    tests and benchmarks."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    url = create_database(server_url, name)
    try:
        yield url
    finally:
        if keep:
            print(f"kept database {name}")
        else:
            drop_database(server_url, name)


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
