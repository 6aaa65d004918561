"""The sender protocol's SQL functions (contract section 3), called as a sender would, and the
security bar: a real login as the sender role can call them and read or change nothing else."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from decimal import Decimal

import psycopg2
import psycopg2.errors
import pytest
import sender_support as s
from psycopg2 import sql
from psycopg2.extensions import make_dsn, parse_dsn
from sender_support import call, claim

from recsys.config.settings import load_settings
from recsys.db import Connection, connect, fetch_all, fetch_value
from recsys.db.migrate import SENDER_FUNCTIONS, migrate
from recsys.sender.protocol import ProtocolClient

DAY = dt.date(2026, 11, 20)
LEASE = dt.timedelta(minutes=5)


def claimed_at(conn: Connection, at: dt.datetime, channel: str = "email") -> list[int]:
    """Claim every due offer of the channel through claim_offers, then date that claim back to `at`
    (events may only be recorded for claimed offers, from their first claim on)."""
    ids = [r["offer_id"] for r in claim(conn, "w1", 10000, channel)]
    call(
        conn,
        "update recsys.campaign_offers set claimed_at = %s, first_claimed_at = %s where offer_id = any(%s) returning 1",
        at, at, ids,
    )  # fmt: skip
    return ids


def test_claim_returns_due_offers_of_published_runs_only(cdb: Connection) -> None:
    s.add_users(cdb, 1, 30)
    s.add_run(cdb, "pub", DAY)
    s.add_run(cdb, "unpub", DAY + dt.timedelta(days=1), state="scoring")
    due = s.add_offers(cdb, "pub", DAY, 1, 10)
    s.add_offers(cdb, "pub", DAY, 11, 20, due_in=dt.timedelta(hours=1))  # not yet
    s.add_offers(cdb, "unpub", DAY + dt.timedelta(days=1), 1, 10)
    s.add_offers(cdb, "pub", DAY, 21, 30, channel="sms")  # another channel

    rows = claim(cdb)
    assert sorted(r["offer_id"] for r in rows) == due
    r = next(r for r in rows if r["offer_id"] == due[0])
    assert (r["user_id"], r["channel"], r["address"], r["attempts"]) == (1, "email", "u1@example.com", 1)
    assert (r["subject"], r["body"], r["offer_type"]) == ("Offer 1", "<p>Hello 1</p>", "discount")
    assert claim(cdb) == []  # all leased now
    sms = claim(cdb, channel="sms")
    assert [r["address"] for r in sms][:1] == ["+15550000021"]
    held = fetch_all(
        cdb, "select claimed_by, lease_until > now() as live from recsys.campaign_offers where status = 'claimed'"
    )
    assert len(held) == 20 and all(h["live"] for h in held)
    assert {h["claimed_by"] for h in held} == {"w1"}

    # publishing the run makes its offers claimable
    call(cdb, "update recsys.campaign_runs set state = 'published' where run_id = 'unpub' returning 1")
    assert len(claim(cdb)) == 10


def test_claim_respects_max_rows_and_due_order(cdb: Connection) -> None:
    s.add_users(cdb, 1, 10)
    s.add_run(cdb, "r", DAY)
    late = s.add_offers(cdb, "r", DAY, 1, 5, due_in=dt.timedelta(minutes=-1))
    early = s.add_offers(cdb, "r", DAY, 6, 10, due_in=dt.timedelta(minutes=-30))
    assert sorted(r["offer_id"] for r in claim(cdb, n=5)) == early
    assert sorted(r["offer_id"] for r in claim(cdb, n=5)) == late


def test_expired_offers_become_expired(cdb: Connection) -> None:
    s.add_users(cdb, 1, 4)
    s.add_run(cdb, "r", DAY)
    stale = s.add_offers(cdb, "r", DAY, 1, 2, due_in=dt.timedelta(hours=-3), valid_for=dt.timedelta(hours=2))
    fresh = s.add_offers(cdb, "r", DAY, 3, 4)
    assert sorted(r["offer_id"] for r in claim(cdb)) == fresh
    assert fetch_all(cdb, "select offer_id from recsys.campaign_offers where status = 'expired' order by 1") == [
        {"offer_id": i} for i in stale
    ]
    # the sweep does the same for every channel
    s.add_offers(cdb, "r", DAY, 5, 5, channel="push", due_in=dt.timedelta(hours=-3), valid_for=dt.timedelta(hours=1))
    s.add_users(cdb, 5, 5)
    assert call(cdb, "select recsys.expire_offers()") == 1
    assert s.statuses(cdb) == {"claimed": 2, "expired": 3}


def test_lease_expiry_makes_an_offer_claimable_again(cdb: Connection) -> None:
    s.add_users(cdb, 1, 1)
    s.add_run(cdb, "r", DAY)
    (oid,) = s.add_offers(cdb, "r", DAY, 1, 1)
    assert [r["offer_id"] for r in claim(cdb, "w1")] == [oid]
    assert claim(cdb, "w2") == []
    s.end_leases(cdb)
    again = claim(cdb, "w2")
    assert [(r["offer_id"], r["attempts"]) for r in again] == [(oid, 2)]
    # w1 lost the claim: its late ack is refused; w2's ack is accepted, and repeating it is harmless
    assert call(cdb, "select recsys.ack_offer(%s, %s)", oid, "w1") is False
    assert call(cdb, "select recsys.ack_offer(%s, %s)", oid, "w2") is True
    sent_at = call(cdb, "select sent_at from recsys.campaign_offers where offer_id = %s", oid)
    assert call(cdb, "select recsys.ack_offer(%s, %s)", oid, "w2") is True
    assert call(cdb, "select sent_at from recsys.campaign_offers where offer_id = %s", oid) == sent_at
    assert call(cdb, "select recsys.ack_offer(%s, %s)", oid, "w1") is False
    assert s.statuses(cdb) == {"sent": 1}
    s.end_leases(cdb)
    assert claim(cdb, "w3") == []  # sent offers are never claimed again


def test_ack_by_holder_after_its_lease_ran_out_is_accepted_until_reclaimed(cdb: Connection) -> None:
    s.add_users(cdb, 1, 1)
    s.add_run(cdb, "r", DAY)
    (oid,) = s.add_offers(cdb, "r", DAY, 1, 1)
    claim(cdb, "w1")
    s.end_leases(cdb)
    assert call(cdb, "select recsys.ack_offer(%s, %s)", oid, "w1") is True
    assert s.statuses(cdb) == {"sent": 1}


def test_failures_retry_with_back_off_then_give_up(cdb: Connection) -> None:
    s.add_users(cdb, 1, 1)
    s.add_run(cdb, "r", DAY)
    (oid,) = s.add_offers(cdb, "r", DAY, 1, 1, max_attempts=3)
    claim(cdb, "w1")
    assert call(cdb, "select recsys.fail_offer(%s, %s, %s)", oid, "w2", "not mine") is False  # not the holder
    assert call(cdb, "select recsys.fail_offer(%s, %s, %s)", oid, "w1", "smtp 451") is True
    row = fetch_all(
        cdb,
        "select status, attempts, last_error, lease_until - updated_at as backoff from recsys.campaign_offers "
        "where offer_id = %s",
        (oid,),
    )[0]
    assert (row["status"], row["attempts"], row["last_error"]) == ("scheduled", 1, "smtp 451")
    assert row["backoff"] == dt.timedelta(minutes=1)
    assert claim(cdb, "w1") == []  # backing off
    s.end_leases(cdb)
    claim(cdb, "w1")
    assert call(cdb, "select recsys.fail_offer(%s, %s, %s)", oid, "w1", "smtp 451 again") is True
    assert call(cdb, "select lease_until - updated_at from recsys.campaign_offers where offer_id = %s", oid) == (
        dt.timedelta(minutes=2)
    )
    s.end_leases(cdb)
    assert [r["attempts"] for r in claim(cdb, "w1")] == [3]
    assert call(cdb, "select recsys.fail_offer(%s, %s, %s, %s)", oid, "w1", "bounced", dt.timedelta(0)) is True
    row = fetch_all(cdb, "select status, attempts, last_error, lease_until from recsys.campaign_offers")[0]
    assert (row["status"], row["attempts"], row["last_error"], row["lease_until"]) == ("failed", 3, "bounced", None)
    assert claim(cdb, "w1") == []


def test_release_gives_an_untried_claim_back_without_using_an_attempt(cdb: Connection) -> None:
    s.add_users(cdb, 1, 4)
    s.add_run(cdb, "r", DAY)
    now_, later, soon, clamp = s.add_offers(cdb, "r", DAY, 1, 4, max_attempts=1, valid_for=dt.timedelta(days=30))
    call(cdb, "update recsys.campaign_offers set expires_at = now() + interval '2 hours' where offer_id = %s "
              "returning 1", soon)  # fmt: skip
    claim(cdb, "w1")
    release = "select recsys.release_offer(%s, %s, %s, %s)"
    assert call(cdb, release, now_, "w2", None, "not mine") is False  # only the holder gives it back
    assert call(cdb, release, now_, "w1", None, "not tried: smtp down") is True
    assert call(cdb, release, later, "w1", dt.timedelta(minutes=15), None) is True
    assert call(cdb, release, soon, "w1", dt.timedelta(hours=3), "not tried: 503") is True
    assert call(cdb, release, clamp, "w1", dt.timedelta(days=7), "not tried") is True
    assert call(cdb, release, now_, "w1", None, "again") is False  # no longer claimed
    rows = {
        r["offer_id"]: r
        for r in fetch_all(
            cdb,
            "select offer_id, status, attempts, lease_until - updated_at as wait, last_error "
            "from recsys.campaign_offers",
        )
    }
    assert [rows[o]["attempts"] for o in (now_, later, soon, clamp)] == [0, 0, 0, 0]
    assert (rows[now_]["status"], rows[now_]["wait"], rows[now_]["last_error"]) == (
        "scheduled", None, "not tried: smtp down"
    )  # fmt: skip
    assert (rows[later]["status"], rows[later]["wait"], rows[later]["last_error"]) == (
        "scheduled", dt.timedelta(minutes=15), None
    )  # fmt: skip
    assert (rows[soon]["status"], rows[soon]["last_error"]) == (
        "expired", "not tried: 503 (no retry: it would come after the offer expires)"
    )  # fmt: skip
    assert (rows[clamp]["status"], rows[clamp]["wait"]) == ("scheduled", dt.timedelta(hours=24))
    # max_attempts is 1: the released offer is claimed on its one attempt, not failed at claim
    assert [(r["offer_id"], r["attempts"]) for r in claim(cdb, "w2")] == [(now_, 1)]
    with pytest.raises(psycopg2.errors.InvalidParameterValue, match="release_offer: no offer with offer_id -1"):
        fetch_value(cdb, release, (-1, "w1", None, None))
    cdb.rollback()


def test_a_claim_abandoned_on_its_last_attempt_fails(cdb: Connection) -> None:
    s.add_users(cdb, 1, 1)
    s.add_run(cdb, "r", DAY)
    s.add_offers(cdb, "r", DAY, 1, 1, max_attempts=1)
    claim(cdb, "w1")
    s.end_leases(cdb)
    assert claim(cdb, "w2") == []
    row = fetch_all(cdb, "select status, last_error from recsys.campaign_offers")[0]
    assert row["status"] == "failed" and "lease ran out" in row["last_error"]


def test_revoked_consent_or_missing_address_cancels_at_claim(cdb: Connection) -> None:
    s.add_users(cdb, 1, 3)
    s.add_users(cdb, 4, 4, with_address=False)
    s.add_run(cdb, "r", DAY)
    ids = s.add_offers(cdb, "r", DAY, 1, 5)  # user 5 has no users row: no consent at all
    call(cdb, "update recsys.users set email_opt_in = false where user_id = 2 returning 1")
    rows = claim(cdb, n=2)  # cancelled rows do not use up the batch
    assert sorted(r["user_id"] for r in rows) == [1, 3]
    cancelled = fetch_all(
        cdb, "select user_id, last_error from recsys.campaign_offers where status = 'cancelled' order by user_id"
    )
    assert [c["user_id"] for c in cancelled] == [2]
    assert "no longer consents to email" in cancelled[0]["last_error"]
    assert claim(cdb, n=10) == []  # no address, no users row at all: cancelled too
    assert s.statuses(cdb) == {"claimed": 2, "cancelled": 3}
    assert len(ids) == 5


def test_offer_events_are_idempotent_and_unsubscribe_revokes(cdb: Connection) -> None:
    s.add_users(cdb, 1, 2)
    s.add_run(cdb, "r", DAY)
    a, b = s.add_offers(cdb, "r", DAY, 1, 2)
    t1 = dt.datetime(2026, 11, 20, 10, tzinfo=dt.UTC)
    t2 = t1 + dt.timedelta(hours=1)
    claimed_at(cdb, t1 - dt.timedelta(hours=1))
    assert call(cdb, "select recsys.record_offer_event(%s, %s, %s, %s)", a, "opened", t1, None) is True
    assert call(cdb, "select recsys.record_offer_event(%s, %s, %s, %s)", a, "opened", t2, None) is False
    assert call(cdb, "select recsys.record_offer_event(%s, %s, %s, %s)", a, "converted", t2, 42.505) is True
    events = fetch_all(cdb, "select event, event_at, revenue, source from recsys.offer_events order by event")
    assert [(e["event"], e["event_at"], e["revenue"], e["source"]) for e in events] == [
        ("converted", t2, Decimal("42.51"), "sender"),
        ("opened", t1, None, "sender"),  # first report wins
    ]

    assert call(cdb, "select recsys.record_offer_event(%s, %s, %s, %s)", b, "unsubscribed", t2, None) is True
    user = fetch_all(cdb, "select email_opt_in, sms_opt_in, updated_at from recsys.users where user_id = 2")[0]
    assert (user["email_opt_in"], user["sms_opt_in"], user["updated_at"]) == (False, True, t2)
    revocations = fetch_all(cdb, "select user_id, channel, revoked_at, offer_id from recsys.consent_revocations")
    assert revocations == [{"user_id": 2, "channel": "email", "revoked_at": t2, "offer_id": b}]
    with pytest.raises(psycopg2.errors.InvalidParameterValue, match="unknown event nope"):
        fetch_value(cdb, "select recsys.record_offer_event(%s, 'nope', now(), null)", (a,))
    cdb.rollback()
    with pytest.raises(psycopg2.errors.InvalidParameterValue, match="no offer with offer_id 999999"):
        fetch_value(cdb, "select recsys.record_offer_event(999999, 'opened', now(), null)")
    cdb.rollback()
    with pytest.raises(psycopg2.errors.InvalidParameterValue, match="revenue must be >= 0"):
        fetch_value(cdb, "select recsys.record_offer_event(%s, 'converted', now(), -1)", (b,))
    cdb.rollback()
    assert fetch_value(cdb, "select count(*) from recsys.offer_events") == 3


def test_unsubscribe_older_than_the_users_row_does_not_revoke(cdb: Connection) -> None:
    s.add_users(cdb, 1, 1)  # updated_at 2026-01-01
    s.add_run(cdb, "r", DAY)
    (a,) = s.add_offers(cdb, "r", DAY, 1, 1)
    old = dt.datetime(2025, 12, 1, tzinfo=dt.UTC)
    claimed_at(cdb, old - dt.timedelta(hours=1))
    assert call(cdb, "select recsys.record_offer_event(%s, 'unsubscribed', %s, null)", a, old) is True
    assert fetch_value(cdb, "select email_opt_in from recsys.users where user_id = 1") is True
    assert fetch_value(cdb, "select count(*) from recsys.consent_revocations") == 1


def test_bad_arguments_are_refused_with_a_clear_message(cdb: Connection) -> None:
    for args, message in (
        (("fax", "w", 10, LEASE), "unknown channel fax"),
        (("email", "", 10, LEASE), "worker must name the sender"),
        (("email", "w", 0, LEASE), "max_rows must be between 1 and 10000"),
        (("email", "w", 10, dt.timedelta(0)), "lease must be a positive interval"),
    ):
        with pytest.raises(psycopg2.errors.InvalidParameterValue, match=message):
            fetch_all(cdb, "select * from recsys.claim_offers(%s, %s, %s, %s)", args)
        cdb.rollback()
    with pytest.raises(psycopg2.errors.InvalidParameterValue, match="ack_offer: no offer with offer_id 123456"):
        fetch_value(cdb, "select recsys.ack_offer(123456, 'w')")
    cdb.rollback()


def test_claim_uses_the_claimable_index(cdb: Connection) -> None:
    # A date of its own: the session database is shared, and a large partition left on another
    # test's date makes the planner's choice depend on the order the test files ran in.
    day = dt.date(2031, 3, 3)
    s.add_users(cdb, 1, 2000)
    s.add_run(cdb, "r", day)
    s.add_offers(cdb, "r", day, 1, 2000)
    with cdb.cursor() as cur:
        cur.execute("analyze recsys.campaign_offers")
        cur.execute("analyze recsys.users")
        cur.execute(
            """
            explain select o.offer_id from recsys.campaign_offers as o
            where o.campaign_date = %(day)s
              and o.channel = 'email' and o.status in ('scheduled', 'claimed') and o.scheduled_at <= now()
              and o.expires_at > now() and (o.lease_until is null or o.lease_until <= now())
              and o.attempts < o.max_attempts
              and (select u.email_opt_in and u.email is not null from recsys.users as u where u.user_id = o.user_id)
              and (select r.state from recsys.campaign_runs as r where r.run_id = o.run_id) = 'published'
            order by o.scheduled_at limit 100 for update of o skip locked
            """,
            {"day": day},
        )
        plan = "\n".join(r[0] for r in cur.fetchall())
    cdb.rollback()
    assert "channel_scheduled_at_idx" in plan, plan
    assert "Sort  (" not in plan, plan  # no sort node: the index gives the due order, the scan stops early


# --------------------------------------------------------------------------------------------
# Security: a real login with only the sender role's privileges


@pytest.fixture
def sender_login(migrated_url: str, cdb: Connection) -> Iterator[str]:
    """A URL logging in as a fresh role that has exactly what `recsys db migrate` grants senders."""
    role = f"recsys_sender_t{uuid.uuid4().hex[:10]}"
    settings = load_settings(env={}, database_url=migrated_url, sender_role=role)
    with connect(migrated_url) as conn:
        migrate(conn, settings)
        with conn.cursor() as cur:
            cur.execute(sql.SQL("alter role {} login").format(sql.Identifier(role)))
    params = parse_dsn(migrated_url)
    params["user"] = role
    params.pop("password", None)
    try:
        yield make_dsn(**params), role  # type: ignore[misc]
    finally:
        with connect(migrated_url) as conn, conn.cursor() as cur:
            cur.execute(sql.SQL("drop owned by {}").format(sql.Identifier(role)))
            cur.execute(sql.SQL("drop role {}").format(sql.Identifier(role)))


def test_sender_role_can_use_the_protocol_and_nothing_else(sender_login: tuple[str, str], cdb: Connection) -> None:
    url, role = sender_login
    s.add_users(cdb, 1, 3)
    s.add_run(cdb, "r", DAY)
    a, b, c = s.add_offers(cdb, "r", DAY, 1, 3)

    with ProtocolClient(url, channel="email", worker="sec", lease_seconds=60) as client:
        assert client.conn.get_dsn_parameters()["user"] == role
        offers = client.claim(10)
        assert sorted(o.offer_id for o in offers) == [a, b, c]
        assert client.ack(a) is True
        assert client.fail(b, "boom") is True
        assert client.release(c, "not tried") is True
        assert client.record_event(a, "opened", dt.datetime.now(dt.UTC)) is True
        assert client.record_event(a, "bounced", dt.datetime.now(dt.UTC)) is True  # writes a suppression

    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        for statement in (
            "select * from recsys.campaign_offers",
            "select * from recsys.users",
            "select * from recsys.v_offer_log",
            "update recsys.campaign_offers set status = 'sent'",
            "insert into recsys.offer_events (offer_id, event, event_at) values (1, 'opened', now())",
            "delete from recsys.consent_revocations",
            "delete from recsys.address_suppressions",
            "select recsys.expire_offers()",
            "create table recsys.x (a int)",
        ):
            with pytest.raises(psycopg2.errors.InsufficientPrivilege), conn.cursor() as cur:
                cur.execute(statement)
    finally:
        conn.close()

    assert s.statuses(cdb) == {"sent": 1, "scheduled": 2}
    assert fetch_value(cdb, "select address from recsys.address_suppressions") == "u1@example.com"
    s.reset(cdb)  # the suppressed address must not reach later tests
    # and no privilege on any relation of the schema, EXECUTE on exactly the sender's definer functions
    granted = fetch_all(
        cdb,
        """
        select c.relname from pg_class as c join pg_namespace as n on n.oid = c.relnamespace
        where n.nspname = 'recsys' and c.relkind in ('r', 'p', 'v', 'm', 'S', 'f')
          and (has_table_privilege(%(role)s, c.oid, 'select,insert,update,delete,truncate,references,trigger')
               or (c.relkind = 'S' and has_sequence_privilege(%(role)s, c.oid, 'usage,update')))
        """,
        {"role": role},
    )
    assert granted == []
    definer = fetch_all(
        cdb,
        """
        select p.oid::regprocedure::text as f from pg_proc as p join pg_namespace as n on n.oid = p.pronamespace
        where n.nspname = 'recsys' and p.prosecdef and has_function_privilege(%(role)s, p.oid, 'execute')
        order by 1
        """,
        {"role": role},
    )
    expected = [fetch_value(cdb, "select to_regprocedure(%s)::text", (f,)) for f in SENDER_FUNCTIONS]
    assert [d["f"] for d in definer] == sorted(expected)
