"""The prior-shrunk user features (migration 013) on a tiny crafted shop, against values computed here.

The reference below is written from the definitions in sql/features/user_features.sql and
docs/how-it-works.md in plain Python (the method-of-moments prior strengths included); it never
runs the SQL. One value of each kind is also spelled out by hand.
"""

from __future__ import annotations

import itertools
import math
import statistics
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
import sender_support
from psycopg2 import sql
from psycopg2.extras import execute_values

from recsys.config.settings import Settings
from recsys.data.features import (
    PRIOR_FEATURE_COLUMNS,
    PRIOR_STRENGTH_BOUNDS,
    backfill_features,
    build_features,
    feature_partitions,
)
from recsys.db import Connection, fetch_all

AS_OF = date(2026, 6, 15)
MIDNIGHT = datetime(2026, 6, 15, tzinfo=UTC)
LO, HI = PRIOR_STRENGTH_BOUNDS
_ids = itertools.count()


@pytest.fixture
def fdb(db: Connection) -> Connection:
    """The test database with no user_features partitions left by earlier tests."""
    with db.cursor() as cur:
        for name in feature_partitions(db):
            cur.execute(sql.SQL("drop table {}").format(sql.Identifier("recsys", name)))
    db.commit()
    return db


def _at(day: int, hour: float) -> datetime:
    return datetime(2026, 6, day, tzinfo=UTC) + timedelta(hours=hour)


# (user, session, at, action, category, channel, amount, discount_used, free_shipping_used)
EVENTS = [
    # user 1 (Asia/Tokyo, UTC+9): an organic session at 09:00 local with a discounted purchase, and
    # a session an email brought at 12:00 local with a free-shipping purchase
    (1, "1a", _at(10, 0), "view", "books", "web", None, None, None),
    (1, "1a", _at(10, 0.1), "view", "books", "web", None, None, None),
    (1, "1a", _at(10, 0.2), "view", "toys", "web", None, None, None),
    (1, "1a", _at(10, 0.3), "purchase", "books", "web", Decimal(20), True, False),
    (1, "1b", _at(12, 3), "view", "books", "email", None, None, None),
    (1, "1b", _at(12, 3.1), "purchase", "books", "email", Decimal(50), False, True),
    # user 2 (UTC): two organic evening sessions, at 18:00 and 18:30
    (2, "2a", _at(11, 18), "view", "toys", "app", None, None, None),
    (2, "2a", _at(11, 18.1), "purchase", "toys", "app", Decimal(100), False, False),
    (2, "2b", _at(13, 18.5), "view", "garden", None, None, None, None),
    (2, "2b", _at(13, 18.6), "purchase", "garden", None, Decimal(40), True, False),
    # user 3 (no users row: UTC): one organic session at 06:00, views only
    (3, "3a", _at(14, 6), "view", "toys", "app", None, None, None),
    (3, "3a", _at(14, 6.1), "view", "toys", "app", None, None, None),
    # user 4 (UTC): a focused browser, organic at 21:00, an offer-driven purchase from a push
    *[(4, "4a", _at(9, 21 + i / 100), "view", "garden", "web", None, None, None) for i in range(5)],
    (4, "4b", _at(12, 10), "view", "garden", "push", None, None, None),
    (4, "4b", _at(12, 10.1), "purchase", "garden", "push", Decimal(30), True, True),
]

# (user, sent_at, type, channel, timing, opened, clicked, converted); the attribution window is 3 days
OFFERS = [
    (1, _at(1, 0), "discount", "email", "immediate", True, True, True),
    (1, _at(2, 1), "discount", "email", "delay_1hour", True, False, False),
    (1, _at(3, 0), "bundle", "sms", "immediate", False, False, False),
    (1, _at(13, 0), "discount", "email", "immediate", True, True, True),  # window open: not judged
    (2, _at(1, 9), "recommendation", "email", "immediate", False, False, False),
    (2, _at(5, 15), "recommendation", "email", "delay_6hours", None, True, False),  # a click is an open
    (2, _at(6, 9), "free_shipping", "push", "immediate", None, False, None),  # open unknown
    (4, _at(2, 9), "free_shipping", "push", "immediate", True, True, True),
    (4, _at(3, 9), "discount", "push", "immediate", True, True, False),
    (4, _at(4, 9), "discount", "email", "immediate", False, False, False),
]
ZONES = {1: "Asia/Tokyo", 2: "UTC", 4: "UTC"}


def insert(conn: Connection, events=EVENTS, offers=OFFERS, zones=ZONES) -> None:
    with conn.cursor() as cur:
        if zones:
            execute_values(
                cur,
                "insert into recsys.users (user_id, timezone, load_id) values %s on conflict do nothing",
                list(zones.items()),
                template="(%s, %s, 0)",
            )
        if events:
            times = [e[2] for e in events]
            cur.execute("select recsys.ensure_event_partitions(%s, %s)", (min(times), max(times)))
            execute_values(
                cur,
                "insert into recsys.behavior_events (event_id, user_id, session_id, event_at, action, "
                "product_category, channel, amount, discount_used, free_shipping_used, load_id) values %s",
                [(f"pe{next(_ids)}", *e, 0) for e in events],
            )
        if offers:
            execute_values(
                cur,
                "insert into recsys.offer_history (offer_id, user_id, sent_at, offer_type, offer_value, channel, "
                "timing, opened, clicked, converted, load_id) values %s",
                [(f"po{next(_ids)}", u, at, t, 10, c, tm, op, cl, cv, 0) for u, at, t, c, tm, op, cl, cv in offers],
            )
    conn.commit()


def rows(conn: Connection, as_of: date = AS_OF) -> dict[int, dict]:
    return {r["user_id"]: r for r in fetch_all(conn, "select * from recsys.user_features where as_of = %s", (as_of,))}


# The reference ----------------------------------------------------------------------------------


STRENGTHS: list[float] = []
"""Every prior strength the last `reference` call used."""


def strength(dispersion: float | None, mean_inverse_n: float | None) -> float:
    """recsys.eb_prior_strength, from its documented formula."""
    if dispersion is None or mean_inverse_n is None or mean_inverse_n >= 1:
        STRENGTHS.append(LO)
        return LO
    rho = (dispersion - mean_inverse_n) / (1 - mean_inverse_n)
    rho = max(min(rho, 1 / (LO + 1)), 1 / (HI + 1))
    STRENGTHS.append(1 / rho - 1)
    return STRENGTHS[-1]


def beta_posteriors(counts: dict[int, tuple[int, int]]) -> dict[int, float]:
    """Per user (x, n) -> posterior means under the method-of-moments Beta prior of the users with n > 0."""
    seen = [(x, n) for x, n in counts.values() if n > 0]
    if not seen:
        m, k = 0.5, LO
    else:
        rates = [x / n for x, n in seen]
        m = statistics.fmean(rates)
        var = statistics.pvariance(rates)
        a = statistics.fmean(1 / n for _, n in seen)
        k = strength(var / (m * (1 - m)) if 0 < m < 1 else None, a)
    return {u: (x + k * m) / (n + k) for u, (x, n) in counts.items()}


def circular_hour(cos: float, sin: float) -> float:
    return math.degrees(math.atan2(sin, cos)) % 360 / 15


def reference(events=EVENTS, offers=OFFERS, zones=ZONES) -> dict[int, dict[str, float | None]]:
    STRENGTHS.clear()
    midnight = MIDNIGHT
    closed = midnight - timedelta(days=3)
    events = [e for e in events if midnight - timedelta(days=90) <= e[2] < midnight]
    users = sorted({e[0] for e in events})
    zone = {u: zones.get(u, "UTC") for u in users}
    out: dict[int, dict[str, float | None]] = {u: {} for u in users}

    # funnel rates from the offers whose window closed
    judged = [o for o in offers if o[1] < closed]

    def opened(o):
        return True if (o[5] or o[6]) else (False if o[5] is not None else None)

    for c in ("email", "sms", "push"):
        cnt = {u: (0, 0) for u in users}
        clk = {u: (0, 0) for u in users}
        for u in users:
            mine = [o for o in judged if o[0] == u and o[3] == c]
            cnt[u] = (sum(opened(o) is True for o in mine), sum(opened(o) is not None for o in mine))
            op = [o for o in mine if opened(o) and o[6] is not None]
            clk[u] = (sum(bool(o[6]) for o in op), len(op))
        for u, v in beta_posteriors(cnt).items():
            out[u][f"{c}_open_rate"] = v
        for u, v in beta_posteriors(clk).items():
            out[u][f"{c}_click_rate"] = v
    for t in ("discount", "free_shipping", "recommendation", "bundle"):
        clk, conv = {}, {}
        for u in users:
            mine = [o for o in judged if o[0] == u and o[2] == t]
            op = [o for o in mine if opened(o) and o[6] is not None]
            clk[u] = (sum(bool(o[6]) for o in op), len(op))
            cl = [o for o in mine if o[6] and o[7] is not None]
            conv[u] = (sum(bool(o[7]) for o in cl), len(cl))
        for u, v in beta_posteriors(clk).items():
            out[u][f"{t}_click_rate"] = v
        for u, v in beta_posteriors(conv).items():
            out[u][f"{t}_convert_rate"] = v

    # purchases: organic when no event of the session names a message channel
    sessions: dict[tuple[int, str], list] = {}
    for e in events:
        sessions.setdefault((e[0], e[1]), []).append(e)
    organic = {k: not any(e[5] in ("email", "sms", "push") for e in v) for k, v in sessions.items()}
    purchases = [(e, organic[(e[0], e[1])]) for e in events if e[3] == "purchase"]
    for flag, name in ((7, "discount"), (8, "free_shipping")):
        for kind, keep in (("organic", True), ("offer", False)):
            counts = {
                u: (
                    sum(bool(e[flag]) for e, o in purchases if e[0] == u and o == keep),
                    sum(1 for e, o in purchases if e[0] == u and o == keep),
                )
                for u in users
            }
            for u, v in beta_posteriors(counts).items():
                out[u][f"{kind}_{name}_share"] = v

    # Dirichlet category focus over views
    views: dict[int, dict[str, int]] = {u: {} for u in users}
    for e in events:
        if e[3] == "view" and e[4] is not None:
            views[e[0]][e[4]] = views[e[0]].get(e[4], 0) + 1
    total = sum(sum(v.values()) for v in views.values())
    share = {}
    for v in views.values():
        for k, n in v.items():
            share[k] = share.get(k, 0) + n / total
    seen = [v for v in views.values() if v]
    dev = statistics.fmean(sum((v.get(k, 0) / sum(v.values()) - share[k]) ** 2 for k in share) for v in seen)
    kappa = strength(dev / (1 - sum(s**2 for s in share.values())), statistics.fmean(1 / sum(v.values()) for v in seen))
    for u in users:
        n = sum(views[u].values())
        out[u]["category_focus_posterior"] = max(
            (views[u].get(k, 0) + kappa * s) / (n + kappa) for k, s in share.items()
        )

    # order value: normal-normal on ln(1 + amount)
    ys = {u: [math.log1p(float(e[6])) for e, _ in purchases if e[0] == u] for u in users}
    buyers = {u: y for u, y in ys.items() if y}
    means = [statistics.fmean(y) for y in buyers.values()]
    mu = statistics.fmean(means)
    multi = [y for y in buyers.values() if len(y) >= 2]
    s2 = sum(sum((v - statistics.fmean(y)) ** 2 for v in y) for y in multi) / sum(len(y) - 1 for y in multi)
    t2 = statistics.pvariance(means) - s2 * statistics.fmean(1 / len(y) for y in buyers.values())
    k = HI if t2 <= 0 else min(max(s2 / t2, LO), HI)
    STRENGTHS.append(k)
    for u in users:
        out[u]["order_value"] = math.expm1((sum(ys[u]) + k * mu) / (len(ys[u]) + k))

    # hours
    def local_hour(at: datetime, tz: str) -> float:
        from zoneinfo import ZoneInfo

        t = at.astimezone(ZoneInfo(tz))
        return t.hour + t.minute / 60 + t.second / 3600 + t.microsecond / 3.6e9

    vec = {u: [0.0, 0.0] for u in users}
    n_sessions = 0
    for (u, _), evs in sessions.items():
        if organic[(u, _)]:
            h = local_hour(min(e[2] for e in evs), zone[u])
            vec[u][0] += math.cos(math.radians(15 * h))
            vec[u][1] += math.sin(math.radians(15 * h))
            n_sessions += 1
    # the population's mean resultant: its direction, as long as the population is concentrated
    pc, ps = sum(v[0] for v in vec.values()) / n_sessions, sum(v[1] for v in vec.values()) / n_sessions
    for u in users:
        out[u]["preferred_local_hour"] = circular_hour(vec[u][0] + pc, vec[u][1] + ps)
        out[u]["preferred_hour_certainty"] = math.hypot(*vec[u])
    delay = {"immediate": 0, "delay_1hour": 1, "delay_6hours": 6}
    zone_vec: dict[str, list[float]] = {}
    for o in offers:
        if midnight - timedelta(days=90) <= o[1] < midnight:
            tz = zones.get(o[0], "UTC")
            h = local_hour(o[1] - timedelta(hours=delay[o[4]]), tz)
            zv = zone_vec.setdefault(tz, [0.0, 0.0])
            zv[0] += math.cos(math.radians(15 * h))
            zv[1] += math.sin(math.radians(15 * h))
    for u in users:
        zv = zone_vec.get(zone[u])
        out[u]["local_release_hour"] = None if zv is None else circular_hour(*zv)
    return out


def assert_close(got: dict[int, dict], want: dict[int, dict]) -> None:
    assert sorted(got) == sorted(want)
    for u, cols in want.items():
        for c, v in cols.items():
            if v is None:
                assert got[u][c] is None, (u, c)
            else:
                assert got[u][c] == pytest.approx(v, rel=1e-9, abs=1e-9), (u, c, got[u][c], v)


# Tests ------------------------------------------------------------------------------------------


def test_prior_features_match_the_reference(fdb: Connection, settings: Settings) -> None:
    insert(fdb)
    build_features(fdb, settings, AS_OF)
    got = rows(fdb)
    want = reference()
    assert set(want[1]) == set(PRIOR_FEATURE_COLUMNS)
    assert_close(got, want)


def test_prior_features_by_hand(fdb: Connection, settings: Settings) -> None:
    """A few values worked out by hand from the crafted shop."""
    insert(fdb)
    build_features(fdb, settings, AS_OF)
    r = rows(fdb)
    # email opens (offers judged): user 1 2/2, user 2 1/2 (the click counts as an open), user 4 0/1.
    # rates 1, 0.5, 0: m = 0.5, var = 1/6, dispersion (1/6) / (1/4) = 2/3, mean 1/n = (1/2+1/2+1)/3
    # = 2/3: rho = 0 -> the largest strength, 1000
    assert r[1]["email_open_rate"] == pytest.approx((2 + HI * 0.5) / (2 + HI))
    assert r[3]["email_open_rate"] == pytest.approx(0.5)  # no offer: the population mean
    # push opens: user 2's open is unknown (not a trial); user 4 2/2: one user, m = 1 -> m (1 - m) = 0,
    # the strength is undefined -> the smallest, 2; the posterior is 1 for every user
    assert r[2]["push_open_rate"] == pytest.approx(1.0)
    assert r[4]["push_open_rate"] == pytest.approx(1.0)
    # sms: user 1's bundle offer, not opened: m = 0 -> every sms open rate is 0
    assert r[1]["sms_open_rate"] == 0 and r[3]["sms_open_rate"] == 0
    # bundle clicks per open: no opened bundle offer at all -> Beta(1, 1): 0.5 for everybody
    assert {u: v["bundle_click_rate"] for u, v in r.items()} == dict.fromkeys(r, 0.5)
    # organic discount share: user 1 1/1, user 2 1/2, user 4 no organic purchase
    # (its only purchase came through a push): it gets the prior mean (1 + 0.5) / 2
    assert r[4]["organic_discount_share"] == pytest.approx(0.75)
    # offer-driven discount share: user 1 0/1, user 4 1/1; m = 0.5, var 1/4, dispersion 1, mean 1/n 1
    # -> undefined, strength 2: user 1 (0 + 1) / 3
    assert r[1]["offer_discount_share"] == pytest.approx(1 / 3)
    assert r[4]["offer_discount_share"] == pytest.approx(2 / 3)
    # user 3: no zone row -> UTC, whose releases are 09:00 (09:00, 15:00 - 6 h, ...)
    assert r[3]["local_release_hour"] == pytest.approx(9.0)
    # user 1 in Tokyo: offers at 00:00 UTC and 01:00 UTC minus 1 h, 00:00 UTC on the 3rd and 13th
    assert r[1]["local_release_hour"] == pytest.approx(9.0)
    # preferred hours: user 2's sessions at 18:00 and 18:30 UTC -> a resultant of length
    # 2 cos(3.75 degrees); user 3 one session, length 1
    assert r[2]["preferred_hour_certainty"] == pytest.approx(2 * math.cos(math.radians(3.75)))
    assert r[3]["preferred_hour_certainty"] == pytest.approx(1.0)
    # user 4: one organic session (five views at 21:00); the push brought the other
    assert r[4]["preferred_hour_certainty"] == pytest.approx(1.0)
    # category focus: never below the population's top share's prior part, in (0, 1]
    assert all(0 < v["category_focus_posterior"] <= 1 for v in r.values())
    # order values shrink towards the typical basket: between the user's own and the others'
    assert 20 < r[1]["order_value"] < 50 < 100


def test_an_empty_date_gives_the_documented_defaults(fdb: Connection, settings: Settings) -> None:
    """One user with a single view and nothing else: every prior falls back to its documented default."""
    insert(fdb, events=[(9, "9a", _at(14, 12), "view", None, "app", None, None, None)], offers=[], zones={})
    build_features(fdb, settings, AS_OF)
    r = rows(fdb)[9]
    for c in PRIOR_FEATURE_COLUMNS:
        if c.endswith(("_rate", "_share")):
            assert r[c] == 0.5, c
    assert r["category_focus_posterior"] == 0
    assert r["order_value"] == 0
    assert r["preferred_local_hour"] == pytest.approx(12.0)
    assert r["preferred_hour_certainty"] == pytest.approx(1.0)
    assert r["local_release_hour"] is None


def test_later_data_never_changes_a_date(fdb: Connection, settings: Settings) -> None:
    """Events and offers at or after as_of, and outcomes of offers still in their window, change nothing."""
    insert(fdb)
    build_features(fdb, settings, AS_OF)
    before = rows(fdb)
    later = [
        (1, "1z", _at(15, 0), "purchase", "toys", "web", Decimal(999), True, True),
        (2, "2z", _at(16, 9), "view", "garden", "email", None, None, None),
        (5, "5z", _at(15, 1), "view", "books", "web", None, None, None),
    ]
    late_offers = [
        (1, _at(15, 0), "discount", "email", "immediate", True, True, True),
        (3, _at(20, 0), "bundle", "sms", "immediate", True, True, True),
    ]
    insert(fdb, events=later, offers=late_offers, zones={5: "Europe/Berlin"})
    with fdb.cursor() as cur:  # the outcome of an offer in its window is reported late
        cur.execute("update recsys.offer_history set converted = false where sent_at = %s", (_at(13, 0),))
    fdb.commit()
    build_features(fdb, settings, AS_OF)
    after = rows(fdb)
    assert sorted(after) == sorted(before)
    for u in before:
        for c in PRIOR_FEATURE_COLUMNS:
            assert after[u][c] == before[u][c], (u, c)


def test_own_offers_count_by_the_dates_clock_not_the_wall_clock(fdb: Connection, settings: Settings) -> None:
    """The system's own offer whose window closed before the date counts with its outcome even when
    the wall clock has not reached the window's end (a date built ahead of time): the row equals the
    one the same offer gives as a past campaign's, and a still-open window's events are not read."""
    as_of = datetime.now(UTC).date() + timedelta(days=30)
    midnight = datetime(as_of.year, as_of.month, as_of.day, tzinfo=UTC)
    judged_at, open_at = midnight - timedelta(days=10), midnight - timedelta(days=1)
    sender_support.reset(fdb)
    insert(
        fdb,
        events=[(1, "1a", midnight - timedelta(days=2), "view", "toys", "web", None, None, None)],
        offers=[],
        zones={},
    )
    try:
        # user 1 (a view two days before the date): an email opened and clicked 10 days before the
        # date (its window closed 7 days before it), and an sms of the day before, clicked, whose
        # window is still open at the date
        ids = sender_support.published_offers(fdb, as_of - timedelta(days=10), 1, channel="email")
        sender_support.add_run(fdb, "r2", as_of - timedelta(days=1))
        ids += sender_support.add_offers(fdb, "r2", as_of - timedelta(days=1), 1, 1, channel="sms")
        with fdb.cursor() as cur:
            for offer_id, sent_at in zip(ids, (judged_at, open_at), strict=True):
                cur.execute(
                    "update recsys.campaign_offers set status = 'sent', sent_at = %s where offer_id = %s",
                    (sent_at, offer_id),
                )
                cur.execute(
                    "insert into recsys.offer_events (offer_id, event, event_at) values (%s, 'opened', %s), "
                    "(%s, 'clicked', %s)",
                    (offer_id, sent_at + timedelta(hours=1), offer_id, sent_at + timedelta(hours=2)),
                )
        fdb.commit()
        build_features(fdb, settings, as_of)
        own = rows(fdb, as_of)
        sender_support.reset(fdb)
        # the same contacts as a past campaign's: the email with its outcome, the sms without one
        insert(
            fdb,
            events=[],
            zones={},
            offers=[
                (1, judged_at, "discount", "email", "immediate", True, True, False),
                (1, open_at, "discount", "sms", "immediate", None, None, None),
            ],
        )
        build_features(fdb, settings, as_of)
        history = rows(fdb, as_of)
    finally:
        fdb.rollback()
        sender_support.reset(fdb)
    assert sorted(own) == sorted(history) == [1]
    assert own[1]["email_click_rate"] > own[1]["sms_click_rate"]  # the email's click was read, the sms's not
    for c in own[1]:
        assert own[1][c] == history[1][c], c


def test_backfill_rebuilds_only_the_dates_built_before_the_new_columns(fdb: Connection, settings: Settings) -> None:
    insert(fdb)
    build_features(fdb, settings, AS_OF)
    build_features(fdb, settings, AS_OF - timedelta(days=1))
    build_features(fdb, settings, AS_OF - timedelta(days=2))
    with fdb.cursor() as cur:  # two dates as a database before migration 013 holds them
        cur.execute(
            sql.SQL("update recsys.user_features set {} where as_of < %s").format(
                sql.SQL(", ").join(sql.SQL("{} = null").format(sql.Identifier(c)) for c in PRIOR_FEATURE_COLUMNS)
            ),
            (AS_OF,),
        )
    fdb.commit()
    kept = rows(fdb)
    built = backfill_features(fdb, settings)
    assert [b.as_of for b in built] == [AS_OF - timedelta(days=2), AS_OF - timedelta(days=1)]
    assert rows(fdb) == kept  # the up-to-date date is not rebuilt
    assert all(r["email_open_rate"] is not None for r in rows(fdb, AS_OF - timedelta(days=1)).values())
    assert backfill_features(fdb, settings) == []
    # since bounds it
    with fdb.cursor() as cur:
        cur.execute("update recsys.user_features set email_open_rate = null")
    fdb.commit()
    assert [b.as_of for b in backfill_features(fdb, settings, since=AS_OF)] == [AS_OF]


def _spread_shop() -> tuple[list, list]:
    """Four users whose rates, baskets and interests spread a little more than chance: priors of a
    strength inside the bounds."""
    events, offers = [], []
    opens = {11: 8, 12: 2, 13: 5, 14: 5}
    baskets = {11: (15, 40), 12: (40, 110), 13: (20, 45), 14: (60, 130)}
    books = {11: 6, 12: 4, 13: 5, 14: 9}
    for u in opens:
        for i in range(10):
            offers.append((u, _at(1, i), "discount", "email", "immediate", i < opens[u], False, None))
        for j, amount in enumerate(baskets[u]):
            s = f"{u}p{j}"
            events.append((u, s, _at(5 + j, 10 + u % 5), "purchase", None, "web", Decimal(amount), False, False))
        for k in range(10):
            cat = "books" if k < books[u] else "toys"
            events.append((u, f"{u}v", _at(8, 12 + k / 100), "view", cat, "web", None, None, None))
    return events, offers


def test_priors_of_a_strength_inside_the_bounds(fdb: Connection, settings: Settings) -> None:
    events, offers = _spread_shop()
    insert(fdb, events=events, offers=offers, zones={})
    build_features(fdb, settings, AS_OF)
    got = rows(fdb)
    # email opens 8/10, 2/10, 5/10, 5/10: m = 0.5, var = 0.045, dispersion 0.18, mean 1/n 0.1 ->
    # rho = (0.18 - 0.1) / 0.9, kappa = 1 / rho - 1 = 10.25; user 11: (8 + 10.25 x 0.5) / (10 + 10.25)
    assert got[11]["email_open_rate"] == pytest.approx((8 + 10.25 * 0.5) / 20.25)
    assert got[12]["email_open_rate"] == pytest.approx((2 + 10.25 * 0.5) / 20.25)
    assert_close(got, reference(events, offers, {}))
    # the email open rate, the category focus and the order value had a strength inside the bounds
    inside = [k for k in STRENGTHS if LO < k < HI]
    assert len(inside) >= 3, STRENGTHS
