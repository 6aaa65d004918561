"""Queries behind the Campaigns page: read-only, from the analyst views only.

The queries are the package's `sql/plugin/*.sql` files, read by name with `recsys.db.sqlfiles.load_sql`.

The database is the Airflow connection `recsys_db` (an `AIRFLOW_CONN_RECSYS_DB` variable, a secrets
backend or the metadata database), else `RECSYS_DATABASE_URL`. It is resolved per request, never at
import. The session then acts as the analyst role (`RECSYS_ANALYST_ROLE`, default `recsys_analyst`:
SELECT on the `v_*` views and nothing else) before its first query, and every query runs in a
read-only transaction with a statement timeout, so the page can read neither the tables behind the
views nor write, nor hold the API server's workers for long.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the driver loads on the first request, not when the API server imports plugins
    import psycopg2.extensions

CONN_ID = "recsys_db"
ANALYST_CONN_ID = "recsys_analyst_db"
"""An optional login of its own for the page (a member of the analyst role): used when defined."""
STATEMENT_TIMEOUT_MS = 30_000
Z_95 = 1.959963984540054


class DatabaseUnavailable(RuntimeError):
    """The campaign database is not configured or does not answer."""


def _analyst_role() -> str:
    """The analyst role's name from the settings (validated there as a plain identifier)."""
    from recsys.config.settings import load_settings
    from recsys.errors import ConfigError

    try:
        return load_settings().analyst_role
    except ConfigError as e:
        raise DatabaseUnavailable(f"the campaign page's settings are invalid: {e}") from e


def _url_from_airflow() -> str | None:
    """URL of the `recsys_analyst_db` Airflow connection, else of `recsys_db` (the same conversion
    the DAG tasks use), or None."""
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models.connection import Connection

    from recsys.db import connection_url

    for conn_id in (ANALYST_CONN_ID, CONN_ID):
        try:
            return connection_url(Connection.get_connection_from_secrets(conn_id))
        except AirflowNotFoundException:
            continue
    return None


@contextmanager
def connect() -> Iterator[psycopg2.extensions.connection]:
    """A read-only connection to the campaign database, closed (and rolled back) on exit."""
    from recsys.db import open_connection
    from recsys.errors import RecsysError

    role = _analyst_role()
    url = _url_from_airflow() or os.environ.get("RECSYS_DATABASE_URL")
    if not url:
        raise DatabaseUnavailable(
            f"no campaign database: define the Airflow connection '{CONN_ID}' "
            f"(AIRFLOW_CONN_{CONN_ID.upper()}) or set RECSYS_DATABASE_URL"
        )
    try:
        conn = open_connection(url, application_name="recsys-campaigns-ui")
    except RecsysError as e:
        cause = str(e.__cause__ or e).strip()
        first_line = cause.splitlines()[0] if cause else type(e).__name__
        raise DatabaseUnavailable(f"cannot connect to the campaign database ({CONN_ID}): {first_line}") from e
    try:
        conn.set_session(readonly=True)
        _act_as_analyst(conn, role)
        with conn.cursor() as cur:
            cur.execute("set time zone 'UTC'")
            cur.execute("select set_config('statement_timeout', %s, true)", (str(STATEMENT_TIMEOUT_MS),))
            # Small, one-off reporting queries: JIT compilation would cost more than it saves.
            cur.execute("select set_config('jit', 'off', true)")
        yield conn
    finally:
        conn.rollback()
        conn.close()


def _act_as_analyst(conn: psycopg2.extensions.connection, role: str) -> None:
    """`set role` to the analyst role for the rest of this connection's session.

    A plain `set role` (not `set local`) lasts for the session, past any commit. That is safe here
    because `connect()` opens a new connection for each request and closes it at the end, so the
    role never carries over to another request.

    The login of `recsys_db` usually owns the schema; the page's queries must not read with its
    rights. It may act as the analyst role when it is a superuser or a member of the role (`recsys
    db migrate` makes the login that migrates one). A `recsys_analyst_db` login is the stronger
    boundary: even SQL that ran `reset role` would be left with that login's rights.
    """
    import psycopg2
    from psycopg2 import sql

    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("set role {}").format(sql.Identifier(role)))
    except psycopg2.Error as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DatabaseUnavailable(
            f"the login of the campaign database ({CONN_ID}) cannot act as the analyst role {role!r}: "
            f"{first_line}; run `recsys db migrate` with that login, or `grant {role} to <login>`"
        ) from e


def _rows(conn: psycopg2.extensions.connection, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of `sql/plugin/<name>.sql` as dicts."""
    from recsys.config.settings import package_dir
    from recsys.db.sqlfiles import load_sql

    with conn.cursor() as cur:
        cur.execute(load_sql(package_dir("sql"), f"plugin/{name}"), params)
        names = [d.name for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def latest_runs(conn: psycopg2.extensions.connection, limit: int) -> list[dict[str, Any]]:
    """The newest campaign runs (by campaign date, then start) with what each scored.

    From the counts the runs recorded, so the list stays cheap however many users a night has;
    outcomes and lift (which read every offer and purchase of a run) come per run from `run()`.
    """
    return _rows(conn, "latest_runs", {"max_rows": limit})


def run(conn: psycopg2.extensions.connection, run_id: str) -> dict[str, Any] | None:
    """One run with its outcomes so far, its lift and the per-offer breakdown; None if no such run.

    One pass over `v_campaign_summary` for the run: its groups (channel x offer type x timing x
    segment) are summed per channel, offer type and timing for the breakdown, and over everything
    for the run's totals. Treated and holdout users of different groups are disjoint, so the sums
    are the run's users and the lift is over all of them.
    """
    rows = _rows(conn, "run", {"run_id": run_id})
    if not rows:
        return None
    found = rows[0]
    found["outcomes"], found["breakdown"], found["outcomes_unavailable"] = None, [], None
    with conn.cursor() as cur:
        cur.execute("savepoint outcomes")
    from psycopg2.errors import QueryCanceled

    try:
        groups = _summary_groups(conn, run_id)
    except QueryCanceled:
        # The statement timeout: show the rest of the page rather than an error.
        with conn.cursor() as cur:
            cur.execute("rollback to savepoint outcomes")
            cur.execute("select current_setting('statement_timeout')")
            limit = cur.fetchone()[0]
        found["outcomes_unavailable"] = (
            f"the outcomes of run {run_id} (v_campaign_summary) took longer than the page's "
            f"statement timeout ({limit}); query the view directly"
        )
        return found
    total = {k: sum(g[k] for g in groups) for k in (*OUTCOMES, *GROUP_SIZES)}
    found["outcomes"] = {k: total[k] for k in OUTCOMES if k != "offers"}
    found["outcomes"]["lift"] = lift(
        total["treated_users"], total["treated_buyers"], total["holdout_users"], total["holdout_buyers"]
    )
    found["breakdown"] = [
        {k: g[k] for k in ("channel", "offer_type", "timing", *OUTCOMES)} for g in groups if g["offers"] > 0
    ]
    return found


def _summary_groups(conn: psycopg2.extensions.connection, run_id: str) -> list[dict[str, Any]]:
    return _rows(conn, "run_summary_groups", {"run_id": run_id})


OUTCOMES = ("offers", "sent", "delivered", "opened", "clicked", "converted", "revenue")
GROUP_SIZES = ("treated_users", "treated_buyers", "holdout_users", "holdout_buyers")


def lift(treated_users: int, treated_buyers: float, holdout_users: int, holdout_buyers: float) -> dict[str, Any]:
    """Difference of purchase rates, treated minus holdout, with a 95% normal (Wald) interval.

    The same definition as `v_campaign_summary`'s per-group lift. Rates and bounds are None when
    either group is empty.
    """
    out: dict[str, Any] = {
        "treated_users": treated_users,
        "holdout_users": holdout_users,
        "treated_purchase_rate": None,
        "holdout_purchase_rate": None,
        "lift": None,
        "lift_ci_low": None,
        "lift_ci_high": None,
    }
    if treated_users > 0:
        out["treated_purchase_rate"] = treated_buyers / treated_users
    if holdout_users > 0:
        out["holdout_purchase_rate"] = holdout_buyers / holdout_users
    if treated_users > 0 and holdout_users > 0:
        p1, p0 = out["treated_purchase_rate"], out["holdout_purchase_rate"]
        diff = p1 - p0
        se = math.sqrt(p1 * (1 - p1) / treated_users + p0 * (1 - p0) / holdout_users)
        out.update(lift=diff, lift_ci_low=diff - Z_95 * se, lift_ci_high=diff + Z_95 * se)
    return out


def schedule(conn: psycopg2.extensions.connection, run_id: str) -> list[dict[str, Any]]:
    """A run's scheduled-time histogram: offers (and sent) per UTC hour and channel."""
    return _rows(conn, "run_schedule", {"run_id": run_id})


def leaderboard(conn: psycopg2.extensions.connection, limit: int) -> list[dict[str, Any]]:
    """The newest registered models with their headline numbers and the gate's decision."""
    return _rows(conn, "leaderboard", {"max_rows": limit})
