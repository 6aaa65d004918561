"""Benchmark of `recsys features`: how long one date takes on 1M users and 10M events.

A script, not a test. It creates a scratch database with a unique name on the server, migrates it,
generates the events and offers inside PostgreSQL with `generate_series` (nothing goes through
Python), times `build_features` for one date (a first build, then a rebuild that replaces it) and
prints the seconds and this process's peak RSS. The database is dropped at the end. The server is
--url, by default RECSYS_BENCH_DATABASE_URL, else the local server at 127.0.0.1:5432.

    .venv/bin/python bench/bench_features.py [--url postgresql://postgres@127.0.0.1:5432/postgres]
        [--users 1000000] [--events 10000000] [--offers 2000000] [--history-days 400]
        [--workers N] [--keep] [--compare-sql DIR | --compare-workers N [--rounds R]]

--workers sets `feature_workers` (the connections the build's shards run on; default the settings').
With --compare-sql, the same database is built alternately with the SQL of DIR (the `sql` folder of
another checkout with the same build steps: "before") and with this one ("this"); with
--compare-workers, with one worker ("before") and with N ("this"). R rounds, then the two results
are compared row by row: IDENTICAL (every column exactly, `except all` both ways), or each column
that differs with how many rows and its largest relative difference. Each step's plan:
PGOPTIONS="-c session_preload_libraries=auto_explain -c auto_explain.log_min_duration=1000".

The bars: a rebuild of 1M users / 10M events in at most 60 s on a 2-core machine; issue 14 asks for
15 s.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import time
from datetime import date, timedelta
from pathlib import Path

from _support import LOCAL_SERVER, bench_server, machine_speed, scratch_database
from psycopg2 import sql

from recsys.config.settings import load_settings
from recsys.data.features import TABLE_COLUMNS, build_features
from recsys.db import connect, fetch_all, fetch_value
from recsys.db.migrate import migrate

AS_OF = date(2026, 11, 1)
HISTORY_DAYS = 400  # default spread: longer than the recency cap, so the scan has partitions to prune

GENERATE_EVENTS = """
insert into recsys.behavior_events (
    event_id, user_id, session_id, event_at, action, product_category, channel, amount,
    discount_used, free_shipping_used, load_id
)
select
    'e' || g,
    u.user_id,
    u.user_id || '-' || s.session_no,
    s.session_at + (random() * interval '40 minutes'),
    a.action,
    (array['shoes', 'bags', 'toys', 'books', 'garden', 'kitchen', 'beauty', 'sports', 'music',
           'games', 'tools', 'pets'])[1 + floor(random() * 12)::int],
    s.channel,
    case when a.action = 'purchase' then round((5 + random() * 195)::numeric, 2) end,
    case when a.action = 'purchase' then random() < 0.3 end,
    case when a.action = 'purchase' then random() < 0.4 end,
    0
from generate_series(1, %(events)s) as g
cross join lateral (select 1 + (g - 1) %% %(users)s as user_id, (g - 1) / %(users)s as event_no) as u
cross join lateral (
    select
        u.event_no / 3 as session_no,
        %(end_at)s::timestamptz - (hashint8(u.user_id * 100 + u.event_no / 3) & 65535) / 65535.0
            * %(history_days)s * interval '1 day' as session_at,
        (array['email', 'sms', 'push', 'web', 'app', null])[1 + (hashint8(u.user_id * 7 + u.event_no / 3) & 7) %% 6]
            as channel
) as s
cross join lateral (
    -- "g * 0" makes the subquery correlated, so random() is drawn per event, not once
    select case when r < 0.7 then 'view' when r < 0.9 then 'add_to_cart' else 'purchase' end as action
    from (select random() + g * 0 as r) as x
) as a
"""

GENERATE_OFFERS = """
insert into recsys.offer_history (
    offer_id, user_id, sent_at, offer_type, offer_value, channel, timing, propensity,
    opened, clicked, converted, revenue, load_id
)
select
    'o' || g,
    1 + floor(random() * %(users)s)::bigint,
    %(end_at)s::timestamptz - random() * %(history_days)s * interval '1 day',
    'discount', 10, (array['email', 'sms', 'push'])[1 + floor(random() * 3)::int], 'immediate', 0.25,
    random() < 0.3,
    case when random() < 0.1 then null else random() < 0.1 end,
    random() < 0.05,
    0,
    0
from generate_series(1, %(offers)s) as g
"""


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url", default=bench_server(LOCAL_SERVER), help="the server (default: RECSYS_BENCH_DATABASE_URL, else local)"
    )
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--offers", type=int, default=2_000_000)
    parser.add_argument(
        "--history-days",
        type=int,
        default=HISTORY_DAYS,
        help=f"events spread over this many days before as_of (default {HISTORY_DAYS}; 90 puts all in the window)",
    )
    parser.add_argument("--workers", type=int, help="feature_workers for the builds (default: the settings')")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database (prints its name)")
    parser.add_argument(
        "--compare-sql", type=Path, help="also build with the feature SQL of this sql folder, alternately"
    )
    parser.add_argument("--compare-workers", type=int, help="build with one worker and with this many, alternately")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of the comparison (default 1)")
    args = parser.parse_args()

    print(machine_speed(args.url), flush=True)
    with scratch_database(args.url, "recsys_bench_features", keep=args.keep) as url:
        settings = load_settings(env={}, database_url=url)
        if args.workers is not None:
            settings = dataclasses.replace(settings, feature_workers=args.workers)
        with connect(url) as conn:
            migrate(conn, settings)
        gen = {
            "users": args.users,
            "events": args.events,
            "offers": args.offers,
            "history_days": args.history_days,
            "end_at": f"{AS_OF.isoformat()} 00:00:00+00",
        }
        t0 = time.perf_counter()
        with connect(url) as conn, conn.cursor() as cur:
            cur.execute(
                "select recsys.ensure_event_partitions(%s, %s)",
                (AS_OF - timedelta(days=args.history_days + 1), AS_OF),
            )
            cur.execute(GENERATE_EVENTS, gen)
            cur.execute(GENERATE_OFFERS, gen)
        with connect(url, autocommit=True) as conn, conn.cursor() as cur:
            # A nightly database has had its hint bits set and statistics gathered long before.
            cur.execute("vacuum (analyze) recsys.behavior_events")
            cur.execute("vacuum (analyze) recsys.offer_history")
            events = fetch_value(conn, "select count(*) from recsys.behavior_events")
            size = fetch_value(
                conn,
                "select pg_size_pretty(sum(pg_total_relation_size(inhrelid))) "
                "from pg_inherits where inhparent = 'recsys.behavior_events'::regclass",
            )
        print(
            f"generated {events:,} events ({size} with indexes) and {args.offers:,} offers "
            f"for {args.users:,} users in {time.perf_counter() - t0:.0f} s"
        )

        with connect(url) as conn:
            if args.compare_sql is not None:
                before = dataclasses.replace(settings, sql_dir=args.compare_sql)
                compare(conn, {"before": before, "this": settings}, args)
            elif args.compare_workers is not None:
                one, many = (dataclasses.replace(settings, feature_workers=n) for n in (1, args.compare_workers))
                compare(conn, {"before": one, "this": many}, args)
            else:
                print(f"feature_workers {settings.feature_workers}")
                for label in ("build", "rebuild"):
                    result = build_features(conn, settings, AS_OF)
                    print(f"{label}: {result.describe()} (peak RSS of this process {peak_rss_mb():.0f} MB)")
    return 0


def compare(conn, variants: dict, args: argparse.Namespace) -> None:
    """Build alternately with each variant's SQL, keep each one's last rows, and compare them exactly."""
    seconds: dict[str, list[float]] = {label: [] for label in variants}
    for round_no in range(1, args.rounds + 1):
        for label, settings in variants.items():
            result = build_features(conn, settings, AS_OF)
            seconds[label].append(result.seconds)
            print(f"round {round_no}, {label}: {result.describe()} (load {os.getloadavg()[0]:.1f})", flush=True)
            with conn.cursor() as cur:
                cur.execute(sql.SQL("drop table if exists {}").format(sql.Identifier(f"rows_{label}")))
                cur.execute(
                    sql.SQL("create table {} as select * from recsys.user_features where as_of = %s").format(
                        sql.Identifier(f"rows_{label}")
                    ),
                    (AS_OF,),
                )
            conn.commit()
    differ = [
        fetch_value(
            conn,
            sql.SQL("select count(*) from (select * from {} except all select * from {}) as d").format(
                sql.Identifier(f"rows_{a}"), sql.Identifier(f"rows_{b}")
            ),
        )
        for a, b in (("before", "this"), ("this", "before"))
    ]
    rows = fetch_value(conn, "select count(*) from rows_this")
    verdict = "IDENTICAL" if differ == [0, 0] else f"DIFFERENT: {differ[0]:,} rows only before, {differ[1]:,} only this"
    print(f"{rows:,} rows: {verdict}")
    if differ != [0, 0]:
        for column in TABLE_COLUMNS[2:]:
            c = sql.Identifier(column)
            n, worst = fetch_all(
                conn,
                sql.SQL(
                    "select count(*) filter (where b.{c} is distinct from t.{c}) as n, max(case when b.{c} <> t.{c} "
                    "then abs(b.{c}::float8 - t.{c}::float8) / greatest(abs(b.{c}::float8), 1e-300) end) as worst "
                    "from rows_before as b full join rows_this as t using (user_id)"
                ).format(c=c)
                if column not in ("top_category", "segment")
                else sql.SQL(
                    "select count(*) filter (where b.{c} is distinct from t.{c}) as n, null as worst "
                    "from rows_before as b full join rows_this as t using (user_id)"
                ).format(c=c),
            )[0].values()
            if n:
                print(
                    f"  {column}: {n:,} rows differ" + (f", largest relative difference {worst:.1e}" if worst else "")
                )
    for label, values in seconds.items():
        print(
            f"{label}: "
            + ", ".join(f"{v:.1f} s" for v in values)
            + f" (median {sorted(values)[len(values) // 2]:.1f} s)"
        )


if __name__ == "__main__":
    raise SystemExit(main())
