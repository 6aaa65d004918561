"""scheduled_at (contract section 0) as recsys.offer_schedule computes it: time zones east and west of
UTC, the 2026 DST change days, quiet hours on both sides of midnight; and publish re-timing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from psycopg2.extras import Json, execute_values

from recsys.db import Connection, connect, database_url, fetch_all, fetch_value

Z = dt.UTC
QUIET = (dt.time(21, 0), dt.time(8, 0))
EARLY = dt.datetime(2000, 1, 1, tzinfo=Z)  # a publish moment before any send time


def _at(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=Z)


CASES = [
    # (campaign date, time zone, send time, publish at, delay minutes, quiet window, expected UTC)
    pytest.param(dt.date(2026, 6, 10), "Asia/Tokyo", dt.time(9), EARLY, 0, None, _at(2026, 6, 10, 0), id="tokyo"),
    pytest.param(
        dt.date(2026, 6, 10), "America/Los_Angeles", dt.time(9), EARLY, 360, QUIET, _at(2026, 6, 10, 22), id="la-6h"
    ),
    pytest.param(
        dt.date(2026, 6, 10), "Australia/Sydney", dt.time(9), EARLY, 60, QUIET, _at(2026, 6, 10, 0), id="sydney-1h"
    ),
    # published late: release is the publish moment, 17:30 local + 6 h = 23:30, quiet -> 08:00 next day
    pytest.param(
        dt.date(2026, 6, 10),
        "America/Los_Angeles",
        dt.time(9),
        _at(2026, 6, 11, 0, 30),
        360,
        QUIET,
        _at(2026, 6, 11, 15),
        id="la-late-evening-quiet",
    ),
    pytest.param(
        dt.date(2026, 6, 10),
        "Australia/Sydney",
        dt.time(9),
        _at(2026, 6, 10, 12, 30),
        0,
        QUIET,
        _at(2026, 6, 10, 22),
        id="sydney-late-evening-quiet",
    ),
    # the morning side of a window across midnight: 06:00 local moves to 08:00 the same day
    pytest.param(
        dt.date(2026, 6, 10), "Asia/Tokyo", dt.time(6), EARLY, 0, QUIET, _at(2026, 6, 9, 23), id="tokyo-morning-quiet"
    ),
    # 19:00 + 6 h crosses midnight into the quiet morning: 08:00 next day
    pytest.param(
        dt.date(2026, 6, 10),
        "Asia/Tokyo",
        dt.time(19),
        EARLY,
        360,
        QUIET,
        _at(2026, 6, 10, 23),
        id="tokyo-past-midnight",
    ),
    # the same without quiet hours (email): 01:00 local
    pytest.param(
        dt.date(2026, 6, 10), "Asia/Tokyo", dt.time(19), EARLY, 360, None, _at(2026, 6, 10, 16), id="tokyo-no-quiet"
    ),
    # a window within one day (12:00-14:00)
    pytest.param(
        dt.date(2026, 6, 10),
        "UTC",
        dt.time(13),
        EARLY,
        0,
        (dt.time(12), dt.time(14)),
        _at(2026, 6, 10, 14),
        id="midday-window",
    ),
    pytest.param(
        dt.date(2026, 6, 10),
        "UTC",
        dt.time(11),
        EARLY,
        0,
        (dt.time(12), dt.time(14)),
        _at(2026, 6, 10, 11),
        id="before",
    ),
    # DST change days: 09:00 local is in the new offset
    pytest.param(
        dt.date(2026, 3, 7), "America/Los_Angeles", dt.time(9), EARLY, 0, None, _at(2026, 3, 7, 17), id="us-pst"
    ),
    pytest.param(
        dt.date(2026, 3, 8), "America/Los_Angeles", dt.time(9), EARLY, 0, None, _at(2026, 3, 8, 16), id="us-dst"
    ),
    pytest.param(dt.date(2026, 3, 29), "Europe/Berlin", dt.time(9), EARLY, 0, None, _at(2026, 3, 29, 7), id="eu-dst"),
    pytest.param(
        dt.date(2026, 11, 1), "America/Los_Angeles", dt.time(9), EARLY, 0, None, _at(2026, 11, 1, 17), id="us-std"
    ),
    pytest.param(dt.date(2026, 10, 25), "Europe/Berlin", dt.time(9), EARLY, 0, None, _at(2026, 10, 25, 8), id="eu-std"),
    # quiet hours across the change night: 21:30 PST on Mar 7 -> 08:00 PDT on Mar 8
    pytest.param(
        dt.date(2026, 3, 7),
        "America/Los_Angeles",
        dt.time(9),
        _at(2026, 3, 8, 5, 30),
        0,
        QUIET,
        _at(2026, 3, 8, 15),
        id="us-dst-night",
    ),
    # 22:00 CEST on Oct 24 -> 08:00 CET on Oct 25
    pytest.param(
        dt.date(2026, 10, 24),
        "Europe/Berlin",
        dt.time(9),
        _at(2026, 10, 24, 20),
        0,
        QUIET,
        _at(2026, 10, 25, 7),
        id="eu-std-night",
    ),
    # a 1-hour delay over the spring-forward gap: 01:30 PST + 1 h = 03:30 PDT (10:30 UTC)
    pytest.param(
        dt.date(2026, 3, 8), "America/Los_Angeles", dt.time(1, 30), EARLY, 60, None, _at(2026, 3, 8, 10, 30), id="gap"
    ),
]


@pytest.mark.parametrize(("day", "tz", "send", "publish", "delay", "quiet", "expected"), CASES)
def test_offer_schedule(migrated_url: str, day, tz, send, publish, delay, quiet, expected) -> None:
    start, end = quiet or (None, None)
    with connect(migrated_url) as conn:
        got = fetch_value(
            conn,
            "select scheduled_at from recsys.offer_schedule(%s, %s, %s, %s, %s, %s, %s)",
            (day, tz, send, publish, delay, start, end),
        )
    assert got == expected


def test_times_outside_quiet_hours_are_left_alone(migrated_url: str) -> None:
    query = "select scheduled_at from recsys.offer_schedule('2026-06-10', 'UTC', %s, %s, 0, %s, %s)"
    with connect(migrated_url) as conn:
        for send, expected in (
            (dt.time(20, 59), _at(2026, 6, 10, 20, 59)),
            (dt.time(8, 0), _at(2026, 6, 10, 8)),
            (dt.time(7, 59), _at(2026, 6, 10, 8)),
            (dt.time(21, 0), _at(2026, 6, 11, 8)),
        ):
            assert fetch_value(conn, query, (send, EARLY, *QUIET)) == expected


# Publishing re-times by joining one schedule row per (time zone, timing, channel); the reference here
# is the per-offer path: recsys.offer_schedule called for every offer, as publishing did before.
PUBLISH_ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/Los_Angeles",
    "America/New_York",
    "Pacific/Honolulu",
    "Asia/Kolkata",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Pacific/Kiritimati",  # UTC+14: the first 09:00 of any date
    "Mars/Olympus_Mons",  # a zone PostgreSQL does not know: scheduled in UTC
    None,  # no users row: scheduled in UTC
]
DELAYS = {"immediate": 0, "delay_1hour": 60, "delay_6hours": 360}
QUIET_HOURS = {"sms": ("21:00", "08:00"), "push": ("22:30", "07:00")}
RUN_RULES = {
    "send_time": "09:00",
    "validity_hours": 24,
    "quiet_hours": {ch: {"start": s, "end": e} for ch, (s, e) in QUIET_HOURS.items()},
    "timing_delay_minutes": DELAYS,
}
# offer_schedule for each offer of the given campaign_offers rows (x), in its user's zone (UTC when
# PostgreSQL does not know it or the user has no row), at the moment %(at)s
PER_OFFER = """
with timing as (select * from unnest(%(timings)s::text[], %(delays)s::integer[]) as t (timing, delay_minutes)),
quiet as (
    select * from unnest(%(channels)s::text[], %(quiet_start)s::time[], %(quiet_end)s::time[])
        as q (channel, quiet_start, quiet_end)
),
known as (select distinct name from pg_timezone_names),
per_offer as (
    select
        x.*,
        sch.scheduled_at as per_offer,
        recsys.offer_release(x.campaign_date, coalesce(k.name, 'UTC'), '09:00', %(at)s)
        > recsys.offer_release(x.campaign_date, coalesce(k.name, 'UTC'), '09:00', '-infinity') as released
    from ({offers}) as x
    inner join timing as t on x.timing = t.timing
    left join quiet as q on x.channel = q.channel
    left join recsys.users as u on x.user_id = u.user_id
    left join known as k on u.timezone = k.name
    cross join lateral recsys.offer_schedule(
        x.campaign_date, coalesce(k.name, 'UTC'), '09:00', %(at)s, t.delay_minutes, q.quiet_start, q.quiet_end
    ) as sch
)
"""
NEW_OFFERS = """
select %(run)s as run_id, %(day)s::date as campaign_date, n.user_id, n.timing, n.channel, n.status
from unnest(%(users)s::bigint[], %(timing)s::text[], %(channel)s::text[], %(status)s::text[])
    as n (user_id, timing, channel, status)
"""
INSERT = """
insert into recsys.campaign_offers (run_id, campaign_date, user_id, action_id, offer_type, offer_value, value_unit,
    channel, timing, scheduled_at, expires_at, status, body, propensity, is_exploration, features_as_of)
select run_id, campaign_date, user_id, 0, 'discount', 10, 'percent', channel, timing, per_offer,
    per_offer + interval '24 hours', status, 'b', 1, false, campaign_date
from per_offer
"""
EXPECTED = """
select offer_id, run_id, campaign_date, user_id, timing, channel, status,
    case when released then per_offer else scheduled_at end as scheduled_at,
    case when released then per_offer + interval '24 hours' else expires_at end as expires_at
from per_offer
"""


def _schedule_params(at: dt.datetime) -> dict:
    channels = ["email", *QUIET_HOURS]
    return {
        "timings": list(DELAYS),
        "delays": list(DELAYS.values()),
        "channels": channels,
        "quiet_start": [QUIET_HOURS.get(ch, (None, None))[0] for ch in channels],
        "quiet_end": [QUIET_HOURS.get(ch, (None, None))[1] for ch in channels],
        "at": at,
    }


def _add_run(conn: Connection, run_id: str, day: dt.date, scored_at: dt.datetime, first_user: int, zones: list) -> None:
    """A scored run of `day`: per (zone, timing, channel) a scheduled offer, and a claimed and a sent
    one, scheduled as scoring at `scored_at` writes them; its users numbered from first_user."""
    offers = [
        (tz, timing, channel, status)
        for tz in zones
        for timing in DELAYS
        for channel in ("email", *QUIET_HOURS)
        for status in ("scheduled", "claimed", "sent")
    ]
    users = list(range(first_user, first_user + len(offers)))
    with conn.cursor() as cur:
        cur.execute("select recsys.ensure_campaign_partition(%s)", (day,))
        execute_values(
            cur,
            "insert into recsys.users (user_id, timezone, load_id) values %s",
            [(u, o[0], 1) for u, o in zip(users, offers, strict=True) if o[0] is not None],
        )
        cur.execute(
            "insert into recsys.campaign_runs (run_id, campaign_date, shard_count, settings) values (%s, %s, 1, %s)",
            (run_id, day, Json(RUN_RULES)),
        )
        cur.execute(
            "insert into recsys.campaign_run_shards (run_id, shard, shard_count, state) values (%s, 0, 1, 'done')",
            (run_id,),
        )
        params = {
            **_schedule_params(scored_at),
            "run": run_id,
            "day": day,
            "users": users,
            "timing": [o[1] for o in offers],
            "channel": [o[2] for o in offers],
            "status": [o[3] for o in offers],
        }
        cur.execute(PER_OFFER.format(offers=NEW_OFFERS) + INSERT, params)


def _publish(settings: Any, run_id: str, **kwargs: Any) -> dict[str, Any]:
    """`publish_run` in a transaction of its own, committed."""
    from recsys.campaign import publish_run

    with connect(database_url(settings)) as conn:
        return publish_run(conn, settings, run_id, **kwargs)


@pytest.fixture
def publish_db(migrated_url: str) -> Iterator[Connection]:
    """The test database without campaign runs, offers or users (autocommit)."""
    with connect(migrated_url, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.execute(
                "truncate recsys.campaign_offers, recsys.campaign_holdout, recsys.campaign_run_shards, "
                "recsys.campaign_runs, recsys.offer_events, recsys.users cascade"
            )
        yield conn


def _moment(day: dt.date, days: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day + dt.timedelta(days=days), dt.time(hour, minute), Z)


def _publish_as_per_offer(conn: Connection, settings, day: dt.date, at: dt.datetime, zones: list) -> int:
    """Publish run "pub" of `day` at `at` beside another run of the date and a run of the next date;
    asserts every row is what offer_schedule per offer gives; returns the offers re-timed."""
    scored = at - dt.timedelta(minutes=50)
    _add_run(conn, "pub", day, scored, 1, zones)
    _add_run(conn, "other", day, scored, 10_001, zones)  # a run of the same date, not published
    _add_run(conn, "next", day + dt.timedelta(days=1), scored, 20_001, zones)  # the next date
    everything = (
        "select offer_id, run_id, campaign_date, user_id, timing, channel, status, scheduled_at, expires_at "
        "from recsys.campaign_offers"
    )
    before = {r["offer_id"]: r for r in fetch_all(conn, everything)}
    expected = {
        r["offer_id"]: r
        for r in fetch_all(conn, PER_OFFER.format(offers=everything) + EXPECTED, _schedule_params(at))
        if r["run_id"] == "pub" and r["status"] == "scheduled"
    }
    expected = {k: expected.get(k, v) for k, v in before.items()}  # other runs, dates and statuses: untouched
    changed = sum(expected[k]["scheduled_at"] != v["scheduled_at"] for k, v in before.items())

    result = _publish(settings, "pub", published_at=at)
    after = {r["offer_id"]: r for r in fetch_all(conn, everything)}
    assert after == expected  # same offer ids, same rows, the per-offer schedule where released
    assert result["retimed"] == changed

    # publishing again at the same moment (a cleared publish re-run) changes nothing
    with conn.cursor() as cur:
        cur.execute("update recsys.campaign_runs set state = 'scoring' where run_id = 'pub'")
    assert _publish(settings, "pub", published_at=at)["retimed"] == 0
    assert {r["offer_id"]: r for r in fetch_all(conn, everything)} == expected
    return changed


@pytest.mark.parametrize(
    ("day", "days", "hour", "minute"),
    [
        # before every zone's 09:00, Kiritimati's included: nothing to re-time
        pytest.param(dt.date(2026, 3, 8), -1, 2, 0, id="before-every-zone"),
        # the 02:00 UTC nightly: Kiritimati, Tokyo and Sydney released, Kolkata (03:30 UTC) not yet
        pytest.param(dt.date(2026, 3, 8), 0, 2, 0, id="nightly-us-dst-day"),
        # Los Angeles released on its first PDT morning (16:00 UTC); Tokyo and Sydney in quiet hours
        pytest.param(dt.date(2026, 3, 8), 0, 16, 30, id="us-dst-afternoon"),
        # Berlin released on its first CEST morning (07:00 UTC), UTC not yet
        pytest.param(dt.date(2026, 3, 29), 0, 7, 30, id="eu-dst-morning"),
        # UTC released: the unknown zone and the user without a row too
        pytest.param(dt.date(2026, 6, 10), 0, 9, 30, id="utc-released"),
        # evening on the EU change day: Berlin 21:30 CET, sms and push quiet hours
        pytest.param(dt.date(2026, 10, 25), 0, 20, 30, id="eu-std-evening-quiet"),
        # every zone released, the next morning UTC: Honolulu 19:00 and Los Angeles 21:00 PST (quiet)
        pytest.param(dt.date(2026, 11, 1), 1, 5, 0, id="us-std-every-zone"),
    ],
)
def test_publish_retimes_as_offer_schedule_per_offer_would(
    publish_db: Connection, settings, day: dt.date, days: int, hour: int, minute: int
) -> None:
    retimed = _publish_as_per_offer(publish_db, settings, day, _moment(day, days, hour, minute), PUBLISH_ZONES)
    assert (retimed > 0) == (days >= 0)  # the moments after some zone's release move offers


def test_publish_retimes_users_scheduled_in_utc_when_no_user_lives_in_utc(publish_db: Connection, settings) -> None:
    day = dt.date(2026, 6, 10)
    zones = [z for z in PUBLISH_ZONES if z != "UTC"]  # the unknown zone and the user without a row remain
    assert _publish_as_per_offer(publish_db, settings, day, _moment(day, 0, 9, 30), zones) > 0
