"""The steps of a date's feature build (`recsys.data.features.build_features`): how each runs, and on
which connections.

A step is one statement of `sql/features/` into a new unlogged table (a temporary one when a single
connection runs every step: no other session reads it, and creating it writes nothing to disk), or
into the date's new partition. `Workers` runs a list of steps on connections of their own to the
database (one per shard of users, `shard_bounds`), each connection taking the next step when it is
free; every step commits, so the next step's connection sees its table. `drop_steps` removes what a
failed or killed build left.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from psycopg2 import sql

from recsys.config.settings import Settings
from recsys.db import Connection, connect, database_url, fetch_all
from recsys.db.sqlfiles import load_sql

log = logging.getLogger(__name__)

# Settings for each step's transaction only (`set local`), measured on 1M users / 10M events with
# the build as one query:
# - sort-based grouping (enable_hashagg off): the (user, session) and (user, category) groups are
#   millions and the planner, which cannot estimate them, picks hash tables that spill to disk;
#   sorts do the same work in 60-70% of the time (37 s instead of 55 s with every event in
#   the feature window, 21 s instead of 25 s with them spread over a year); the category shares'
#   step, a dozen groups, turns it back on;
# - work_mem 256MB per sort (the users' stats step takes 512MB: its sort of the events before the
#   window spilled to disk at 256MB with 500,000 users per shard);
# - no JIT: compiling these wide queries costs seconds and wins nothing back;
# - no nested loops (enable_nestloop off; a join with no other way to run, a cross join with the
#   parameters or a lateral one, still runs as one): every join here is a bulk one, and the planner
#   cannot estimate a grouped subquery's rows (it guesses 200 users). With that guess it joined
#   every user of a shard to a rescan of every user's top category: on a database just loaded by
#   the extract (1M users, 10M events), the users' stats step ran for more than 10 minutes instead
#   of 10 s.
BUILD_SETTINGS = {"work_mem": "256MB", "enable_hashagg": "off", "jit": "off", "enable_nestloop": "off"}

# Each step's settings: the build's, and its statements in a fixed order. The shards are the
# parallelism (no parallel workers), and a scan starts at the table's first row (no synchronized scans,
# which join a scan already under way on another connection): the priors add their terms in user order.
STEP_SETTINGS = {**BUILD_SETTINGS, "max_parallel_workers_per_gather": "0", "synchronize_seqscans": "off"}

# The schema of a step's table when a single connection runs every step (`Step`).
TEMP_SCHEMA = "pg_temp"

# A shard per feature worker only when the events take at least this much disk per shard (about
# 400,000 events); a smaller shop is built on the caller's connection alone.
SHARD_MIN_EVENT_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Step:
    """One statement of the build: `sql/features/<name>.sql` into a new unlogged table `table`
    (`create ... as`; a temporary table when `table` is in `TEMP_SCHEMA`), or with `insert` (the
    columns, in the SELECT's order) into the existing table `table`."""

    name: str
    table: sql.Identifier
    identifiers: dict[str, sql.Composable]
    params: dict[str, object]
    insert: tuple[str, ...] = ()
    settings: dict[str, str] = dataclasses.field(default_factory=dict)
    """Settings of this step over `STEP_SETTINGS`."""
    analyze: bool = False
    """Analyze the new table: a small one the next steps join (a new table has no statistics)."""


def drop_steps(conn: Connection, final_name: str, *, keep: tuple[str, ...]) -> None:
    """Drop the tables a build of the date makes before its swap (`<partition>_build`, and the steps'
    `<partition>_build_<step>` of any shard count, in `recsys` or this session's temporary schema),
    except `keep`; commits."""
    rows = fetch_all(
        conn,
        "select schemaname = 'recsys' as is_shared, tablename from pg_tables "
        "where (schemaname = 'recsys' or schemaname::regnamespace = pg_my_temp_schema()) and tablename like %s",
        (f"{final_name}_build".replace("_", r"\_") + "%",),
    )
    with conn.cursor() as cur:
        for r in sorted(rows, key=lambda r: r["tablename"]):
            if r["tablename"] not in keep:
                schema = "recsys" if r["is_shared"] else TEMP_SCHEMA
                cur.execute(sql.SQL("drop table if exists {}").format(sql.Identifier(schema, r["tablename"])))
    conn.commit()


def shard_bounds(conn: Connection, settings: Settings, shards: int) -> list[tuple[int | None, int | None]]:
    """`shards` ranges [from, to) of user ids covering every id (None: open). One open range when
    `shards` is 1, the ids are unknown (no users row and no purchase) or the events take less than
    `SHARD_MIN_EVENT_BYTES` per shard on disk (a small shop: the shards' extra statements and
    connections would cost more than they save)."""
    row = fetch_all(conn, load_sql(settings, "features/user_id_range"))[0]
    conn.commit()
    lo, hi = row["lo"], row["hi"]
    shards = min(shards, int(row["event_bytes"]) // max(SHARD_MIN_EVENT_BYTES, 1))
    if shards <= 1 or lo is None or hi is None or hi - lo + 1 < shards:
        return [(None, None)]
    cuts = [lo + (hi - lo + 1) * k // shards for k in range(1, shards)]
    return list(zip([None, *cuts], [*cuts, None], strict=True))


class Workers:
    """The connections a build runs its steps on: `n` connections of their own to the database of
    `settings`, or the caller's connection alone (`n` is 1, or the settings' URL names another
    database than the caller's connection: logged).

    `run` executes a list of steps, each connection taking the next step when it is free, and returns
    each step's row count in order. Every step runs in its own transaction with `STEP_SETTINGS` and
    commits, so the next step's connection sees its table.
    """

    def __init__(self, conn: Connection, settings: Settings, n: int) -> None:
        self.n = n
        self.settings = settings
        self.conn = conn
        self.connections: list[Connection] = [conn]
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Workers:
        n = self.n
        if n == 1:
            return self
        try:
            url = database_url(self.settings)
            opened = [self._stack.enter_context(connect(url)) for _ in range(n)]
        except BaseException:
            self._stack.close()
            raise
        if server_identity(opened[0]) != server_identity(self.conn):
            log.warning("features: the settings' database is not the caller's; building on one connection")
            self._stack.close()
            return self
        self.connections = opened
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def run(self, steps: list[Step]) -> list[int]:
        if len(self.connections) == 1 or len(steps) == 1:
            return [execute(self.connections[0], self.settings, step) for step in steps]
        pending = list(enumerate(steps))
        counts: dict[int, int] = {}
        lock = threading.Lock()
        failed = threading.Event()

        def work(conn: Connection) -> None:
            while not failed.is_set():
                with lock:
                    if not pending:
                        return
                    i, step = pending.pop(0)
                try:
                    counts[i] = execute(conn, self.settings, step)
                except BaseException:
                    failed.set()
                    raise

        with ThreadPoolExecutor(len(self.connections), thread_name_prefix="features") as pool:
            futures = [pool.submit(work, c) for c in self.connections]
            for future in futures:
                future.result()
        return [counts[i] for i in range(len(steps))]


def server_identity(conn: Connection) -> tuple:
    row = fetch_all(
        conn, "select current_database() as db, pg_postmaster_start_time() as started, inet_server_port() as port"
    )[0]
    conn.commit()
    return (row["db"], row["started"], row["port"])


def execute(conn: Connection, settings: Settings, step: Step) -> int:
    """Run one step in its own transaction (`set local` settings) and commit; its row count."""
    body = sql.SQL(load_sql(settings, f"features/{step.name}")).format(**step.identifiers)
    if step.insert:
        head = sql.SQL("insert into {} ({}) ").format(step.table, sql.SQL(", ").join(map(sql.Identifier, step.insert)))
    elif step.table.strings[0] == TEMP_SCHEMA:
        head = sql.SQL("create table {} as ").format(step.table)
    else:
        head = sql.SQL("create unlogged table {} as ").format(step.table)
    try:
        with conn.cursor() as cur:
            for name, value in {**STEP_SETTINGS, **step.settings}.items():
                cur.execute("select set_config(%s, %s, true)", (name, value))
            # the window recsys.attribution_window() (v_sent_offers) uses: the same as attribution_days here
            cur.execute("select set_config('recsys.attribution_days', %s, true)", (str(settings.attribution_days),))
            cur.execute(head + body, step.params)
            rows = cur.rowcount
            if step.analyze:
                # statistics for the next steps' plans (a new table has none)
                cur.execute(sql.SQL("analyze {}").format(step.table))
        conn.commit()
    except BaseException:
        if not conn.closed:
            conn.rollback()
        raise
    return rows
