"""The best_hour timing against the configured send time, on the synthetic shop's hidden truth: the
same offers, once at the hour `recsys.offer_schedule` gives them with best_hour and once at 09:00
local (the immediate timing), each valued under the truth at its scheduled local hour.

A script, not a test. Per link between session and reading hours (strong: sessions centre on the
reading hour, the seed's shop; weakened: a share of the users' sessions centre 8 hours away,
`SynthParams.session_hour_decoupled_share`), it generates a shop with `recsys.benchmark.synth` (or
reuses the folder), loads it into a scratch database, builds the features as of the end date, and:

1. chooses each user's offer: the truth's best (offer type, value, channel) at 09:00 among the
   channels the user consents to (users without any consent are left out);
2. schedules it in SQL, the one definition scoring and publishing use, for a run of the end date
   published at 01:00 UTC (the truth's publish hour) with the packaged rules: best_hour at
   `recsys.best_send_time` of the user's features (`best_hour_min_certainty`, `best_hour_default`),
   and the immediate timing at the configured send time, both with the channel's quiet hours;
3. values both under the truth at their local send hours and reports the mean paired difference
   per user with its 95% interval (normal, over users), the relative gain, and the ceiling: the
   same offers at each user's true reading hour.

The server is --url, by default RECSYS_BENCH_DATABASE_URL, else the local server at 127.0.0.1:5432.

    .venv/bin/python bench/bench_best_hour.py [--users 4000] [--days 60] [--seed 1] [--decoupled 0.3]
        [--min-certainty C]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt

import numpy as np
from _support import LOCAL_SERVER, bench_server, paired, scratch_database

from recsys.benchmark.synth.generate import generate_data, truth_path_for
from recsys.benchmark.synth.truth import GroundTruth
from recsys.campaign import load_rules
from recsys.config.settings import PROJECT_ROOT, load_settings
from recsys.data.extract import extract_path
from recsys.data.features import build_features
from recsys.db import connect, fetch_all
from recsys.db.migrate import migrate

END = dt.date(2026, 11, 1)

# both arms in one statement: per (user, channel) the schedule of best_hour and of immediate, and
# the local hour each lands on
SCHEDULE = """
with chosen as (
    select * from unnest(%(users)s::bigint[], %(channels)s::text[]) as c (user_id, channel)
),

quiet as (
    select * from unnest(%(quiet_channels)s::text[], %(quiet_start)s::time[], %(quiet_end)s::time[])
        as q (channel, quiet_start, quiet_end)
),

zoned as (
    select
        c.user_id,
        c.channel,
        coalesce(z.name, 'UTC') as tz,
        recsys.best_send_time(
            f.preferred_local_hour, f.preferred_hour_certainty, %(min_certainty)s, %(best_default)s
        ) as best_time,
        f.preferred_hour_certainty >= %(min_certainty)s as learned
    from chosen as c
    left join recsys.users as u on c.user_id = u.user_id
    left join (select distinct name from pg_timezone_names) as z on u.timezone = z.name
    left join recsys.user_features as f on f.as_of = %(day)s and c.user_id = f.user_id
)

select
    x.user_id,
    coalesce(x.learned, false) as learned,
    extract(epoch from b.scheduled_at at time zone x.tz - %(day)s::timestamp) / 3600 as best_hour,
    extract(epoch from n.scheduled_at at time zone x.tz - %(day)s::timestamp) / 3600 as nine_hour
from zoned as x
left join quiet as q on x.channel = q.channel
cross join lateral recsys.offer_schedule(
    %(day)s, x.tz, x.best_time, %(publish_at)s, 0, q.quiet_start, q.quiet_end, true, %(validity)s
) as b
cross join lateral recsys.offer_schedule(
    %(day)s, x.tz, %(send_time)s, %(publish_at)s, 0, q.quiet_start, q.quiet_end
) as n
order by x.user_id
"""


def one_link(
    server: str, seed: int, users: int, days: int, decoupled: float, min_certainty: float | None
) -> dict[str, float]:
    tag = f"u{users}_d{days}_s{seed}" + (f"_x{decoupled:g}" if decoupled else "")
    data = PROJECT_ROOT / "data" / "bench" / f"best_hour_{tag}"
    if not (data / "events.csv").exists():
        generate_data(users=users, days=days, seed=seed, out=data, end_date=END, session_hour_decoupled_share=decoupled)
    truth = GroundTruth.load(truth_path_for(data))
    rules = load_rules()
    if min_certainty is not None:
        rules = dataclasses.replace(rules, best_hour_min_certainty=min_certainty)
    cat = truth.catalog
    # the truth's best offer at 09:00 per user, among the immediate actions on consented channels
    immediate = np.array([a.timing == "immediate" for a in cat.actions])
    values = truth.value_matrix(night=END)  # consent respected: a channel without it is worth 0
    reachable = truth.consent[:, truth.action_channel] & immediate
    has = reachable.any(axis=1)
    choice = np.where(reachable, values, -np.inf).argmax(axis=1)
    rows = np.flatnonzero(has)
    action = choice[rows]
    channels = [cat.actions[a].channel for a in action]
    quiet = {ch: rules.quiet_hours.get(ch, (None, None)) for ch in cat.channels}
    with scratch_database(server, "recsys_bench_best_hour") as url:
        settings = load_settings(env={}, database_url=url)
        with connect(url) as conn:
            migrate(conn, settings)
            extract_path(conn, settings, data, reference_at=dt.datetime.combine(END, dt.time(), dt.UTC))
            build_features(conn, settings, END)
            got = fetch_all(
                conn,
                SCHEDULE,
                {
                    "users": [int(u) for u in truth.user_ids[rows]],
                    "channels": channels,
                    "quiet_channels": list(quiet),
                    "quiet_start": [q[0] for q in quiet.values()],
                    "quiet_end": [q[1] for q in quiet.values()],
                    "day": END,
                    "publish_at": dt.datetime.combine(END, dt.time(), dt.UTC)
                    + dt.timedelta(hours=truth.params.publish_hour_utc),
                    "send_time": rules.send_time,
                    "validity": rules.validity_hours,
                    "min_certainty": rules.best_hour_min_certainty,
                    "best_default": rules.best_hour_default,
                },
            )
    ids = np.array([r["user_id"] for r in got], dtype=np.int64)
    order = np.argsort(truth.user_ids[rows], kind="stable")
    assert np.array_equal(ids, truth.user_ids[rows][order])
    idx, action = rows[order], action[order]
    best_hour = np.array([float(r["best_hour"]) for r in got])
    nine_hour = np.array([float(r["nine_hour"]) for r in got])
    learned = np.array([bool(r["learned"]) for r in got])
    penalty = truth.params.unsubscribe_penalty

    def value(hours: np.ndarray) -> np.ndarray:
        return truth.response(idx, action, night=END, send_hour=hours).expected_value(penalty)

    v_best, v_nine = value(best_hour), value(nine_hour)
    v_true = value(truth.traits.preferred_hour[idx])
    m, lo, hi = paired(v_best - v_nine)
    return {
        "users": len(idx),
        "learned": float(learned.mean()),
        "nine": float(v_nine.mean()),
        "best": float(v_best.mean()),
        "diff": m,
        "lo": lo,
        "hi": hi,
        "gain": m / float(v_nine.mean()),
        "ceiling": float(v_true.mean()),
        "learned_diff": float((v_best - v_nine)[learned].mean()) if learned.any() else float("nan"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url", default=bench_server(LOCAL_SERVER), help="the server (default: RECSYS_BENCH_DATABASE_URL, else local)"
    )
    parser.add_argument("--users", type=int, default=4_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--decoupled", type=float, default=0.3, help="the weakened link's decoupled share")
    parser.add_argument("--min-certainty", type=float, default=None, help="default: the packaged rules'")
    args = parser.parse_args()
    certainty = args.min_certainty if args.min_certainty is not None else load_rules().best_hour_min_certainty
    print(
        f"{args.users:,} users x {args.days} days, seed {args.seed}, the run of {END} published at 01:00 UTC, "
        f"best_hour_min_certainty {certainty:g}"
    )
    print(
        f"  {'link':<26} {'users':>6} {'learned':>8} {'09:00':>8} {'best_hour':>9} "
        f"{'diff':>8} {'95% CI':>19} {'gain':>7} {'ceiling':>8}"
    )
    for name, share in (("strong", 0.0), (f"weakened ({args.decoupled:g} decoupled)", args.decoupled)):
        r = one_link(args.url, args.seed, args.users, args.days, share, args.min_certainty)
        print(
            f"  {name:<26} {r['users']:>6,} {r['learned']:>8.1%} {r['nine']:>8.4f} {r['best']:>9.4f} "
            f"{r['diff']:>+8.4f} [{r['lo']:>+8.4f}, {r['hi']:>+8.4f}] {r['gain']:>+7.1%} {r['ceiling']:>8.4f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
