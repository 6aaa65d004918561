"""Features: `recsys features --as-of DATE` builds `recsys.user_features` for a date, in PostgreSQL.

The build is the steps of `sql/features/` (listed at the top of `user_features.sql`, whose comments
with `user_stats.sql`'s and `priors.sql`'s define every feature), its users split by id into
`feature_workers` shards run side by side on connections of their own. Python only orchestrates:
the rows never leave the server. Each date is one list partition of
`recsys.user_features`, named `user_features_YYYYMMDD`. A rebuild fills a new standalone table,
indexes it and adds the `check (as_of = D)` constraint that lets `attach partition` skip its scan,
then swaps it in with one short transaction: readers see the old rows or the new ones, never a
half-built date, and a failed build leaves the old partition in place.

Called by the CLI (`recsys features`), the nightly DAG (via `build_features` for the campaign date)
and `make demo` (`feature_summary`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta

from psycopg2 import sql

from recsys.config.settings import Settings
from recsys.db import Connection, connect, database_url, fetch_all, fetch_value
from recsys.db.sqlfiles import load_sql
from recsys.errors import RecsysError

log = logging.getLogger(__name__)

FEATURE_COLUMNS = (
    "as_of",
    "user_id",
    "recency_days",
    "frequency_sessions",
    "monetary_value",
    "engagement_score",
    "discount_sensitivity",
    "free_shipping_preference",
    "email_responsiveness",
    "sms_responsiveness",
    "push_responsiveness",
    "days_since_last_purchase",
    "purchase_count",
    "offers_last_7d",
    "days_since_last_offer",
    "top_category",
    "r_score",
    "f_score",
    "m_score",
    "segment",
    "morning_share",
    "evening_share",
    "category_focus",
)
"""The seed's and the earlier columns of `recsys.user_features`, in table order (registered models read them)."""

PRIOR_FEATURE_COLUMNS = (
    "email_open_rate",
    "sms_open_rate",
    "push_open_rate",
    "email_click_rate",
    "sms_click_rate",
    "push_click_rate",
    "discount_click_rate",
    "free_shipping_click_rate",
    "recommendation_click_rate",
    "bundle_click_rate",
    "discount_convert_rate",
    "free_shipping_convert_rate",
    "recommendation_convert_rate",
    "bundle_convert_rate",
    "organic_discount_share",
    "offer_discount_share",
    "organic_free_shipping_share",
    "offer_free_shipping_share",
    "category_focus_posterior",
    "order_value",
    "preferred_local_hour",
    "preferred_hour_certainty",
    "local_release_hour",
)
"""The prior-shrunk columns (migration 013), after `FEATURE_COLUMNS`; null on dates built before it."""

TABLE_COLUMNS = FEATURE_COLUMNS + PRIOR_FEATURE_COLUMNS
"""Every column of `recsys.user_features`, in table order; the query produces exactly these."""

PRIOR_STRENGTH_BOUNDS = (2.0, 1000.0)
"""Bounds (pseudo-observations) of the empirical-Bayes prior strengths (recsys.eb_prior_strength):
at least 2, so a user with no data gets the population's mean and one trial moves it by at most a
third; at most 1000, so a population without spread beyond noise still lets a heavy user differ."""

SUMMARY_COLUMNS = tuple(c for c in FEATURE_COLUMNS if c not in ("as_of", "user_id", "top_category", "segment"))
SEGMENTS = ("champion", "loyal", "promising", "new", "at_risk", "hibernating", "browser", "dormant")

# Settings for the build transaction only (`set local`), measured on 1M users / 10M events:
# - sort-based grouping (enable_hashagg off): the (user, session) and (user, category) groups are
#   millions and the planner, which cannot estimate them, picks hash tables that spill to disk;
#   sorts do the same work in 60-70% of the time (37 s instead of 55 s with every event in
#   the feature window, 21 s instead of 25 s with them spread over a year);
# - work_mem 256MB per sort; 512MB measured no faster (PostgreSQL never runs the SELECT of an
#   INSERT ... SELECT in parallel, so the build is one backend's work: docs/performance.md);
# - no JIT: compiling this wide query costs about 5 s and wins nothing back.
BUILD_SETTINGS = {"work_mem": "256MB", "enable_hashagg": "off", "jit": "off"}

# Each step's settings: the build's, and its statements in a fixed order. The shards are the
# parallelism (no parallel workers), and a scan starts at the table's first row (no synchronized scans,
# which join a scan already under way on another connection): the priors add their terms in user order.
STEP_SETTINGS = {**BUILD_SETTINGS, "max_parallel_workers_per_gather": "0", "synchronize_seqscans": "off"}

# A shard per feature worker only when the events take at least this much disk per shard (about
# 400,000 events); a smaller shop is built on the caller's connection alone.
SHARD_MIN_EVENT_BYTES = 64 * 1024 * 1024

# Session advisory lock (namespace, date ordinal): two builds of the same date never interleave
# their build and swap transactions. The namespace is arbitrary but fixed: "features".
_LOCK_NAMESPACE = 7_301_958

_SCHEMA = "recsys"
_PARENT = "user_features"
_DATE_IN_BOUND = re.compile(r"'(\d{4}-\d{2}-\d{2})'")


@dataclass(frozen=True)
class FeatureBuild:
    """The result of building the features of one date."""

    as_of: date
    users: int
    seconds: float

    def describe(self) -> str:
        users = f"{self.users:,} user{'' if self.users == 1 else 's'}"
        return f"features as of {self.as_of.isoformat()}: {users} in {self.seconds:.1f} s"


def partition_name(as_of: date) -> str:
    """Name of the `user_features` partition holding `as_of`."""
    return f"{_PARENT}_{as_of:%Y%m%d}"


def feature_query(settings: Settings) -> str:
    """The text of the build's last step, the features' SELECT (`{stats}`, `{cats}`, `{priors}`,
    `{rfm}` and `{zones}` name the earlier steps' tables; pyformat parameters)."""
    return load_sql(settings, "features/user_features")


def query_params(settings: Settings, as_of: date) -> dict[str, object]:
    """Parameters of the feature query for `as_of`."""
    return {
        "as_of": as_of,
        "window_days": settings.feature_window_days,
        "recency_cap_days": settings.recency_cap_days,
        "attribution_days": settings.attribution_days,
        "prior_strength_min": PRIOR_STRENGTH_BOUNDS[0],
        "prior_strength_max": PRIOR_STRENGTH_BOUNDS[1],
    }


def feature_partitions(conn: Connection) -> dict[str, list[date]]:
    """Each partition of `recsys.user_features` and the `as_of` values it holds ([] for a default)."""
    rows = fetch_all(
        conn,
        """
        select c.relname as name, pg_get_expr(c.relpartbound, c.oid) as bound
        from pg_inherits as i
        inner join pg_class as c on i.inhrelid = c.oid
        where i.inhparent = 'recsys.user_features'::regclass
        order by c.relname
        """,
    )
    return {r["name"]: [date.fromisoformat(d) for d in _DATE_IN_BOUND.findall(r["bound"])] for r in rows}


def build_features(conn: Connection, settings: Settings, as_of: date) -> FeatureBuild:
    """Build (or rebuild) the features as of `as_of` and swap them in; commits.

    Call it with no uncommitted work on `conn`: it commits each step of the build and the swap
    separately, so the exclusive lock on `user_features` is held only for the swap, not for the
    whole build. With `settings.feature_workers` above 1 the users are split into that many shards
    by user id, built side by side on as many connections of their own (see `_Workers`).
    """
    started = time.perf_counter()
    final_name = partition_name(as_of)
    staging_name = f"{final_name}_build"
    lock_key = (_LOCK_NAMESPACE, as_of.toordinal())

    with conn.cursor() as cur:
        cur.execute("select pg_advisory_lock(%s, %s)", lock_key)
    conn.commit()
    try:
        try:
            users = _build_table(conn, settings, as_of, staging_name, final_name)
            _swap_in(conn, as_of, staging_name, final_name)
        except BaseException:
            conn.rollback()
            _drop_steps(conn, final_name, keep=())
            raise
    finally:
        if not conn.closed:
            conn.rollback()
            with conn.cursor() as cur:
                cur.execute("select pg_advisory_unlock(%s, %s)", lock_key)
            conn.commit()

    result = FeatureBuild(as_of=as_of, users=users, seconds=time.perf_counter() - started)
    log.info(result.describe())
    return result


@dataclass(frozen=True)
class _Step:
    """One statement of the build: `sql/features/<name>.sql` into a new unlogged table `table`
    (`create ... as`), or with `insert` into the existing table `table`."""

    name: str
    table: sql.Identifier
    identifiers: dict[str, sql.Composable]
    params: dict[str, object]
    insert: bool = False
    settings: dict[str, str] = dataclasses.field(default_factory=dict)
    """Settings of this step over `STEP_SETTINGS`."""
    analyze: bool = False
    """Analyze the new table: a small one the next steps join (a new table has no statistics)."""


def _drop_steps(conn: Connection, final_name: str, *, keep: tuple[str, ...]) -> None:
    """Drop the tables a build of the date makes before its swap (`<partition>_build`, and the steps'
    `<partition>_build_<step>` of any shard count), except `keep`; commits."""
    rows = fetch_all(
        conn,
        "select tablename from pg_tables where schemaname = %s and tablename like %s",
        (_SCHEMA, f"{final_name}_build".replace("_", r"\_") + "%"),
    )
    with conn.cursor() as cur:
        for name in sorted(r["tablename"] for r in rows):
            if name not in keep:
                cur.execute(sql.SQL("drop table if exists {}").format(sql.Identifier(_SCHEMA, name)))
    conn.commit()


def _shard_bounds(conn: Connection, settings: Settings, shards: int) -> list[tuple[int | None, int | None]]:
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


def _build_table(conn: Connection, settings: Settings, as_of: date, staging_name: str, final_name: str) -> int:
    """Fill a new standalone table with the features as of `as_of`, ready to attach; commits.

    Returns the number of users. Nobody reads the table yet; a killed build leaves it and its step
    tables behind, so the date's older ones are dropped first. The steps (sql/features/, described
    in user_features.sql): the category shares; per shard the users' categories and stats; over all
    shards the priors, the RFM quintiles' bounds and the zones' release hours; per shard the
    features, inserted into the new table. Each step commits, so the shards' connections see it.
    """
    _drop_steps(conn, final_name, keep=())
    staging = sql.Identifier(_SCHEMA, staging_name)
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("create table {} (like {} including defaults including constraints)").format(
                staging, sql.Identifier(_SCHEMA, _PARENT)
            )
        )
        # The check constraint proves the partition bound, so attach does not scan the rows. Added
        # to the empty table, it costs a comparison per inserted row instead of a scan afterwards.
        cur.execute(
            sql.SQL("alter table {} add constraint {} check (as_of = {})").format(
                staging, sql.Identifier(f"{final_name}_as_of_check"), sql.Placeholder()
            ),
            (as_of,),
        )
    conn.commit()

    def table(suffix: str) -> sql.Identifier:
        return sql.Identifier(_SCHEMA, f"{staging_name}_{suffix}")

    params = query_params(settings, as_of)
    bounds = _shard_bounds(conn, settings, max(1, settings.feature_workers))
    with _Workers(conn, settings, len(bounds)) as workers:
        shards = range(len(bounds))
        pop = table("pop")
        cats = [table(f"cats{k}") for k in shards]
        stats = [table(f"stats{k}") for k in shards]
        every_stats = sql.SQL("({})").format(
            sql.SQL(" union all ").join(sql.SQL("select * from {}").format(s) for s in stats)
        )
        shard_params = [{**params, "user_from": lo, "user_to": hi} for lo, hi in bounds]
        # a dozen categories: hash aggregation, and PostgreSQL's parallel workers on this lone step
        whole = {"enable_hashagg": "on", "max_parallel_workers_per_gather": "2"}
        workers.run([_Step("category_population", pop, {}, params, settings=whole, analyze=True)])
        workers.run([_Step("user_categories", cats[k], {"pop": pop}, shard_params[k]) for k in shards])
        # the last event before the window, grouped by user: a sort of every event of the cap window
        # before it (3.4M for 500k users), kept in memory
        sort = {"work_mem": "512MB"}
        workers.run([_Step("user_stats", stats[k], {"cats": cats[k]}, shard_params[k], settings=sort) for k in shards])
        priors, rfm, zones = table("priors"), table("rfm"), table("zones")
        workers.run(
            [
                _Step("rfm_bounds", rfm, {"stats": every_stats}, params, analyze=True),
                _Step("priors", priors, {"stats": every_stats, "pop": pop}, params, analyze=True),
                _Step("zone_release", zones, {"stats": every_stats}, params, analyze=True),
            ]
        )
        last = {"priors": priors, "rfm": rfm, "zones": zones}
        users = sum(
            workers.run(
                [
                    _Step("user_features", staging, {**last, "stats": stats[k], "cats": cats[k]}, params, insert=True)
                    for k in shards
                ]
            )
        )
    _drop_steps(conn, final_name, keep=(staging_name,))
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("alter table {} add constraint {} primary key (as_of, user_id)").format(
                staging, sql.Identifier(f"{staging_name}_pkey")
            )
        )
        cur.execute(sql.SQL("analyze {}").format(staging))
    conn.commit()
    return users


class _Workers:
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

    def __enter__(self) -> _Workers:
        n = self.n
        if n == 1:
            return self
        try:
            url = database_url(self.settings)
            opened = [self._stack.enter_context(connect(url)) for _ in range(n)]
        except BaseException:
            self._stack.close()
            raise
        if _server_identity(opened[0]) != _server_identity(self.conn):
            log.warning("features: the settings' database is not the caller's; building on one connection")
            self._stack.close()
            return self
        self.connections = opened
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def run(self, steps: list[_Step]) -> list[int]:
        if len(self.connections) == 1 or len(steps) == 1:
            return [_execute(self.connections[0], self.settings, step) for step in steps]
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
                    counts[i] = _execute(conn, self.settings, step)
                except BaseException:
                    failed.set()
                    raise

        with ThreadPoolExecutor(len(self.connections), thread_name_prefix="features") as pool:
            futures = [pool.submit(work, c) for c in self.connections]
            for future in futures:
                future.result()
        return [counts[i] for i in range(len(steps))]


def _server_identity(conn: Connection) -> tuple:
    row = fetch_all(
        conn, "select current_database() as db, pg_postmaster_start_time() as started, inet_server_port() as port"
    )[0]
    conn.commit()
    return (row["db"], row["started"], row["port"])


def _execute(conn: Connection, settings: Settings, step: _Step) -> int:
    """Run one step in its own transaction (`set local` settings) and commit; its row count."""
    body = sql.SQL(load_sql(settings, f"features/{step.name}")).format(**step.identifiers)
    if step.insert:
        head = sql.SQL("insert into {} ({}) ").format(
            step.table, sql.SQL(", ").join(map(sql.Identifier, TABLE_COLUMNS))
        )
    else:
        head = sql.SQL("create unlogged table {} as ").format(step.table)
    try:
        with conn.cursor() as cur:
            for name, value in {**STEP_SETTINGS, **step.settings}.items():
                cur.execute("select set_config(%s, %s, true)", (name, value))
            # the window recsys.attribution_window() (v_offer_log) uses: the same as attribution_days here
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


def _swap_in(conn: Connection, as_of: date, staging_name: str, final_name: str) -> None:
    """One short transaction: drop the date's old partition, attach the new table in its place."""
    old = [name for name, values in feature_partitions(conn).items() if as_of in values]
    with conn.cursor() as cur:
        for name in old:
            # Dropping a partition detaches it in the same step.
            cur.execute(sql.SQL("drop table {}").format(sql.Identifier(_SCHEMA, name)))
        cur.execute(
            sql.SQL("alter table {} rename to {}").format(
                sql.Identifier(_SCHEMA, staging_name), sql.Identifier(final_name)
            )
        )
        cur.execute(
            sql.SQL("alter index {} rename to {}").format(
                sql.Identifier(_SCHEMA, f"{staging_name}_pkey"), sql.Identifier(f"{final_name}_pkey")
            )
        )
        cur.execute(
            sql.SQL("alter table {} attach partition {} for values in ({})").format(
                sql.Identifier(_SCHEMA, _PARENT), sql.Identifier(_SCHEMA, final_name), sql.Placeholder()
            ),
            (as_of,),
        )
    conn.commit()


def build_feature_range(conn: Connection, settings: Settings, start: date, end: date) -> list[FeatureBuild]:
    """Build the features of every date from `start` to `end` inclusive, each in its own transactions."""
    if end < start:
        raise RecsysError(f"feature range ends ({end}) before it starts ({start})")
    results = []
    day = start
    while day <= end:
        results.append(build_features(conn, settings, day))
        day += timedelta(days=1)
    return results


def backfill_features(conn: Connection, settings: Settings, *, since: date | None = None) -> list[FeatureBuild]:
    """Rebuild every feature date (from `since`) whose rows predate the prior-shrunk columns; commits.

    After migration 013 the dates already built hold null in `PRIOR_FEATURE_COLUMNS`; a rebuild
    computes them from the same inputs (and recomputes the other columns, which the query defines
    the same way). Dates built since are left alone, so running it again does nothing. Each date
    is its own build and swap, as in `build_feature_range`. Returns the builds, oldest first.
    """
    dates = [r["as_of"] for r in fetch_all(conn, load_sql(settings, "features/backfill_dates"), {"since": since})]
    conn.commit()
    results = [build_features(conn, settings, day) for day in dates]
    if results:
        log.info("features: backfilled %d date(s) in %.1f s", len(results), sum(r.seconds for r in results))
    return results


def drop_old_features(conn: Connection, settings: Settings, today: date) -> int:
    """Retention: drop the partitions whose dates are all before `today - feature_retention_days`.

    Returns how many partitions were dropped; commits.
    """
    cutoff = today - timedelta(days=settings.feature_retention_days)
    old = [name for name, values in feature_partitions(conn).items() if values and max(values) < cutoff]
    with conn.cursor() as cur:
        for name in old:
            cur.execute(sql.SQL("drop table {}").format(sql.Identifier(_SCHEMA, name)))
    conn.commit()
    if old:
        log.info("features: dropped %d partition(s) before %s", len(old), cutoff)
    return len(old)


def feature_summary(conn: Connection, as_of: date) -> str:
    """A readable text table of the features as of a date: users, min/mean/max, users per segment."""
    users = fetch_value(conn, "select count(*) from recsys.user_features where as_of = %s", (as_of,))
    if not users:
        return f"features as of {as_of.isoformat()}: no users (not built, or no events in the window)"
    stats = sql.SQL(", ").join(
        sql.SQL("min({c})::double precision, avg({c})::double precision, max({c})::double precision").format(
            c=sql.Identifier(c)
        )
        for c in SUMMARY_COLUMNS
    )
    with conn.cursor() as cur:
        cur.execute(sql.SQL("select {} from recsys.user_features where as_of = %s").format(stats), (as_of,))
        row = cur.fetchone()
    segments = {
        r["segment"]: r["users"]
        for r in fetch_all(
            conn,
            "select segment, count(*) as users from recsys.user_features where as_of = %s group by segment",
            (as_of,),
        )
    }

    width = max(len(c) for c in SUMMARY_COLUMNS)
    lines = [f"features as of {as_of.isoformat()}: {users:,} users", ""]
    lines.append(f"{'feature':<{width}}  {'min':>10}  {'mean':>10}  {'max':>10}")
    for i, column in enumerate(SUMMARY_COLUMNS):
        lo, mean, hi = row[3 * i : 3 * i + 3]
        lines.append(f"{column:<{width}}  {lo:>10.3f}  {mean:>10.3f}  {hi:>10.3f}")
    lines += ["", f"{'segment':<{width}}  {'users':>10}  {'share':>10}"]
    for segment in (*SEGMENTS, *sorted(set(segments) - set(SEGMENTS))):
        n = segments.get(segment, 0)
        lines.append(f"{segment:<{width}}  {n:>10,}  {n / users:>10.1%}")
    return "\n".join(lines)
