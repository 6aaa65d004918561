"""Bounds of the sender protocol (contract section 3): events only for claimed offers and at
plausible times, leases and retry delays clamped to their documented maxima, and a hard bounce
that suppresses the address until the user's address changes. Called as a sender would, against
the real PostgreSQL; users files go through the real loader."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import psycopg2.errors
import pytest
import sender_support as s
from sender_support import call, claim

from recsys.config.settings import Settings
from recsys.data.extract import extract_path
from recsys.db import Connection, connect, fetch_all, fetch_value

DAY = dt.date(2026, 11, 21)
LEASE = dt.timedelta(minutes=5)
USERS_HEADER = "user_id,email_opt_in,sms_opt_in,push_opt_in,email,phone,push_token,timezone,first_name,updated_at"


@pytest.fixture
def cdb(cdb: Connection) -> Iterator[Connection]:
    """conftest's cdb, emptied again afterwards: no suppressed address may reach another test's users."""
    yield cdb
    cdb.rollback()
    s.reset(cdb)


def record(conn: Connection, offer_id: int, event: str, at: dt.datetime | str) -> bool:
    return bool(call(conn, "select recsys.record_offer_event(%s, %s, %s, null)", offer_id, event, at))


def refused(conn: Connection, offer_id: int, event: str, at: dt.datetime | str, match: str) -> None:
    with pytest.raises(psycopg2.errors.InvalidParameterValue, match=match):
        fetch_value(conn, "select recsys.record_offer_event(%s, %s, %s, null)", (offer_id, event, at))
    conn.rollback()


def now(conn: Connection) -> dt.datetime:
    value = fetch_value(conn, "select now()")
    conn.commit()
    return value


def users_file(conn: Connection, settings: Settings, path: Path, *rows: str) -> None:
    path.write_text("\n".join([USERS_HEADER, *rows]) + "\n", encoding="utf-8")
    (result,) = extract_path(conn, settings, path)
    assert result.status == "loaded" and result.total("rejected") == 0, result.describe()


# --------------------------------------------------------------------------------------------
# record_offer_event: claimed offers only, event_at within [first claim, now] (+- the skew)


def test_events_of_never_claimed_offers_are_refused_and_write_nothing(cdb: Connection) -> None:
    s.add_users(cdb, 1, 2)
    s.add_users(cdb, 3, 3, opt_in=False)
    s.add_users(cdb, 4, 4)
    s.add_run(cdb, "r", DAY)
    (waiting,) = s.add_offers(cdb, "r", DAY, 1, 1, due_in=dt.timedelta(hours=2))  # not due yet
    sent, cancelled = s.add_offers(cdb, "r", DAY, 2, 3)  # user 3 no longer consents
    (expired,) = s.add_offers(cdb, "r", DAY, 4, 4, due_in=dt.timedelta(hours=-3), valid_for=dt.timedelta(hours=2))
    assert [r["offer_id"] for r in claim(cdb, "w1")] == [sent]
    assert s.statuses(cdb) == {"scheduled": 1, "claimed": 1, "cancelled": 1, "expired": 1}
    t = now(cdb)
    for offer_id, event in ((waiting, "opened"), (cancelled, "unsubscribed"), (expired, "bounced")):
        refused(
            cdb, offer_id, event, t, rf"{event} of offer {offer_id} refused: the offer was never claimed by a sender"
        )
    assert fetch_value(cdb, "select count(*) from recsys.offer_events") == 0
    assert fetch_value(cdb, "select count(*) from recsys.consent_revocations") == 0
    assert fetch_value(cdb, "select count(*) from recsys.address_suppressions") == 0
    assert fetch_value(cdb, "select email_opt_in from recsys.users where user_id = 1") is True
    # a provider's report may come before the sender's ack: claimed is enough
    assert record(cdb, sent, "delivered", t) is True


def test_event_at_lies_between_the_first_claim_and_now(cdb: Connection) -> None:
    (oid,) = s.published_offers(cdb, DAY, 1)
    claim(cdb, "w1")
    at = "select first_claimed_at, claimed_at from recsys.campaign_offers where offer_id = %s"
    (row,) = fetch_all(cdb, at, (oid,))
    assert row["first_claimed_at"] == row["claimed_at"] is not None
    # as if that claim was an hour ago and its lease ran out: a second claim keeps the first's time
    call(cdb, "update recsys.campaign_offers set first_claimed_at = claimed_at - interval '1 hour', "
              "claimed_at = claimed_at - interval '1 hour' returning 1")  # fmt: skip
    s.end_leases(cdb)
    assert [r["offer_id"] for r in claim(cdb, "w2")] == [oid]
    (row,) = fetch_all(cdb, at, (oid,))
    first = row["first_claimed_at"]
    assert row["claimed_at"] - first >= dt.timedelta(hours=1)

    t = now(cdb)
    future = rf"opened of offer {oid} at .* refused: in the future .*5 minute clock skew"
    refused(cdb, oid, "opened", t + dt.timedelta(days=1), future)
    refused(cdb, oid, "clicked", t + dt.timedelta(minutes=6), rf"clicked of offer {oid} at .* refused: in the future")
    before = rf"delivered of offer {oid} at .* refused: before the offer's first claim at .*5 minute clock skew"
    refused(cdb, oid, "delivered", first - dt.timedelta(minutes=6), before)
    assert fetch_value(cdb, "select count(*) from recsys.offer_events") == 0
    # within the skew on either side, and a late report of the first attempt: accepted
    assert record(cdb, oid, "delivered", first - dt.timedelta(minutes=4)) is True
    assert record(cdb, oid, "opened", first + dt.timedelta(minutes=30)) is True
    assert record(cdb, oid, "clicked", t + dt.timedelta(minutes=4)) is True
    assert fetch_value(cdb, "select count(*) from recsys.offer_events") == 3


def test_a_far_future_unsubscribe_no_longer_freezes_the_users_row(
    cdb: Connection, settings: Settings, tmp_path: Path
) -> None:
    (oid,) = s.published_offers(cdb, DAY, 1)
    claim(cdb, "w1")
    far = dt.datetime(2036, 1, 1, tzinfo=dt.UTC)
    refused(cdb, oid, "unsubscribed", far, f"unsubscribed of offer {oid} at .* refused: in the future")
    assert fetch_value(cdb, "select updated_at from recsys.users where user_id = 1") == dt.datetime(
        2026, 1, 1, tzinfo=dt.UTC
    )
    # the next users file, written an hour ago, still updates the user
    at = (now(cdb) - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    users_file(
        cdb, settings, tmp_path / "users_1.csv", f"1,true,true,true,new1@example.com,+15550000001,tok1,UTC,Ann,{at}"
    )
    row = fetch_all(cdb, "select email, first_name, email_opt_in from recsys.users where user_id = 1")[0]
    assert (row["email"], row["first_name"], row["email_opt_in"]) == ("new1@example.com", "Ann", True)


# --------------------------------------------------------------------------------------------
# Leases and retry delays


def test_a_lease_longer_than_one_hour_is_clamped(cdb: Connection) -> None:
    long_one, short_one = s.published_offers(cdb, DAY, 2)
    call(cdb, "update recsys.campaign_offers set scheduled_at = scheduled_at - interval '1 minute' "
              "where offer_id = %s returning 1", long_one)  # fmt: skip
    fetch_all(cdb, "select * from recsys.claim_offers('email', 'w1', 1, interval '3 days')")
    cdb.commit()
    claim(cdb, "w2", lease=dt.timedelta(minutes=30))
    leases = {
        r["offer_id"]: r["lease"]
        for r in fetch_all(cdb, "select offer_id, lease_until - claimed_at as lease from recsys.campaign_offers")
    }
    assert leases == {long_one: dt.timedelta(hours=1), short_one: dt.timedelta(minutes=30)}


def test_retry_after_is_clamped_to_a_day_and_never_outlives_the_offer(cdb: Connection) -> None:
    week, past, short = s.published_offers(cdb, DAY, 3, valid_for=dt.timedelta(days=30))
    call(cdb, "update recsys.campaign_offers set expires_at = now() + interval '2 hours' where offer_id = %s "
              "returning 1", short)  # fmt: skip
    claim(cdb, "w1")
    fail = "select recsys.fail_offer(%s, 'w1', %s, %s)"
    assert call(cdb, fail, week, "provider: Retry-After 7 days", dt.timedelta(days=7)) is True
    assert call(cdb, fail, past, "provider: Retry-After date already past", dt.timedelta(hours=-1)) is True
    assert call(cdb, fail, short, "provider: Retry-After 3 hours", dt.timedelta(hours=3)) is True
    rows = {
        r["offer_id"]: r
        for r in fetch_all(
            cdb, "select offer_id, status, lease_until - updated_at as wait, last_error from recsys.campaign_offers"
        )
    }
    assert (rows[week]["status"], rows[week]["wait"]) == ("scheduled", dt.timedelta(hours=24))
    assert (rows[past]["status"], rows[past]["wait"]) == ("scheduled", dt.timedelta(0))  # retried at once
    assert (rows[short]["status"], rows[short]["wait"]) == ("expired", None)
    assert (
        rows[short]["last_error"] == "provider: Retry-After 3 hours (no retry: it would come after the offer expires)"
    )
    assert [r["offer_id"] for r in claim(cdb, "w2")] == [past]


# --------------------------------------------------------------------------------------------
# Bounces


def test_a_bounced_address_is_not_sent_to_until_the_address_changes(
    cdb: Connection, settings: Settings, tmp_path: Path
) -> None:
    s.add_users(cdb, 1, 3)
    days = [DAY + dt.timedelta(days=i) for i in range(4)]
    for i, day in enumerate(days):
        s.add_run(cdb, f"r{i}", day)
    first = dict(zip((1, 2, 3), s.add_offers(cdb, "r0", days[0], 1, 3), strict=True))
    assert {r["offer_id"]: r["address"] for r in claim(cdb, "w1")} == {
        first[1]: "u1@example.com",
        first[2]: "u2@example.com",
        first[3]: "u3@example.com",
    }
    for oid in first.values():
        assert call(cdb, "select recsys.ack_offer(%s, 'w1')", oid) is True
    # user 2 gives a new address after the send; the bounce is about the address the offer went to
    call(cdb, "update recsys.users set email = 'new2@example.com' where user_id = 2 returning 1")
    t = now(cdb)
    assert record(cdb, first[1], "bounced", t) is True
    assert record(cdb, first[2], "bounced", t) is True
    assert record(cdb, first[1], "bounced", t) is False  # the first report wins; nothing changes

    # the next night: user 1's address bounced, user 2 is reached at the new one, user 3 as before
    second = dict(zip((1, 2, 3), s.add_offers(cdb, "r1", days[1], 1, 3), strict=True))
    assert {r["user_id"]: r["address"] for r in claim(cdb, "w1")} == {2: "new2@example.com", 3: "u3@example.com"}
    cancelled = fetch_all(
        cdb, "select status, last_error from recsys.campaign_offers where offer_id = %s", (second[1],)
    )
    assert cancelled[0]["status"] == "cancelled"
    assert "email address is suppressed (it bounced)" in cancelled[0]["last_error"]
    suppressions = fetch_all(
        cdb,
        "select channel, address, reason, offer_id, user_id, suppressed_at from recsys.address_suppressions "
        "order by address",
    )
    assert [tuple(r.values()) for r in suppressions] == [
        ("email", "u1@example.com", "bounced", first[1], 1, t),
        ("email", "u2@example.com", "bounced", first[2], 2, t),
    ]
    # a users file with the same address written differently: still suppressed
    users_file(cdb, settings, tmp_path / "users_same.csv", "1,true,true,true, U1@Example.COM ,+15550000001,tok1,UTC,,")
    (third,) = s.add_offers(cdb, "r2", days[2], 1, 1)
    assert claim(cdb, "w1") == []
    assert call(cdb, "select status from recsys.campaign_offers where offer_id = %s", third) == "cancelled"
    # a new address lifts it; the bounce on email leaves the user's sms alone
    users_file(cdb, settings, tmp_path / "users_new.csv", "1,true,true,true,ann@example.org,+15550000001,tok1,UTC,,")
    (fourth,) = s.add_offers(cdb, "r3", days[3], 1, 1)
    assert [(r["offer_id"], r["address"]) for r in claim(cdb, "w1")] == [(fourth, "ann@example.org")]


def test_a_bounce_keys_phone_numbers_as_written_differently(cdb: Connection) -> None:
    s.add_users(cdb, 1, 1)
    s.add_run(cdb, "r", DAY)
    s.add_run(cdb, "r2", DAY + dt.timedelta(days=1))
    (oid,) = s.add_offers(cdb, "r", DAY, 1, 1, channel="sms")
    call(cdb, "update recsys.users set phone = '+1 (555) 000-0001' where user_id = 1 returning 1")
    assert [r["address"] for r in claim(cdb, "w1", channel="sms")] == ["+1 (555) 000-0001"]
    assert record(cdb, oid, "bounced", now(cdb)) is True
    assert call(cdb, "select address from recsys.address_suppressions") == "+15550000001"
    call(cdb, "update recsys.users set phone = '+15550000001' where user_id = 1 returning 1")
    s.add_offers(cdb, "r2", DAY + dt.timedelta(days=1), 1, 1, channel="sms")
    assert claim(cdb, "w1", channel="sms") == []
    assert s.statuses(cdb) == {"claimed": 1, "cancelled": 1}


# --------------------------------------------------------------------------------------------
# Races between workers: two real connections, the second call blocked on the first's row lock


def blocked_call(conn: Connection, watcher: Connection, query: str, *params: object) -> Future[object]:
    """Run `query` on `conn` in a thread and return once its backend waits on a lock (or finished)."""
    pid = conn.get_backend_pid()
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(call, conn, query, *params)
    pool.shutdown(wait=False)
    while not future.done():
        waiting = fetch_value(watcher, "select wait_event_type = 'Lock' from pg_stat_activity where pid = %s", (pid,))
        watcher.commit()
        if waiting:
            break
        time.sleep(0.01)
    return future


def test_a_late_fail_cannot_overwrite_another_workers_fresh_claim(migrated_url: str, cdb: Connection) -> None:
    """A's lease runs out, B claims the offer (not yet committed), A's fail_offer waits for B's row
    lock: once B commits, A no longer holds the claim, so its fail is refused and B's ack stands."""
    (oid,) = s.published_offers(cdb, DAY, 1)
    assert [r["offer_id"] for r in claim(cdb, "A")] == [oid]
    s.end_leases(cdb)
    with connect(migrated_url) as a, connect(migrated_url) as b:
        taken = fetch_all(b, "select * from recsys.claim_offers('email', 'B', 10, %s)", (LEASE,))
        assert [r["offer_id"] for r in taken] == [oid]  # B's transaction stays open, holding the row
        late_fail = blocked_call(a, cdb, "select recsys.fail_offer(%s, 'A', 'late failure', null)", oid)
        b.commit()
        assert late_fail.result(timeout=60) is False
    row = fetch_all(cdb, "select status, claimed_by, attempts from recsys.campaign_offers")[0]
    assert (row["status"], row["claimed_by"], row["attempts"]) == ("claimed", "B", 2)
    assert call(cdb, "select recsys.ack_offer(%s, 'B')", oid) is True
    assert s.statuses(cdb) == {"sent": 1}


def test_a_late_ack_cannot_take_another_workers_fresh_claim(migrated_url: str, cdb: Connection) -> None:
    (oid,) = s.published_offers(cdb, DAY, 1)
    claim(cdb, "A")
    s.end_leases(cdb)
    with connect(migrated_url) as a, connect(migrated_url) as b:
        fetch_all(b, "select * from recsys.claim_offers('email', 'B', 10, %s)", (LEASE,))
        late_ack = blocked_call(a, cdb, "select recsys.ack_offer(%s, 'A')", oid)
        b.commit()
        assert late_ack.result(timeout=60) is False
    assert call(cdb, "select recsys.ack_offer(%s, 'B')", oid) is True
    assert s.statuses(cdb) == {"sent": 1}
