"""`recsys ingest-feedback`: feedback*.csv files into offer_events, with rejects, idempotency and
consent revocation as record_offer_event does it."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
import sender_support as s

from recsys.config.settings import Settings
from recsys.data.extract import extract_path, load_inbox
from recsys.data.feedback import ingest_feedback
from recsys.db import Connection, fetch_all, fetch_value
from recsys.errors import RecsysError

DAY = dt.date(2026, 11, 23)
REF = dt.datetime(2026, 11, 25, tzinfo=dt.UTC)


def write(path: Path, *lines: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def claimed_at(conn: Connection, at: dt.datetime) -> list[int]:
    """Claim every due email offer through claim_offers, then date that claim back to `at` (events
    are accepted only for claimed offers, from their first claim on)."""
    rows = fetch_all(conn, "select offer_id from recsys.claim_offers('email', 'w1', 10000, interval '5 minutes')")
    ids = [r["offer_id"] for r in rows]
    with conn.cursor() as cur:
        cur.execute(
            "update recsys.campaign_offers set claimed_at = %(at)s, first_claimed_at = %(at)s "
            "where offer_id = any(%(ids)s)",
            {"at": at, "ids": ids},
        )
    conn.commit()
    return ids


def events(conn: Connection) -> list[tuple]:
    rows = fetch_all(conn, "select offer_id, event, event_at, revenue, source from recsys.offer_events order by 1, 2")
    return [tuple(r.values()) for r in rows]


def test_feedback_file_loads_events_and_rejects_bad_rows(cdb: Connection, settings: Settings, tmp_path: Path) -> None:
    a, b, c = s.published_offers(cdb, DAY, 3)
    claimed_at(cdb, dt.datetime(2026, 11, 23, 7, tzinfo=dt.UTC))
    f = write(
        tmp_path / "feedback_day1.csv",
        "Offer_ID,Event,Event_At,Revenue,note",
        f"{a},delivered,2026-11-23T09:01:00Z,,x",
        f"{a},opened,2026-11-23T10:00:00Z,,",
        f"{a},opened,2026-11-23T11:00:00Z,,",  # the same event again: the first row wins
        f"{a},converted,2026-11-23T12:00:00,19.99,",
        f"{b},unsubscribed,2026-11-23T13:00:00Z,,",
        f"{c},clicked,2026-11-30T10:00:00Z,,",  # in the future
        "999999,opened,2026-11-23T10:00:00Z,,",  # unknown offer
        f"{c},liked,2026-11-23T10:00:00Z,,",  # unknown event
        f"{c},converted,2026-11-23T10:00:00Z,-5,",  # negative revenue
        f"x{c},opened,,,",  # two problems in one row
    )
    (result,) = ingest_feedback(cdb, settings, f, reference_at=REF)
    assert result.status == "loaded", result.describe()
    t = lambda h, m=0: dt.datetime(2026, 11, 23, h, m, tzinfo=dt.UTC)  # noqa: E731
    assert events(cdb) == [
        (a, "converted", t(12), Decimal("19.99"), "feedback"),
        (a, "delivered", t(9, 1), None, "feedback"),
        (a, "opened", t(10), None, "feedback"),
        (b, "unsubscribed", t(13), None, "feedback"),
    ]
    rejects = fetch_all(cdb, "select sheet, row_number, column_name, reason from recsys.load_rejects order by 2, 3")
    assert [(r["sheet"], r["row_number"], r["column_name"]) for r in rejects] == [
        ("feedback", 7, "event_at"),
        ("feedback", 8, "offer_id"),
        ("feedback", 9, "event"),
        ("feedback", 10, "revenue"),
        ("feedback", 11, "event_at"),
        ("feedback", 11, "offer_id"),
    ]
    assert "unknown offer_id" in rejects[1]["reason"] and "unknown event" in rejects[2]["reason"]
    log = fetch_all(cdb, "select status, rows_read, rows_loaded, rows_rejected, rows_duplicate from recsys.load_log "
                    "where file_name = 'feedback_day1.csv'")  # fmt: skip
    assert [tuple(r.values()) for r in log] == [("loaded", 10, 4, 5, 1)]
    # the unsubscribe revoked user 2's email consent, as record_offer_event would
    assert fetch_value(cdb, "select email_opt_in from recsys.users where user_id = 2") is False
    assert fetch_value(cdb, "select updated_at from recsys.users where user_id = 2") == t(13)
    assert fetch_all(cdb, "select user_id, channel, offer_id from recsys.consent_revocations") == [
        {"user_id": 2, "channel": "email", "offer_id": b}
    ]


def test_feedback_rows_outside_the_protocol_bounds_are_rejected(
    cdb: Connection, settings: Settings, tmp_path: Path
) -> None:
    """The rules of record_offer_event hold for files: a row for an offer no sender claimed, or
    with an event_at before the first claim or after now (each beyond the 5 minute skew), is a
    reject row naming the column; a bounce suppresses the address."""
    s.add_users(cdb, 1, 4)
    s.add_run(cdb, "r", DAY)
    a, b, c = s.add_offers(cdb, "r", DAY, 1, 3)
    (d,) = s.add_offers(cdb, "r", DAY, 4, 4, due_in=dt.timedelta(hours=2))  # not due: never claimed
    claimed_at(cdb, dt.datetime(2026, 11, 23, 7, tzinfo=dt.UTC))
    tomorrow = (fetch_value(cdb, "select now()") + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    f = write(
        tmp_path / "feedback_bounds.csv",
        "offer_id,event,event_at",
        f"{a},delivered,2026-11-23T09:00:00Z",
        f"{a},opened,2026-11-23T06:00:00Z",  # an hour before the claim
        f"{d},opened,2026-11-23T10:00:00Z",  # never claimed
        f"{b},delivered,2026-11-23T09:00:00Z",
        f"{b},bounced,2026-11-23T09:30:00Z",
        f"{c},delivered,2026-11-23T09:00:00Z",
        f"{c},clicked,{tomorrow}",  # after now, though before this load's (odd) reference time
    )
    (result,) = ingest_feedback(cdb, settings, f, reference_at=dt.datetime(2030, 1, 1, tzinfo=dt.UTC))
    assert result.status == "loaded", result.describe()
    assert [e[:2] for e in events(cdb)] == [(a, "delivered"), (b, "bounced"), (b, "delivered"), (c, "delivered")]
    rejects = fetch_all(
        cdb, "select row_number, column_name, value, reason from recsys.load_rejects where file_name = %s order by 1",
        (f.name,),
    )  # fmt: skip
    assert [(r["row_number"], r["column_name"]) for r in rejects] == [(3, "event_at"), (4, "offer_id"), (8, "event_at")]
    assert rejects[0]["value"] == "2026-11-23T06:00:00Z"
    assert (
        rejects[0]["reason"] == "before the offer's first claim at 2026-11-23T07:00:00Z (less the 5 minute clock skew)"
    )
    assert (rejects[1]["value"], rejects[1]["reason"]) == (
        str(d), "offer was never claimed by a sender: no event can have happened to it"
    )  # fmt: skip
    assert rejects[2]["reason"] == "timestamp is in the future (after now plus the 5 minute clock skew)"
    log = fetch_all(cdb, "select rows_read, rows_loaded, rows_rejected from recsys.load_log where file_name = %s",
                    (f.name,))  # fmt: skip
    assert [tuple(r.values()) for r in log] == [(7, 4, 3)]
    # the bounce suppressed user 2's address: the next night's offer to it is cancelled at the claim
    assert fetch_all(cdb, "select channel, address, offer_id, user_id from recsys.address_suppressions") == [
        {"channel": "email", "address": "u2@example.com", "offer_id": b, "user_id": 2}
    ]
    s.add_run(cdb, "r2", DAY + dt.timedelta(days=1))
    s.add_offers(cdb, "r2", DAY + dt.timedelta(days=1), 2, 2)
    assert fetch_all(cdb, "select * from recsys.claim_offers('email', 'w1', 10, interval '5 minutes')") == []


def test_feedback_is_idempotent_and_first_report_wins(cdb: Connection, settings: Settings, tmp_path: Path) -> None:
    (a,) = s.published_offers(cdb, DAY, 1)
    claimed_at(cdb, dt.datetime(2026, 11, 23, 7, tzinfo=dt.UTC))
    with cdb.cursor() as cur:
        cur.execute("select recsys.record_offer_event(%s, 'opened', '2026-11-23T08:00:00Z', null)", (a,))
    cdb.commit()
    f = write(tmp_path / "feedback.csv", "offer_id,event,event_at", f"{a},opened,2026-11-23T10:00:00Z")
    (first,) = ingest_feedback(cdb, settings, f, reference_at=REF)
    assert (first.status, first.total("loaded"), first.total("duplicate")) == ("loaded", 0, 1)
    (again,) = ingest_feedback(cdb, settings, f, reference_at=REF)
    assert again.status == "skipped"
    (forced,) = ingest_feedback(cdb, settings, f, reference_at=REF, force=True)
    assert forced.total("loaded") == 0
    assert events(cdb) == [(a, "opened", dt.datetime(2026, 11, 23, 8, tzinfo=dt.UTC), None, "sender")]


def test_unreadable_or_wrong_files_are_refused_whole(cdb: Connection, settings: Settings, tmp_path: Path) -> None:
    (a,) = s.published_offers(cdb, DAY, 1)
    bad = write(tmp_path / "feedback_bad.csv", "offer_id,when", f"{a},2026-11-23T10:00:00Z")
    (result,) = ingest_feedback(cdb, settings, bad, reference_at=REF)
    assert result.status == "refused"
    assert result.message == "feedback_bad.csv: missing required column(s) event, event_at; found: offer_id, when"
    assert fetch_value(cdb, "select count(*) from recsys.offer_events") == 0
    with pytest.raises(RecsysError, match=r"events\.csv: not a feedback file"):
        ingest_feedback(cdb, settings, write(tmp_path / "events.csv", "a"), reference_at=REF)
    with pytest.raises(RecsysError, match="no feedback files"):
        ingest_feedback(cdb, settings, write(tmp_path / "empty" / "notes.txt", "x").parent, reference_at=REF)
    # `extract` still leaves feedback to ingest-feedback
    (refused,) = extract_path(cdb, settings, write(tmp_path / "x" / "feedback_2.csv", "offer_id,event,event_at"))
    assert refused.status == "refused" and "loaded by `recsys ingest-feedback`" in refused.message


def test_inbox_loads_feedback_files_after_the_others(cdb: Connection, settings: Settings) -> None:
    (a,) = s.published_offers(cdb, DAY, 1)
    claimed_at(cdb, dt.datetime(2026, 11, 23, 7, tzinfo=dt.UTC))
    write(settings.inbox / "feedback_1.csv", "offer_id,event,event_at", f"{a},clicked,2026-11-23T10:00:00Z")
    results = load_inbox(cdb, settings, reference_at=REF)
    assert [(r.path.name, r.status) for r in results] == [("feedback_1.csv", "loaded")]
    assert (settings.inbox / "loaded" / "feedback_1.csv").exists()
    assert [e[:2] for e in events(cdb)] == [(a, "clicked")]


def test_cli_ingest_feedback(cdb: Connection, migrated_url: str, tmp_path: Path) -> None:
    (a,) = s.published_offers(cdb, DAY, 1)
    claimed_at(cdb, dt.datetime(2026, 11, 23, 7, tzinfo=dt.UTC))
    folder = tmp_path / "fb"
    write(folder / "feedback_a.csv", "offer_id,event,event_at", f"{a},delivered,2026-11-23T10:00:00Z")
    write(folder / "feedback_b.csv", "offer_id,event,event_at,revenue", f"{a},converted,2026-11-23T11:00:00Z,5")
    result = s.run_cli(migrated_url, tmp_path, "ingest-feedback", "--source", str(folder))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["feedback_a.csv", "feedback_b.csv"]
    assert "feedback 1 of 1 loaded" in lines[0]
    assert [e[:2] for e in events(cdb)] == [(a, "converted"), (a, "delivered")]
    missing = s.run_cli(migrated_url, tmp_path, "ingest-feedback", "--source", str(tmp_path / "nope.csv"))
    assert missing.returncode == 2 and missing.stderr.strip().endswith("nope.csv: no such file or folder")
