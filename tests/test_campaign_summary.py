"""Analyst views over campaigns: v_campaign_summary (counts, purchase rates, lift and its interval
against hand-computed numbers) and the system's own offers in v_offer_log."""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal

import pytest
import sender_support as s

from recsys.config.settings import Settings
from recsys.db import Connection, fetch_all, fetch_value

DAY = dt.date(2026, 11, 1)
MIDNIGHT = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


@pytest.fixture
def cdb(cdb: Connection) -> Connection:
    """conftest's cdb, without behaviour or past campaigns of earlier tests (this module's purchases, or
    another module's shop): the features built here read only this test's rows, the population's
    priors included."""
    with cdb.cursor() as cur:
        cur.execute("truncate recsys.behavior_events, recsys.offer_history")
    cdb.commit()
    return cdb


def purchase(conn: Connection, user_id: int, at: dt.datetime) -> None:
    with conn.cursor() as cur:
        cur.execute("select recsys.ensure_event_partitions(%s, %s)", (at, at))
        cur.execute(
            "insert into recsys.behavior_events (event_id, user_id, session_id, event_at, action, amount, load_id) "
            "values (%s, %s, %s, %s, 'purchase', 20, %s)",
            (f"summary-{user_id}-{at:%Y%m%d%H%M}", user_id, f"summary-{user_id}", at, s.load_id(conn)),
        )
    conn.commit()


def holdout(conn: Connection, first: int, last: int, channel: str, offer_type: str, timing: str, segment: str) -> None:
    with conn.cursor() as cur:
        cur.execute(
            """
            insert into recsys.campaign_holdout (
                run_id, campaign_date, user_id, action_id, offer_type, offer_value, channel, timing,
                features_as_of, segment
            )
            select 'r', %s, g, 1, %s, 10, %s, %s, %s, %s from generate_series(%s::bigint, %s::bigint) as g
            """,
            (DAY, offer_type, channel, timing, DAY, segment, first, last),
        )
    conn.commit()


def event(conn: Connection, offer_id: int, name: str, at: dt.datetime, revenue: float | None = None) -> None:
    with conn.cursor() as cur:
        cur.execute("select recsys.record_offer_event(%s, %s, %s, %s)", (offer_id, name, at, revenue))
    conn.commit()


def mark_sent(conn: Connection, sent_at: dict[int, dt.datetime]) -> None:
    """Offers marked sent at the given times (offer id -> sent_at), as if a sender had acked them then."""
    with conn.cursor() as cur:
        for oid, at in sent_at.items():
            cur.execute(
                "update recsys.campaign_offers set status = 'sent', sent_at = %s where offer_id = %s", (at, oid)
            )
    conn.commit()


def test_campaign_summary_counts_rates_and_lift(cdb: Connection) -> None:
    s.add_users(cdb, 1, 40)
    s.add_run(cdb, "r", DAY)
    # group A: 10 treated (users 1-10), 5 held out (users 11-15) with the same would-be action
    a = s.add_offers(cdb, "r", DAY, 1, 10, segment="loyal")
    holdout(cdb, 11, 15, "email", "discount", "immediate", "loyal")
    # group B: 3 treated by sms, nobody held out; group C: only held out
    s.add_offers(cdb, "r", DAY, 21, 23, channel="sms", offer_type="free_shipping", timing="delay_1hour")
    holdout(cdb, 31, 32, "push", "bundle", "delay_6hours", "new")
    with cdb.cursor() as cur:
        # sent on the campaign date, before the events reported for them (events come after the send)
        cur.execute(
            "update recsys.campaign_offers set status = 'sent', sent_at = %s where user_id <= 8",
            (MIDNIGHT + dt.timedelta(hours=8),),
        )
    cdb.commit()

    # purchases in [Nov 1 00:00 UTC, Nov 4 00:00 UTC): treated 1-4 (4 of 10), holdout 11 (1 of 5)
    for u in (1, 2, 3):
        purchase(cdb, u, MIDNIGHT + dt.timedelta(hours=10))
    purchase(cdb, 4, MIDNIGHT + dt.timedelta(days=3) - dt.timedelta(seconds=1))
    purchase(cdb, 4, MIDNIGHT + dt.timedelta(hours=30))  # a second purchase counts the user once
    purchase(cdb, 11, MIDNIGHT)
    purchase(cdb, 5, MIDNIGHT + dt.timedelta(days=3))  # the window is over
    purchase(cdb, 12, MIDNIGHT - dt.timedelta(seconds=1))  # before the campaign date
    for oid in a[:2]:
        event(cdb, oid, "delivered", MIDNIGHT + dt.timedelta(hours=9))
    event(cdb, a[0], "opened", MIDNIGHT + dt.timedelta(hours=10))
    event(cdb, a[0], "converted", MIDNIGHT + dt.timedelta(hours=11), 12.5)

    rows = {
        (r["channel"], r["offer_type"], r["timing"], r["segment"]): r
        for r in fetch_all(cdb, "select * from recsys.v_campaign_summary where run_id = 'r'")
    }
    assert set(rows) == {
        ("email", "discount", "immediate", "loyal"),
        ("sms", "free_shipping", "delay_1hour", None),
        ("push", "bundle", "delay_6hours", "new"),
    }
    ga = rows["email", "discount", "immediate", "loyal"]
    assert (ga["offers"], ga["sent"], ga["delivered"], ga["opened"], ga["clicked"], ga["converted"]) == (
        10, 8, 2, 1, 0, 1,
    )  # fmt: skip
    assert ga["revenue"] == Decimal("12.50")
    assert (ga["treated_users"], ga["holdout_users"], ga["campaign_date"]) == (10, 5, DAY)
    assert ga["treated_purchase_rate"] == pytest.approx(0.4)
    assert ga["holdout_purchase_rate"] == pytest.approx(0.2)
    assert ga["lift"] == pytest.approx(0.2)
    # by hand: se = sqrt(0.4 * 0.6 / 10 + 0.2 * 0.8 / 5) = sqrt(0.056) = 0.2366432; 1.959964 * se = 0.4638122
    assert math.sqrt(0.056) == pytest.approx(0.2366432, abs=1e-7)
    assert ga["lift_ci_low"] == pytest.approx(0.2 - 0.4638122, abs=1e-6)
    assert ga["lift_ci_high"] == pytest.approx(0.2 + 0.4638122, abs=1e-6)
    assert ga["is_window_closed"] is True

    gb = rows["sms", "free_shipping", "delay_1hour", None]
    assert (gb["offers"], gb["sent"], gb["treated_users"], gb["holdout_users"]) == (3, 0, 3, 0)
    assert gb["treated_purchase_rate"] == 0.0
    assert (gb["holdout_purchase_rate"], gb["lift"], gb["lift_ci_low"], gb["lift_ci_high"]) == (None,) * 4
    gc = rows["push", "bundle", "delay_6hours", "new"]
    assert (gc["offers"], gc["treated_users"], gc["holdout_users"], gc["revenue"]) == (0, 0, 2, Decimal("0.00"))
    assert (gc["treated_purchase_rate"], gc["holdout_purchase_rate"], gc["lift"]) == (None, 0.0, None)

    assert fetch_value(cdb, "select has_table_privilege('recsys_analyst', 'recsys.v_campaign_summary', 'select')")
    assert "lift" in fetch_value(cdb, "select obj_description('recsys.v_campaign_summary'::regclass, 'pg_class')")


def test_offer_log_carries_own_offers_once_their_window_closed(cdb: Connection) -> None:
    old, old_quiet, recent = s.published_offers(cdb, DAY, 3)
    now = fetch_value(cdb, "select now()")
    cdb.commit()
    sent = {old: now - dt.timedelta(days=4), old_quiet: now - dt.timedelta(days=5), recent: now - dt.timedelta(days=1)}
    mark_sent(cdb, sent)
    event(cdb, old, "clicked", sent[old] + dt.timedelta(hours=2))
    event(cdb, old, "converted", sent[old] + dt.timedelta(days=1), 30)
    event(cdb, old_quiet, "converted", sent[old_quiet] + dt.timedelta(days=3, seconds=1), 99)  # too late
    event(cdb, recent, "opened", sent[recent] + dt.timedelta(hours=1))
    event(cdb, old_quiet, "unsubscribed", sent[old_quiet] + dt.timedelta(hours=5))

    rows = fetch_all(cdb, "select * from recsys.v_offer_log where source = 'campaign' order by sent_at")
    assert [r["offer_id"] for r in rows] == [str(old_quiet), str(old)]  # the recent one is not final yet
    q, o = rows
    assert (o["opened"], o["clicked"], o["converted"], o["revenue"]) == (True, True, True, Decimal("30.00"))
    # no open was reported, but the unsubscribe came from reading it
    assert (q["opened"], q["clicked"], q["converted"], q["revenue"]) == (True, False, False, Decimal("0.00"))
    assert (q["unsubscribed"], o["unsubscribed"]) == (True, False)
    assert (o["user_id"], o["features_as_of"], o["propensity"], o["channel"], o["timing"]) == (
        1, DAY, 0.25, "email", "immediate",
    )  # fmt: skip
    assert o["offer_value"] == Decimal("10.00")
    # v_logged_offers reads it too (no features were built for that date here)
    assert fetch_value(cdb, "select count(*) from recsys.v_logged_offers where source = 'campaign'") == 2
    assert fetch_value(cdb, "select count(*) from recsys.v_logged_offers where unsubscribed") == 1


def test_own_offers_are_contacts_at_once_and_evidence_once_final(cdb: Connection, settings: Settings) -> None:
    """Features count an own offer sent yesterday in offers_last_7d and days_since_last_offer (the
    user is fatigued now), but its click outcome only once its attribution window closed."""
    from recsys.data.features import build_features

    s.add_users(cdb, 1, 1)
    now = fetch_value(cdb, "select now()")
    today = now.astimezone(dt.UTC).date()
    purchase(cdb, 1, now - dt.timedelta(days=2))
    s.add_run(cdb, "old", today - dt.timedelta(days=5))
    s.add_run(cdb, "new", today - dt.timedelta(days=1))
    (old,) = s.add_offers(cdb, "old", today - dt.timedelta(days=5), 1, 1)
    (new,) = s.add_offers(cdb, "new", today - dt.timedelta(days=1), 1, 1)
    sent = {old: now - dt.timedelta(days=5), new: now - dt.timedelta(days=1)}
    mark_sent(cdb, sent)
    event(cdb, old, "clicked", sent[old] + dt.timedelta(hours=1))
    assert fetch_value(cdb, "select count(*) from recsys.v_offer_log where source = 'campaign'") == 1  # not final

    as_of = today + dt.timedelta(days=1)
    build_features(cdb, settings, as_of)
    (f,) = fetch_all(cdb, "select * from recsys.user_features where as_of = %s and user_id = 1", (as_of,))
    assert f["offers_last_7d"] == 2
    midnight = dt.datetime.combine(as_of, dt.time(), dt.UTC)
    assert f["days_since_last_offer"] == pytest.approx((midnight - sent[new]).total_seconds() / 86400)
    # responsiveness from the final offer only: (1 click + 4 x prior 1/3) / (1 offer + 4); with the
    # open one counted as a known non-click it would be (1 + 4/3) / 6
    assert f["email_responsiveness"] == pytest.approx((1 + 4 / 3) / 5)
