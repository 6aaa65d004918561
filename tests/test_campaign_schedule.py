"""scheduled_at (contract section 0) as recsys.offer_schedule computes it: time zones east and west of
UTC, the 2026 DST change days, quiet hours on both sides of midnight; and publish re-timing."""

from __future__ import annotations

import datetime as dt

import pytest

from recsys.db import connect, fetch_value

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
