"""Benchmark: the Campaigns page's queries (plugins/recsys_campaigns/data.py) on nights of many users.

Writes NIGHTS campaign runs of USERS offers each (plus a 10% holdout, offer events for the sent
ones and 10 behaviour events per user, with SQL set operations), then times what one page load
asks for: the latest runs (v_campaign_runs), the selected run's outcomes and lift (one pass over
v_campaign_summary), its scheduled-time histogram (v_campaign_schedule) and the leaderboard.

    python bench/bench_campaigns_page.py                       # 7 nights x 100k users
    python bench/bench_campaigns_page.py --users 20000 --nights 3

The server is RECSYS_BENCH_DATABASE_URL, else RECSYS_DATABASE_URL, else the embedded one; a scratch
database is created on it and dropped at the end (keep it with --keep).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time

import psycopg2
from _support import bench_server, scratch_database
from psycopg2 import sql

from recsys.config.settings import PROJECT_ROOT, load_settings
from recsys.db import connect
from recsys.db.migrate import migrate

FIRST_NIGHT = dt.date(2026, 11, 1)

FILL = """
insert into recsys.campaign_runs (run_id, campaign_date, state, counts, published_at)
values (%(run)s, %(day)s, 'published', jsonb_build_object(
    'users', %(users)s, 'offers', %(offers)s, 'holdout', %(users)s - %(offers)s,
    'channel', jsonb_build_object('email', %(offers)s / 3, 'sms', %(offers)s / 3, 'push', %(offers)s / 3),
    'skipped', jsonb_build_object('no_consent', 0)), now());

insert into recsys.campaign_offers (run_id, campaign_date, user_id, action_id, offer_type, offer_value,
    value_unit, channel, timing, scheduled_at, expires_at, status, body, propensity, is_exploration,
    features_as_of, segment)
select %(run)s, %(day)s, u, u %% 108, (array['discount', 'free_shipping', 'recommendation', 'bundle'])[1 + u %% 4],
    10, 'percent_off', (array['email', 'sms', 'push'])[1 + u %% 3],
    (array['immediate', 'delay_1hour', 'delay_6hours'])[1 + u %% 3],
    %(day)s::timestamptz + interval '6 hours' + (u %% 16) * interval '1 hour',
    %(day)s::timestamptz + interval '3 days', case when u %% 5 < 3 then 'sent' else 'scheduled' end,
    'body', 0.5, false, %(day)s, 'loyal'
from generate_series(1, %(users)s) as u
where u %% 10 <> 0;

insert into recsys.campaign_holdout (run_id, campaign_date, user_id, action_id, offer_type, offer_value,
    channel, timing, features_as_of, segment)
select %(run)s, %(day)s, u, 0, 'discount', 10, 'email', 'immediate', %(day)s, 'loyal'
from generate_series(10, %(users)s, 10) as u;

insert into recsys.offer_events (offer_id, event, event_at, revenue)
select o.offer_id, e.event, o.scheduled_at + interval '1 hour', case when e.event = 'converted' then 25 end
from recsys.campaign_offers as o
cross join (values ('delivered', 1), ('opened', 3), ('clicked', 7), ('converted', 19)) as e (event, every)
where o.run_id = %(run)s and o.status = 'sent' and o.user_id %% e.every = 0;
"""

EVENTS = """
insert into recsys.behavior_events (event_id, user_id, session_id, event_at, action, amount, load_id)
select 'e' || g, 1 + (g * 7919) %% %(users)s, 's' || g,
    %(start)s::timestamptz + (g %% (%(minutes)s)) * interval '1 minute',
    case when g %% 10 = 0 then 'purchase' else 'view' end, case when g %% 10 = 0 then 20 end, 0
from generate_series(1::bigint, %(events)s::bigint) as g;
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--nights", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3, help="timed page loads (the best is reported)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()

    sys.path.insert(0, str(PROJECT_ROOT / "plugins"))
    from recsys_campaigns import data

    with scratch_database(bench_server(), "recsys_bench_page", keep=args.keep) as url:
        started = time.perf_counter()
        with connect(url) as conn:
            migrate(conn, load_settings(env={}, database_url=url))
            with conn.cursor() as cur:
                last = FIRST_NIGHT + dt.timedelta(days=args.nights)
                cur.execute("select recsys.ensure_event_partitions(%s, %s)", (FIRST_NIGHT, last))
                for k in range(args.nights):
                    day = FIRST_NIGHT + dt.timedelta(days=k)
                    cur.execute(
                        sql.SQL(
                            "create table {} partition of recsys.campaign_offers for values from (%s) to (%s)"
                        ).format(sql.Identifier("recsys", f"campaign_offers_{day:%Y%m%d}")),
                        (day, day + dt.timedelta(days=1)),
                    )
                    offers = args.users - args.users // 10
                    cur.execute(FILL, {"run": f"bench__{day}", "day": day, "users": args.users, "offers": offers})
                cur.execute(
                    EVENTS,
                    {
                        "users": args.users,
                        "start": FIRST_NIGHT,
                        "minutes": args.nights * 24 * 60,
                        "events": 10 * args.users,
                    },
                )
                cur.execute("analyze")
        print(f"wrote {args.nights} nights x {args.users:,} users in {time.perf_counter() - started:.1f} s")

        os.environ["RECSYS_DATABASE_URL"] = url
        timings: dict[str, list[float]] = {"latest_runs": [], "run (summary)": [], "schedule": [], "leaderboard": []}
        for _ in range(args.repeat):
            with psycopg2.connect(url) as conn:
                conn.set_session(readonly=True)
                with conn.cursor() as cur:
                    cur.execute("set jit = off")
                for label, call in [
                    ("latest_runs", lambda c: data.latest_runs(c, 10)),
                    ("run (summary)", lambda c: data.run(c, f"bench__{last - dt.timedelta(days=1)}")),
                    ("schedule", lambda c: data.schedule(c, f"bench__{last - dt.timedelta(days=1)}")),
                    ("leaderboard", lambda c: data.leaderboard(c, 20)),
                ]:
                    t = time.perf_counter()
                    result = call(conn)
                    timings[label].append(time.perf_counter() - t)
                    if label == "run (summary)":
                        assert result is not None and result["outcomes"] is not None
            conn.close()
        total = sum(min(v) for v in timings.values())
        for label, values in timings.items():
            print(f"{label:>15}: {min(values) * 1000:8.1f} ms (best of {args.repeat})")
        print(f"{'page':>15}: {total * 1000:8.1f} ms ({args.users:,} users per night, {args.nights} nights)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
