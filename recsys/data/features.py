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

import logging
import re
import time
from dataclasses import dataclass
from datetime import date, timedelta

from psycopg2 import sql

from recsys.config.settings import Settings
from recsys.data.feature_steps import TEMP_SCHEMA, Step, Workers, drop_steps, shard_bounds
from recsys.db import Connection, fetch_all, fetch_value
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
    by user id, built side by side on as many connections of their own (`recsys.data.feature_steps`).
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
            drop_steps(conn, final_name, keep=())
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


def _build_table(conn: Connection, settings: Settings, as_of: date, staging_name: str, final_name: str) -> int:
    """Fill a new standalone table with the features as of `as_of`, ready to attach; commits.

    Returns the number of users. Nobody reads the table yet; a killed build leaves it and its step
    tables behind, so the date's older ones are dropped first. The steps (sql/features/, described
    in user_features.sql): the category shares; per shard the users' categories and stats; over all
    shards the priors, the RFM quintiles' bounds and the zones' release hours; per shard the
    features, inserted into the new table. Each step commits, so the shards' connections see it.
    """
    drop_steps(conn, final_name, keep=())
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

    params = query_params(settings, as_of)
    bounds = shard_bounds(conn, settings, max(1, settings.feature_workers))
    with Workers(conn, settings, len(bounds)) as workers:
        # steps that one connection runs alone go to its temporary tables (a killed build leaves none)
        schema = TEMP_SCHEMA if len(workers.connections) == 1 else _SCHEMA

        def table(suffix: str) -> sql.Identifier:
            return sql.Identifier(schema, f"{staging_name}_{suffix}")

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
        workers.run([Step("category_population", pop, {}, params, settings=whole, analyze=True)])
        workers.run([Step("user_categories", cats[k], {"pop": pop}, shard_params[k]) for k in shards])
        # the last event before the window, grouped by user: a sort of every event of the cap window
        # before it (3.4M for 500k users), kept in memory
        sort = {"work_mem": "512MB"}
        workers.run([Step("user_stats", stats[k], {"cats": cats[k]}, shard_params[k], settings=sort) for k in shards])
        priors, rfm, zones = table("priors"), table("rfm"), table("zones")
        workers.run(
            [
                Step("rfm_bounds", rfm, {"stats": every_stats}, params, analyze=True),
                Step("priors", priors, {"stats": every_stats, "pop": pop}, params, analyze=True),
                Step("zone_release", zones, {"stats": every_stats}, params, analyze=True),
            ]
        )
        last = {"priors": priors, "rfm": rfm, "zones": zones}
        users = sum(
            workers.run(
                [
                    Step(
                        "user_features",
                        staging,
                        {**last, "stats": stats[k], "cats": cats[k]},
                        params,
                        insert=TABLE_COLUMNS,
                    )
                    for k in shards
                ]
            )
        )
    drop_steps(conn, final_name, keep=(staging_name,))
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("alter table {} add constraint {} primary key (as_of, user_id)").format(
                staging, sql.Identifier(f"{staging_name}_pkey")
            )
        )
        cur.execute(sql.SQL("analyze {}").format(staging))
    conn.commit()
    return users


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
