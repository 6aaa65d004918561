"""Tests of `recsys.data.features`: the feature query against an independent Python computation.

The reference below (`reference_features`) is written from the column definitions in the schema
and the feature query's comments, in plain Python over the rows the test inserted; it never runs
the SQL. Every built row and column is compared with it.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import random
import shutil
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import psycopg2.errors
import pytest
from psycopg2 import sql
from psycopg2.extras import execute_values

import recsys.data.feature_steps as feature_steps
import recsys.data.features as features_module
from recsys.config.settings import Settings
from recsys.data.features import (
    FEATURE_COLUMNS,
    SEGMENTS,
    TABLE_COLUMNS,
    FeatureBuild,
    build_feature_range,
    build_features,
    drop_old_features,
    feature_partitions,
    feature_query,
    feature_summary,
    query_params,
)
from recsys.db import Connection, fetch_all, fetch_value, with_database
from recsys.errors import RecsysError

AS_OF = date(2026, 6, 15)
MIDNIGHT = datetime(2026, 6, 15, tzinfo=UTC)
US = timedelta(microseconds=1)
CHANNELS = ("email", "sms", "push", "web", "app", None)
CATEGORIES = ("books", "Books", "toys", "garden", "Ünïcode", None)
# the date, whole-number and text columns, compared exactly; every other feature is a float
EXACT_COLUMNS = (
    "as_of", "user_id", "frequency_sessions", "purchase_count", "offers_last_7d", "r_score", "f_score", "m_score",
    "top_category", "segment",
)  # fmt: skip
FLOAT_COLUMNS = {c for c in FEATURE_COLUMNS if c not in EXACT_COLUMNS}


@dataclasses.dataclass
class Event:
    user_id: int
    session_id: str
    event_at: datetime
    action: str
    product_category: str | None = None
    channel: str | None = None
    amount: Decimal | None = None
    discount_used: bool | None = None
    free_shipping_used: bool | None = None


@dataclasses.dataclass
class Offer:
    user_id: int
    sent_at: datetime
    channel: str
    clicked: bool | None


# Database helpers -------------------------------------------------------------------------------

_ids = itertools.count()  # event and offer ids, unique across the session


@pytest.fixture
def fdb(db: Connection) -> Connection:
    """The test database with no user_features partitions left by earlier tests."""
    with db.cursor() as cur:
        for name in feature_partitions(db):
            cur.execute(sql.SQL("drop table {}").format(sql.Identifier("recsys", name)))
    db.commit()
    return db


def insert_events(conn: Connection, events: list[Event]) -> None:
    with conn.cursor() as cur:
        times = [e.event_at for e in events]
        cur.execute("select recsys.ensure_event_partitions(%s, %s)", (min(times), max(times)))
        execute_values(
            cur,
            "insert into recsys.behavior_events (event_id, user_id, session_id, event_at, action, "
            "product_category, channel, amount, discount_used, free_shipping_used, load_id) values %s",
            [
                (
                    f"ev{next(_ids)}",
                    e.user_id,
                    e.session_id,
                    e.event_at,
                    e.action,
                    e.product_category,
                    e.channel,
                    e.amount,
                    e.discount_used,
                    e.free_shipping_used,
                    0,
                )
                for e in events
            ],
        )
    conn.commit()


def insert_offers(conn: Connection, offers: list[Offer]) -> None:
    with conn.cursor() as cur:
        execute_values(
            cur,
            "insert into recsys.offer_history (offer_id, user_id, sent_at, offer_type, offer_value, "
            "channel, timing, clicked, load_id) values %s",
            [
                (f"of{next(_ids)}", o.user_id, o.sent_at, "discount", 10, o.channel, "immediate", o.clicked, 0)
                for o in offers
            ],
        )
    conn.commit()


def clear_inputs(conn: Connection) -> None:
    with conn.cursor() as cur:
        cur.execute("truncate recsys.behavior_events, recsys.offer_history")
    conn.commit()


def step_tables(conn: Connection) -> list[str]:
    """The tables of a build of AS_OF other than its partition (steps, staging), left behind in
    `recsys` or in this session's temporary schema (the steps of a one-connection build)."""
    rows = fetch_all(
        conn,
        "select tablename from pg_tables "
        "where (schemaname = 'recsys' or schemaname::regnamespace = pg_my_temp_schema()) "
        "and tablename like 'user_features\\_20260615\\_%'",
    )
    conn.commit()
    return sorted(r["tablename"] for r in rows)


def stored(conn: Connection, as_of: date) -> dict[int, dict[str, object]]:
    rows = fetch_all(conn, "select * from recsys.user_features where as_of = %s", (as_of,))
    return {r["user_id"]: r for r in rows}


# The reference ----------------------------------------------------------------------------------


def days_between(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds() / 86400


def ntile5(ordered_ids: list[int]) -> dict[int, int]:
    """PostgreSQL's ntile(5) over rows in this order: the first n % 5 buckets get one row more."""
    n = len(ordered_ids)
    size, extra = divmod(n, 5)
    scores: dict[int, int] = {}
    i = 0
    for bucket in range(1, 6):
        take = size + (1 if bucket <= extra else 0)
        for uid in ordered_ids[i : i + take]:
            scores[uid] = bucket
        i += take
    return scores


def segment_of(purchases: int, recency: float, r: int, f: int, m: int) -> str:
    if purchases == 0:
        return "browser" if recency <= 30 else "dormant"
    if r >= 4 and f >= 4 and m >= 4:
        return "champion"
    if (f >= 4 or m >= 4) and r >= 3:
        return "loyal"
    if r >= 4 and f <= 2:
        return "new"
    if r <= 2 and (f >= 3 or m >= 3):
        return "at_risk"
    if r <= 2:
        return "hibernating"
    return "promising"


def reference_features(
    events: list[Event], offers: list[Offer], as_of: date, settings: Settings
) -> dict[int, dict[str, object]]:
    """The features as of `as_of`, straight from the documented definitions."""
    as_of_at = datetime(as_of.year, as_of.month, as_of.day, tzinfo=UTC)
    cap = settings.recency_cap_days
    cap_start = as_of_at - timedelta(days=cap)
    # the feature window never reaches past the recency cap
    window_start = max(as_of_at - timedelta(days=settings.feature_window_days), cap_start)
    known_before = as_of_at - timedelta(days=settings.attribution_days)
    week_start = as_of_at - timedelta(days=7)

    by_user: dict[int, list[Event]] = {}
    for e in events:
        if cap_start <= e.event_at < as_of_at:
            by_user.setdefault(e.user_id, []).append(e)

    rows: dict[int, dict[str, object]] = {}
    for uid, evs in by_user.items():
        recent = [e for e in evs if e.event_at >= window_start]
        purchases = [e for e in recent if e.action == "purchase"]
        views = sum(e.action == "view" for e in recent)
        carts = sum(e.action == "add_to_cart" for e in recent)
        n = len(purchases)
        all_purchases = [e.event_at for e in evs if e.action == "purchase"]

        sessions = {e.session_id for e in recent}
        channel_sessions = {c: {e.session_id for e in recent if e.channel == c} for c in ("email", "sms", "push")}
        messaging = sum(len(s) for s in channel_sessions.values())

        user_offers = [o for o in offers if o.user_id == uid and o.sent_at < as_of_at]
        responsiveness = {}
        for c in ("email", "sms", "push"):
            prior = (len(channel_sessions[c]) + 1) / (messaging + 3)
            judged = [o for o in user_offers if o.channel == c and o.sent_at < known_before and o.clicked is not None]
            clicks = sum(bool(o.clicked) for o in judged)
            responsiveness[c] = (clicks + 4 * prior) / (len(judged) + 4)

        scores: dict[str, int] = {}
        for e in recent:
            if e.product_category is not None:
                weight = {"view": 1, "add_to_cart": 3, "purchase": 5}[e.action]
                scores[e.product_category] = scores.get(e.product_category, 0) + weight
        top = min(scores, key=lambda c: (-scores[c], c)) if scores else "unknown"
        # when sessions start (no users rows in these tests: UTC is the user's time zone)
        starts = {}
        for e in recent:
            starts[e.session_id] = min(starts.get(e.session_id, e.event_at), e.event_at)
        morning = sum(5 <= t.hour < 11 for t in starts.values())
        evening = sum(t.hour >= 17 or t.hour < 5 for t in starts.values())

        rows[uid] = {
            "as_of": as_of,
            "user_id": uid,
            "recency_days": min(days_between(as_of_at, max(e.event_at for e in evs)), cap),
            "frequency_sessions": len(sessions),
            "monetary_value": float(sum((e.amount for e in purchases), Decimal(0))),
            "engagement_score": 1 - math.exp(-(views + 3 * carts + 10 * n) / 25),
            "discount_sensitivity": (sum(bool(e.discount_used) for e in purchases) + 1) / (n + 2),
            "free_shipping_preference": (sum(bool(e.free_shipping_used) for e in purchases) + 1) / (n + 2),
            "email_responsiveness": responsiveness["email"],
            "sms_responsiveness": responsiveness["sms"],
            "push_responsiveness": responsiveness["push"],
            "days_since_last_purchase": (
                min(days_between(as_of_at, max(all_purchases)), cap) if all_purchases else float(cap)
            ),
            "purchase_count": n,
            "offers_last_7d": sum(o.sent_at >= week_start for o in user_offers),
            "days_since_last_offer": (
                min(days_between(as_of_at, max(o.sent_at for o in user_offers)), cap) if user_offers else float(cap)
            ),
            "top_category": top,
            "morning_share": (morning + 1) / (len(sessions) + 3),
            "evening_share": (evening + 1) / (len(sessions) + 3),
            "category_focus": max(scores.values()) / sum(scores.values()) if scores else 0.0,
        }

    ids = sorted(rows)
    r = ntile5(sorted(ids, key=lambda u: (-rows[u]["recency_days"], u)))
    f = ntile5(sorted(ids, key=lambda u: (rows[u]["frequency_sessions"], u)))
    spenders = [u for u in ids if rows[u]["monetary_value"] > 0]
    m = ntile5(sorted(spenders, key=lambda u: (rows[u]["monetary_value"], u)))
    for u in ids:
        row = rows[u]
        row["r_score"], row["f_score"], row["m_score"] = r[u], f[u], m.get(u, 1)
        row["segment"] = segment_of(row["purchase_count"], row["recency_days"], r[u], f[u], m.get(u, 1))
    return rows


def assert_matches(actual: dict[int, dict[str, object]], expected: dict[int, dict[str, object]]) -> None:
    assert sorted(actual) == sorted(expected), "users differ"
    for uid, want in expected.items():
        got = actual[uid]
        for column in FEATURE_COLUMNS:
            if column in FLOAT_COLUMNS:
                assert got[column] == pytest.approx(want[column], rel=1e-9, abs=1e-9), (uid, column)
            else:
                assert got[column] == want[column], (uid, column, got[column], want[column])


# Random data ------------------------------------------------------------------------------------


def random_data(seed: int, users: int, as_of_at: datetime, days: float = 420) -> tuple[list[Event], list[Offer]]:
    rng = random.Random(seed)
    events: list[Event] = []
    for uid in range(1, users + 1):
        for s in range(rng.randint(1, 4)):
            # sessions from before the cap window to just after as_of, so every boundary is crossed
            start = as_of_at - timedelta(days=rng.uniform(-1, days))
            channel = rng.choice(CHANNELS)
            for _ in range(rng.randint(1, 5)):
                at = start + timedelta(minutes=rng.uniform(0, 90))
                action = rng.choices(("view", "add_to_cart", "purchase"), weights=(6, 3, 2))[0]
                purchase = action == "purchase"
                events.append(
                    Event(
                        user_id=uid,
                        session_id=f"s{s}",
                        event_at=at.replace(microsecond=rng.choice((0, at.microsecond))),
                        action=action,
                        product_category=rng.choice(CATEGORIES),
                        # mostly one channel per session, sometimes another one mixed in
                        channel=channel if rng.random() < 0.9 else rng.choice(CHANNELS),
                        amount=Decimal(rng.randint(0, 20000)) / 100 if purchase else None,
                        # the flags only count on purchases, so other actions get them too
                        discount_used=rng.choice((True, False, None)),
                        free_shipping_used=rng.choice((True, False, None)),
                    )
                )
    offers = [
        Offer(
            user_id=rng.randint(1, users + 5),
            sent_at=as_of_at - timedelta(days=rng.uniform(-2, days)),
            channel=rng.choice(("email", "sms", "push")),
            clicked=rng.choice((True, False, False, None)),
        )
        for _ in range(users * 3)
    ]
    return events, offers


# Tests ------------------------------------------------------------------------------------------


def test_query_produces_exactly_the_table_columns(
    fdb: Connection, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    events, offers = random_data(3, users=20, as_of_at=MIDNIGHT)
    insert_events(fdb, events)
    insert_offers(fdb, offers)
    # keep the earlier steps' tables of a one-shard build, then run the last step's SELECT on them
    keep_steps = features_module.drop_steps
    monkeypatch.setattr(
        features_module, "drop_steps", lambda conn, name, *, keep: None if keep else keep_steps(conn, name, keep=keep)
    )
    build_features(fdb, dataclasses.replace(settings, feature_workers=1), AS_OF)
    monkeypatch.undo()
    table = [
        r["column_name"]
        for r in fetch_all(
            fdb,
            "select column_name from information_schema.columns "
            "where table_schema = 'recsys' and table_name = 'user_features' order by ordinal_position",
        )
    ]
    # one connection: the steps' tables are its temporary ones
    steps = {
        name: sql.Identifier(feature_steps.TEMP_SCHEMA, f"user_features_20260615_build_{suffix}")
        for name, suffix in (
            ("stats", "stats0"),
            ("cats", "cats0"),
            ("priors", "priors"),
            ("rfm", "rfm"),
            ("zones", "zones"),
        )
    }
    with fdb.cursor() as cur:
        cur.execute(sql.SQL(feature_query(settings)).format(**steps), query_params(settings, AS_OF))
        produced = [d.name for d in cur.description]
        assert cur.rowcount == len(stored(fdb, AS_OF)) > 0
    fdb.rollback()
    assert produced == table == list(TABLE_COLUMNS)
    features_module.drop_steps(fdb, "user_features_20260615", keep=())


@pytest.mark.parametrize(
    ("seed", "window_days", "cap_days", "attribution_days"),
    [(1, 90, 365, 3), (2, 30, 60, 1), (3, 60, 30, 0)],
)
def test_random_data_matches_reference(
    fdb: Connection, settings: Settings, seed: int, window_days: int, cap_days: int, attribution_days: int
) -> None:
    settings = dataclasses.replace(
        settings,
        feature_window_days=window_days,
        recency_cap_days=cap_days,
        attribution_days=attribution_days,
    )
    events, offers = random_data(seed, users=120, as_of_at=MIDNIGHT, days=cap_days * 1.15)
    insert_events(fdb, events)
    insert_offers(fdb, offers)

    result = build_features(fdb, settings, AS_OF)

    expected = reference_features(events, offers, AS_OF, settings)
    assert result.users == len(expected) > 50
    assert_matches(stored(fdb, AS_OF), expected)
    # the data exercise the interesting branches, so the comparison means something
    segments = {row["segment"] for row in expected.values()}
    assert {"browser", "champion", "loyal"} <= segments
    assert ("dormant" in segments) == (cap_days > 30)  # dormant needs more than 30 days of recency
    assert any(row["top_category"] == "unknown" for row in expected.values())


def test_hand_made_user_has_the_documented_values(fdb: Connection, settings: Settings) -> None:
    t = MIDNIGHT
    events = [
        # session a, brought by email, 2 days before: view books, cart books, purchase toys (discount)
        Event(1, "a", t - timedelta(days=2), "view", "books", "email"),
        Event(1, "a", t - timedelta(days=2) + timedelta(minutes=1), "add_to_cart", "books", "email"),
        Event(1, "a", t - timedelta(hours=36), "purchase", "toys", "email", Decimal("40.50"), True, False),
        # session b, brought by sms, 10 days before: a purchase with free shipping
        Event(1, "b", t - timedelta(days=10), "purchase", "toys", "sms", Decimal("9.50"), False, True),
        # session c, web, 100 days before: outside the 90-day window, inside the 365-day cap
        Event(1, "c", t - timedelta(days=100), "purchase", "garden", "web", Decimal("1000"), True, True),
    ]
    offers = [
        Offer(1, t - timedelta(days=5), "email", True),  # judged: sent before as_of - 3 days
        Offer(1, t - timedelta(days=20), "email", False),  # judged
        Offer(1, t - timedelta(days=30), "email", None),  # outcome unknown: not judged
        Offer(1, t - timedelta(days=2), "push", True),  # attribution window still open: not judged
    ]
    insert_events(fdb, events)
    insert_offers(fdb, offers)
    build_features(fdb, settings, AS_OF)
    row = stored(fdb, AS_OF)[1]

    assert row["recency_days"] == pytest.approx(1.5)
    assert row["frequency_sessions"] == 2
    assert row["monetary_value"] == pytest.approx(50.0)
    assert row["purchase_count"] == 2
    assert row["engagement_score"] == pytest.approx(1 - math.exp(-(1 + 3 + 20) / 25))
    assert row["discount_sensitivity"] == pytest.approx((1 + 1) / (2 + 2))
    assert row["free_shipping_preference"] == pytest.approx((1 + 1) / (2 + 2))
    # priors: sessions from email 1, sms 1, push 0 -> (1+1)/(2+3), (1+1)/(2+3), (0+1)/(2+3)
    assert row["email_responsiveness"] == pytest.approx((1 + 4 * 0.4) / (2 + 4))
    assert row["sms_responsiveness"] == pytest.approx(0.4)
    assert row["push_responsiveness"] == pytest.approx(0.2)
    assert row["days_since_last_purchase"] == pytest.approx(1.5)
    assert row["offers_last_7d"] == 2
    assert row["days_since_last_offer"] == pytest.approx(2.0)
    # books 1 + 3 = 4, toys 5 + 5 = 10 (garden is outside the window)
    assert row["top_category"] == "toys"
    assert (row["r_score"], row["f_score"], row["m_score"]) == (1, 1, 1)  # the only user: one bucket
    assert row["segment"] == "hibernating"
    # sessions a (starts 00:00 UTC) and b (00:00 UTC): both evening (17:00-04:59) in UTC
    assert row["morning_share"] == pytest.approx(1 / 5)
    assert row["evening_share"] == pytest.approx(3 / 5)
    assert row["category_focus"] == pytest.approx(10 / 14)


def test_session_hours_are_local_to_the_users_time_zone(fdb: Connection, settings: Settings) -> None:
    t = MIDNIGHT - timedelta(days=3)
    events = [
        # 22:30 UTC is 07:30 the next day in Tokyo (morning) and 17:30 in New York (evening, EST)
        Event(1, "a", t + timedelta(hours=22, minutes=30), "view", "books"),
        Event(2, "a", t + timedelta(hours=22, minutes=30), "view", "books"),
        Event(3, "a", t + timedelta(hours=22, minutes=30), "view", "books"),  # no users row: UTC, evening
        # 14:00 UTC: 23:00 Tokyo (evening), 09:00 New York (morning)
        Event(1, "b", t + timedelta(hours=14), "view", "books"),
        Event(2, "b", t + timedelta(hours=14), "view", "books"),
    ]
    insert_events(fdb, events)
    with fdb.cursor() as cur:
        cur.execute(
            "insert into recsys.users (user_id, timezone, load_id) values (1, 'Asia/Tokyo', 0), "
            "(2, 'America/New_York', 0)"
        )
    build_features(fdb, settings, AS_OF)
    rows = stored(fdb, AS_OF)
    assert (rows[1]["morning_share"], rows[1]["evening_share"]) == (pytest.approx(2 / 5), pytest.approx(2 / 5))
    assert (rows[2]["morning_share"], rows[2]["evening_share"]) == (pytest.approx(2 / 5), pytest.approx(2 / 5))
    assert (rows[3]["morning_share"], rows[3]["evening_share"]) == (pytest.approx(1 / 4), pytest.approx(2 / 4))


def test_top_category_ties_go_to_the_first_name(fdb: Connection, settings: Settings) -> None:
    t = MIDNIGHT - timedelta(days=1)
    insert_events(
        fdb,
        [
            Event(1, "a", t, "add_to_cart", "toys"),
            Event(1, "a", t, "add_to_cart", "Books"),  # 3 each: "Books" < "toys" (code point order)
            Event(1, "a", t, "view", None),
            Event(2, "a", t, "purchase", "garden", amount=Decimal(1)),
            Event(2, "a", t, "view", "books"),
            Event(2, "a", t, "view", "books"),
            Event(2, "a", t, "view", "books"),
            Event(2, "a", t, "view", "books"),  # 4 < 5
            Event(3, "a", t, "view", None),
        ],
    )
    build_features(fdb, settings, AS_OF)
    rows = stored(fdb, AS_OF)
    assert [rows[u]["top_category"] for u in (1, 2, 3)] == ["Books", "garden", "unknown"]


def test_no_leakage_of_events_and_offers_at_or_after_as_of(fdb: Connection, settings: Settings) -> None:
    insert_events(
        fdb,
        [
            Event(1, "a", MIDNIGHT - US, "view"),
            Event(1, "b", MIDNIGHT, "purchase", "toys", "email", Decimal(99)),
            Event(1, "c", MIDNIGHT + timedelta(days=3), "purchase", "toys", "email", Decimal(99)),
            Event(2, "a", MIDNIGHT, "view"),  # only at as_of 00:00: not a user of this date
            Event(3, "a", MIDNIGHT + timedelta(hours=1), "view"),
        ],
    )
    insert_offers(
        fdb,
        [
            Offer(1, MIDNIGHT - US, "sms", True),  # counts as sent, its outcome is not known yet
            Offer(1, MIDNIGHT - timedelta(days=7), "sms", None),  # the first moment of the 7 days
            Offer(1, MIDNIGHT - timedelta(days=7) - US, "sms", None),  # before them
            Offer(1, MIDNIGHT, "email", True),
            Offer(1, MIDNIGHT + timedelta(days=1), "email", True),
        ],
    )
    build_features(fdb, settings, AS_OF)
    rows = stored(fdb, AS_OF)

    assert sorted(rows) == [1]
    row = rows[1]
    assert row["recency_days"] == pytest.approx(US.total_seconds() / 86400, abs=1e-12)
    assert row["recency_days"] > 0
    assert (row["frequency_sessions"], row["purchase_count"], row["monetary_value"]) == (1, 0, 0)
    assert row["top_category"] == "unknown"
    assert row["offers_last_7d"] == 2
    assert row["days_since_last_offer"] == pytest.approx(US.total_seconds() / 86400, abs=1e-12)
    for channel in ("email", "sms", "push"):
        assert row[f"{channel}_responsiveness"] == pytest.approx(1 / 3)


def test_recency_cap_window_and_defaults(fdb: Connection, settings: Settings) -> None:
    cap = timedelta(days=settings.recency_cap_days)
    insert_events(
        fdb,
        [
            Event(1, "a", MIDNIGHT - cap, "view"),  # exactly at the cap: still a user
            Event(2, "a", MIDNIGHT - cap - US, "purchase", "toys", "email", Decimal(5)),  # before it
            Event(3, "a", MIDNIGHT - timedelta(days=5), "view", channel="web"),
            Event(4, "a", MIDNIGHT - timedelta(days=30), "view"),  # 30 days: still a browser
            Event(5, "a", MIDNIGHT - timedelta(days=30) - US, "view"),
        ],
    )
    # an offer older than the cap still has a known outcome: it counts for responsiveness
    insert_offers(fdb, [Offer(3, MIDNIGHT - cap - timedelta(days=30), "email", False)])
    build_features(fdb, settings, AS_OF)
    rows = stored(fdb, AS_OF)

    assert sorted(rows) == [1, 3, 4, 5]
    assert (rows[4]["segment"], rows[5]["segment"]) == ("browser", "dormant")
    for uid in (1, 3):
        row = rows[uid]
        assert row["days_since_last_purchase"] == settings.recency_cap_days
        assert row["monetary_value"] == 0
        assert row["purchase_count"] == 0
        assert row["discount_sensitivity"] == 0.5
        assert row["free_shipping_preference"] == 0.5
        assert row["m_score"] == 1
        assert row["offers_last_7d"] == 0
        # no session from a messaging channel: prior 1/3 on each
        assert row["sms_responsiveness"] == pytest.approx(1 / 3)
        assert row["push_responsiveness"] == pytest.approx(1 / 3)
    assert rows[1]["email_responsiveness"] == pytest.approx(1 / 3)
    assert rows[3]["email_responsiveness"] == pytest.approx((0 + 4 / 3) / (1 + 4))
    assert rows[1]["recency_days"] == settings.recency_cap_days
    assert rows[1]["segment"] == "dormant"
    assert rows[1]["frequency_sessions"] == 0
    assert rows[1]["engagement_score"] == 0
    assert rows[1]["days_since_last_offer"] == settings.recency_cap_days
    # an offer older than the cap is capped, not left out
    assert rows[3]["days_since_last_offer"] == settings.recency_cap_days
    assert rows[3]["segment"] == "browser"


def test_no_nulls_or_nans(fdb: Connection, settings: Settings) -> None:
    events, offers = random_data(3, users=60, as_of_at=MIDNIGHT)
    insert_events(fdb, events)
    insert_offers(fdb, offers)
    build_features(fdb, settings, AS_OF)

    checks = sql.SQL(", ").join(
        sql.SQL("count(*) filter (where {c} is null{nan})").format(
            c=sql.Identifier(c),
            nan=sql.SQL(" or {} = 'NaN'::double precision").format(sql.Identifier(c))
            if c in FLOAT_COLUMNS
            else sql.SQL(""),
        )
        for c in FEATURE_COLUMNS
    )
    with fdb.cursor() as cur:
        cur.execute(sql.SQL("select count(*), {} from recsys.user_features").format(checks))
        total, *bad = cur.fetchone()
    assert total > 30
    assert dict(zip(FEATURE_COLUMNS, bad, strict=True)) == dict.fromkeys(FEATURE_COLUMNS, 0)
    responsiveness = fetch_value(
        fdb,
        "select bool_and(least(email_responsiveness, sms_responsiveness, push_responsiveness) > 0 "
        "and greatest(email_responsiveness, sms_responsiveness, push_responsiveness) < 1) "
        "from recsys.user_features",
    )
    assert responsiveness is True


def test_rfm_scores_are_quintiles(fdb: Connection, settings: Settings) -> None:
    events, _ = random_data(4, users=103, as_of_at=MIDNIGHT)
    insert_events(fdb, events)
    build_features(fdb, settings, AS_OF)
    rows = list(stored(fdb, AS_OF).values())
    n = len(rows)

    for score in ("r_score", "f_score"):
        sizes = [sum(r[score] == q for r in rows) for q in range(1, 6)]
        assert sum(sizes) == n and max(sizes) - min(sizes) <= 1, (score, sizes)
    most_recent = min(rows, key=lambda r: r["recency_days"])
    least_recent = max(rows, key=lambda r: r["recency_days"])
    assert (most_recent["r_score"], least_recent["r_score"]) == (5, 1)
    assert max(rows, key=lambda r: (r["frequency_sessions"], r["user_id"]))["f_score"] == 5
    assert all(r["m_score"] == 1 for r in rows if r["monetary_value"] == 0)
    spenders = [r for r in rows if r["monetary_value"] > 0]
    sizes = [sum(r["m_score"] == q for r in spenders) for q in range(1, 6)]
    assert len(spenders) > 10 and max(sizes) - min(sizes) <= 1, sizes
    assert max(spenders, key=lambda r: r["monetary_value"])["m_score"] == 5


def test_rfm_ties_are_split_by_user_id(fdb: Connection, settings: Settings) -> None:
    t = MIDNIGHT - timedelta(days=3)
    insert_events(fdb, [Event(uid, "a", t, "purchase", amount=Decimal(7)) for uid in range(10, 0, -1)])
    build_features(fdb, settings, AS_OF)
    rows = stored(fdb, AS_OF)

    # equal recency, sessions and spend: ntile(5) splits the ten users in user_id order
    assert [rows[u]["r_score"] for u in range(1, 11)] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert [rows[u]["f_score"] for u in range(1, 11)] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert [rows[u]["m_score"] for u in range(1, 11)] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


def test_segments_follow_the_documented_rules(fdb: Connection, settings: Settings) -> None:
    # dense recent activity, so buyers spread over all recency quintiles and every segment occurs
    events, offers = random_data(5, users=200, as_of_at=MIDNIGHT, days=120)
    insert_events(fdb, events)
    insert_offers(fdb, offers)
    build_features(fdb, settings, AS_OF)
    rows = stored(fdb, AS_OF)

    for r in rows.values():
        rule = segment_of(r["purchase_count"], r["recency_days"], r["r_score"], r["f_score"], r["m_score"])
        assert r["segment"] == rule, r
    assert {r["segment"] for r in rows.values()} == set(SEGMENTS)
    assert_matches(rows, reference_features(events, offers, AS_OF, settings))


def test_rebuild_replaces_the_date(fdb: Connection, settings: Settings) -> None:
    first_events, first_offers = random_data(6, users=40, as_of_at=MIDNIGHT)
    insert_events(fdb, first_events)
    insert_offers(fdb, first_offers)
    other_day = AS_OF - timedelta(days=1)
    build_features(fdb, settings, other_day)
    first = build_features(fdb, settings, AS_OF)
    assert first.users == len(stored(fdb, AS_OF)) > 0
    assert step_tables(fdb) == []  # a small shop's steps ran in temporary tables, dropped at the end
    other_before = stored(fdb, other_day)

    clear_inputs(fdb)
    second_events, second_offers = random_data(7, users=25, as_of_at=MIDNIGHT)
    insert_events(fdb, second_events)
    insert_offers(fdb, second_offers)
    with fdb.cursor() as cur:
        cur.execute("set client_min_messages = debug1")
    fdb.commit()
    del fdb.notices[:]
    second = build_features(fdb, settings, AS_OF)
    with fdb.cursor() as cur:
        cur.execute("reset client_min_messages")
    fdb.commit()
    # attach trusted the check constraint instead of scanning the new partition
    assert any(
        'partition constraint for table "user_features_20260615" is implied by existing constraints' in n
        for n in fdb.notices
    )

    expected = reference_features(second_events, second_offers, AS_OF, settings)
    assert second.users == len(expected) != first.users
    assert fetch_value(fdb, "select count(*) from recsys.user_features where as_of = %s", (AS_OF,)) == len(expected)
    assert_matches(stored(fdb, AS_OF), expected)
    # one partition per date, under its name, and no staging table left behind
    partitions = feature_partitions(fdb)
    assert partitions == {"user_features_20260614": [other_day], "user_features_20260615": [AS_OF]}
    leftovers = fetch_value(
        fdb, "select count(*) from pg_tables where schemaname = 'recsys' and tablename like '%%\\_build'"
    )
    assert leftovers == 0
    # the other date was not touched
    assert stored(fdb, other_day) == other_before


@pytest.mark.parametrize("shards", [2, 1])
def test_failed_build_leaves_the_old_rows(
    fdb: Connection, settings: Settings, tmp_path, monkeypatch: pytest.MonkeyPatch, shards: int
) -> None:
    events, offers = random_data(8, users=30, as_of_at=MIDNIGHT)
    insert_events(fdb, events)
    insert_offers(fdb, offers)
    build_features(fdb, settings, AS_OF)
    before = stored(fdb, AS_OF)
    assert before

    broken_dir = tmp_path / "sql"
    # fail on two shards (connections of their own) or on the caller's connection alone
    monkeypatch.setattr(feature_steps, "SHARD_MIN_EVENT_BYTES", 1)
    settings = dataclasses.replace(settings, feature_workers=shards)
    shutil.copytree(settings.sql_dir / "features", broken_dir / "features")
    # the real query of the last step, failing at its end on every shard
    broken = feature_query(settings).replace("select * from final", "select * from final where 1 / 0 = 1")
    assert broken != feature_query(settings)
    (broken_dir / "features" / "user_features.sql").write_text(broken)
    clear_inputs(fdb)
    with pytest.raises(psycopg2.errors.DivisionByZero):
        build_features(fdb, dataclasses.replace(settings, sql_dir=broken_dir), AS_OF)

    assert stored(fdb, AS_OF) == before
    assert feature_partitions(fdb) == {"user_features_20260615": [AS_OF]}
    assert fetch_value(fdb, "select to_regclass('recsys.user_features_20260615_build')") is None
    # nor any step's table (the shards' stats, the priors, ...)
    assert step_tables(fdb) == []
    # the lock was released: the next build of the date goes through
    assert build_features(fdb, settings, AS_OF).users == 0
    assert stored(fdb, AS_OF) == {}


@pytest.mark.parametrize("workers", [1, 3])
def test_the_shards_build_the_same_rows(
    fdb: Connection, settings: Settings, workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The users split by id across connections give the rows of the whole date at once: the
    priors and the RFM quintiles are the date's, not the shard's."""
    monkeypatch.setattr(feature_steps, "SHARD_MIN_EVENT_BYTES", 1)  # shards even for a small date
    events, offers = random_data(12, users=60, as_of_at=MIDNIGHT)
    insert_events(fdb, events)
    insert_offers(fdb, offers)
    build_features(fdb, dataclasses.replace(settings, feature_workers=2), AS_OF)
    two = stored(fdb, AS_OF)
    build_features(fdb, dataclasses.replace(settings, feature_workers=workers), AS_OF)
    other = stored(fdb, AS_OF)
    assert sorted(other) == sorted(two) and len(two) > 30
    for uid, row in two.items():
        for column in TABLE_COLUMNS:
            if isinstance(row[column], float):
                # sums of floats may add a user's sessions in another order
                assert other[uid][column] == pytest.approx(row[column], rel=1e-12, abs=1e-12), (uid, column)
            else:
                assert other[uid][column] == row[column], (uid, column)
    assert step_tables(fdb) == []


def test_a_killed_build_s_tables_are_dropped_by_the_next(
    fdb: Connection, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feature_steps, "SHARD_MIN_EVENT_BYTES", 1)
    events, offers = random_data(13, users=20, as_of_at=MIDNIGHT)
    insert_events(fdb, events)
    insert_offers(fdb, offers)
    with fdb.cursor() as cur:
        # what a build killed in its shards' step leaves: the staging table and step tables
        cur.execute("create table recsys.user_features_20260615_build (like recsys.user_features)")
        cur.execute("create unlogged table recsys.user_features_20260615_build_stats5 (user_id bigint)")
        cur.execute("create unlogged table recsys.user_features_20260615_build_pop (product_category text)")
    fdb.commit()
    result = build_features(fdb, settings, AS_OF)
    assert result.users == len(stored(fdb, AS_OF)) > 0
    assert step_tables(fdb) == []


def test_workers_on_another_database_build_on_one_connection(
    fdb: Connection, settings: Settings, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Settings whose URL names another database than the caller's connection: the build does not
    read that database, it builds on the caller's connection alone and says so."""
    monkeypatch.setattr(feature_steps, "SHARD_MIN_EVENT_BYTES", 1)
    events, offers = random_data(14, users=20, as_of_at=MIDNIGHT)
    insert_events(fdb, events)
    insert_offers(fdb, offers)
    build_features(fdb, dataclasses.replace(settings, feature_workers=1), AS_OF)
    alone = stored(fdb, AS_OF)
    elsewhere = dataclasses.replace(settings, database_url=with_database(settings.database_url, "postgres"))
    with caplog.at_level(logging.WARNING, logger="recsys.data.feature_steps"):
        build_features(fdb, elsewhere, AS_OF)
    assert "building on one connection" in caplog.text
    assert stored(fdb, AS_OF) == alone


def test_range_builds_every_date(fdb: Connection, settings: Settings) -> None:
    events, offers = random_data(9, users=30, as_of_at=MIDNIGHT)
    insert_events(fdb, events)
    insert_offers(fdb, offers)
    start, end = AS_OF - timedelta(days=3), AS_OF

    results = build_feature_range(fdb, settings, start, end)

    dates = [start + timedelta(days=i) for i in range(4)]
    assert [r.as_of for r in results] == dates
    assert sorted(v for values in feature_partitions(fdb).values() for v in values) == dates
    for day, result in zip(dates, results, strict=True):
        expected = reference_features(events, offers, day, settings)
        assert result.users == len(expected)
        assert_matches(stored(fdb, day), expected)
    with pytest.raises(RecsysError, match="before it starts"):
        build_feature_range(fdb, settings, end, start)


def test_retention_drops_only_old_partitions(fdb: Connection, settings: Settings) -> None:
    insert_events(fdb, [Event(1, "a", MIDNIGHT - timedelta(days=500), "view")])
    today = AS_OF
    cutoff = today - timedelta(days=settings.feature_retention_days)
    old_days = [cutoff - timedelta(days=30), cutoff - timedelta(days=1)]
    kept_days = [cutoff, cutoff + timedelta(days=1), today]
    for day in old_days + kept_days:
        build_features(fdb, settings, day)

    assert drop_old_features(fdb, settings, today) == 2

    remaining = sorted(v for values in feature_partitions(fdb).values() for v in values)
    assert remaining == kept_days
    assert fetch_value(fdb, "select count(*) from recsys.user_features where as_of < %s", (cutoff,)) == 0
    assert fetch_value(fdb, "select count(*) from recsys.user_features where as_of = %s", (cutoff,)) == 1
    assert drop_old_features(fdb, settings, today) == 0


def test_feature_summary_and_describe(fdb: Connection, settings: Settings) -> None:
    events, offers = random_data(10, users=50, as_of_at=MIDNIGHT)
    insert_events(fdb, events)
    insert_offers(fdb, offers)
    result = build_features(fdb, settings, AS_OF)

    text = feature_summary(fdb, AS_OF)
    lines = text.splitlines()
    assert lines[0] == f"features as of 2026-06-15: {result.users:,} users"
    recency = next(line for line in lines if line.startswith("recency_days"))
    values = [float(v) for v in recency.split()[1:]]
    expected = [r["recency_days"] for r in stored(fdb, AS_OF).values()]
    assert values == pytest.approx([min(expected), sum(expected) / len(expected), max(expected)], abs=1e-3)
    per_segment = {
        line.split()[0]: int(line.split()[1].replace(",", ""))
        for line in lines
        if line.split()[:1] and line.split()[0] in SEGMENTS
    }
    assert sorted(per_segment) == sorted(SEGMENTS)
    assert sum(per_segment.values()) == result.users
    assert "no users" in feature_summary(fdb, AS_OF + timedelta(days=1))

    assert FeatureBuild(AS_OF, 12345, 1.234).describe() == "features as of 2026-06-15: 12,345 users in 1.2 s"
