"""`recsys send` as operators run it: real sender processes against the test database, stopped
with SIGTERM, killed with SIGKILL between claim and ack, and several draining one campaign."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import sender_support as s

from recsys.config.settings import PROJECT_ROOT
from recsys.db import Connection, fetch_all, fetch_value

DAY = dt.date(2026, 11, 22)


def jsonl_ids(path: Path) -> list[int]:
    if not path.exists():
        return []
    return [json.loads(line)["offer_id"] for line in path.read_text().splitlines()]


def wait_for(predicate, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.1)


def offers_to_send(cdb: Connection, *, consenting: int, withdrawn: int, unpublished: int) -> list[int]:
    """Email offers of the published run "r": to users 1..`consenting` (returned, to be sent) and to
    the next `withdrawn` users, who no longer consent (cancelled, never sent); and `unpublished`
    offers of a run still scoring the next day (never touched)."""
    last = consenting + withdrawn
    s.add_users(cdb, 1, consenting)
    s.add_users(cdb, consenting + 1, last, opt_in=False)
    s.add_run(cdb, "r", DAY)
    s.add_run(cdb, "hidden", DAY + dt.timedelta(days=1), state="scoring")
    ids = s.add_offers(cdb, "r", DAY, 1, consenting)
    s.add_offers(cdb, "r", DAY, consenting + 1, last)
    s.add_offers(cdb, "hidden", DAY + dt.timedelta(days=1), 1, unpublished)
    return ids


def run_statuses(cdb: Connection) -> list[tuple[str, str, int]]:
    """(run_id, status, offers) of every run and status, in that order."""
    rows = fetch_all(
        cdb, "select run_id, status, count(*) as n from recsys.campaign_offers group by 1, 2 order by 1, 2"
    )
    return [(r["run_id"], r["status"], r["n"]) for r in rows]


def test_send_once_end_to_end(cdb: Connection, migrated_url: str, tmp_path: Path) -> None:
    ids = offers_to_send(cdb, consenting=40, withdrawn=5, unpublished=10)
    out = tmp_path / "email.jsonl"

    result = s.run_cli(
        migrated_url, tmp_path, "send", "--channel", "email", "--adapter", "jsonl", "--once", "--batch", "7",
        "--worker", "cli-1", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "send email via jsonl (cli-1): claimed 40, sent 40, failed 0" in result.stderr
    assert sorted(jsonl_ids(out)) == ids
    assert run_statuses(cdb) == [
        ("hidden", "scheduled", 10),
        ("r", "cancelled", 5),
        ("r", "sent", 40),
    ]
    assert fetch_value(cdb, "select count(distinct claimed_by) from recsys.campaign_offers where status = 'sent'") == 1

    again = s.run_cli(
        migrated_url, tmp_path, "send", "--channel", "email", "--adapter", "jsonl", "--once", "--out", str(out)
    )
    assert again.returncode == 0 and "claimed 0, sent 0" in again.stderr
    assert len(jsonl_ids(out)) == 40


def test_send_refuses_bad_options_in_one_line(migrated_url: str, tmp_path: Path) -> None:
    result = s.run_cli(migrated_url, tmp_path, "send", "--channel", "push", "--adapter", "webhook", "--once")
    assert result.returncode == 2
    assert result.stderr.strip() == "recsys send: error: the webhook adapter needs a URL: set RECSYS_WEBHOOK_URL"
    result = s.run_cli(migrated_url, tmp_path, "send", "--channel", "sms", "--adapter", "smtp", "--once")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "the smtp adapter sends email, not sms" in result.stderr
    # unsafe settings: the sender refuses to start, before it claims anything
    result = s.run_cli(
        migrated_url, tmp_path, "send", "--channel", "push", "--adapter", "webhook", "--once",
        RECSYS_WEBHOOK_URL="https://shop.example/offers",
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "set RECSYS_WEBHOOK_SECRET" in result.stderr
    result = s.run_cli(
        migrated_url, tmp_path, "send", "--channel", "email", "--adapter", "smtp", "--once",
        RECSYS_SMTP_USER="shop", RECSYS_SMTP_PASSWORD="pw",
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "would be plain text" in result.stderr and "the password is never sent without TLS" in result.stderr


def test_sigterm_stops_a_polling_sender_cleanly(cdb: Connection, migrated_url: str, tmp_path: Path) -> None:
    ids = s.published_offers(cdb, DAY, 3000)
    out = tmp_path / "email.jsonl"
    proc = subprocess.Popen(
        s.recsys_cmd("send", "--channel", "email", "--adapter", "jsonl", "--batch", "20", "--out", str(out)),
        env=s.cli_env(migrated_url, tmp_path, RECSYS_SENDER_LEASE_SECONDS="600"),
        stderr=subprocess.PIPE,
        text=True,
        cwd=PROJECT_ROOT,
    )
    try:
        wait_for(lambda: len(jsonl_ids(out)) >= 20)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "SIGTERM: finishing the current offer, then stopping" in stderr
    assert "stopped by signal" in stderr and "Traceback" not in stderr

    # every offer it wrote was acked; what it claimed but did not send is still held, not lost
    written = jsonl_ids(out)
    sent = [r["offer_id"] for r in fetch_all(cdb, "select offer_id from recsys.campaign_offers where status = 'sent'")]
    assert sorted(written) == sorted(sent) and len(set(written)) == len(written)
    assert (
        fetch_value(
            cdb, "select count(*) from recsys.campaign_offers where status not in ('sent', 'claimed', 'scheduled')"
        )
        == 0
    )

    # once the leases run out, another sender sends the rest: each offer exactly once overall
    s.end_leases(cdb)
    rest = s.run_cli(
        migrated_url, tmp_path, "send", "--channel", "email", "--adapter", "jsonl", "--once", "--out", str(out)
    )
    assert rest.returncode == 0, rest.stderr
    assert sorted(jsonl_ids(out)) == ids
    assert s.statuses(cdb) == {"sent": 3000}


CLAIM_AND_HANG = """
import sys, time
from recsys.sender.protocol import ProtocolClient
with ProtocolClient(sys.argv[1], channel="email", worker="doomed", lease_seconds=15) as c:
    offers = c.claim(int(sys.argv[2]))
    print(len(offers), flush=True)
    time.sleep(600)  # killed here, between claim and ack
"""


def test_sender_killed_between_claim_and_ack(cdb: Connection, migrated_url: str, tmp_path: Path) -> None:
    ids = s.published_offers(cdb, DAY, 50)
    doomed = subprocess.Popen(
        [sys.executable, "-c", CLAIM_AND_HANG, migrated_url, "30"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=PROJECT_ROOT,
        env=s.cli_env(migrated_url, tmp_path),
    )
    assert doomed.stdout is not None
    assert doomed.stdout.readline().strip() == "30"
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=30)
    assert doomed.returncode == -signal.SIGKILL
    held = fetch_value(
        cdb, "select count(*) from recsys.campaign_offers where status = 'claimed' and claimed_by = 'doomed'"
    )
    assert held == 30

    out = tmp_path / "email.jsonl"
    cmd = ("send", "--channel", "email", "--adapter", "jsonl", "--once", "--worker", "rescuer", "--out", str(out))
    first = s.run_cli(migrated_url, tmp_path, *cmd)
    assert first.returncode == 0 and "sent 20" in first.stderr  # the 30 are still leased

    # wait for the real lease to run out, no shortcut (15 s: long enough that the first sender's
    # start-up on a loaded machine cannot outlast it, which made a 2 s lease flaky)
    def leases_over() -> bool:
        over = fetch_value(
            cdb, "select bool_and(lease_until <= now()) from recsys.campaign_offers where status = 'claimed'"
        )
        cdb.commit()  # now() is the transaction's start: look again in a new one
        return bool(over)

    wait_for(leases_over)
    second = s.run_cli(migrated_url, tmp_path, *cmd)
    assert second.returncode == 0 and "sent 30" in second.stderr
    assert sorted(jsonl_ids(out)) == ids  # each offer sent once
    rows = fetch_all(
        cdb, "select attempts, claimed_by, count(*) as n from recsys.campaign_offers group by 1, 2 order by 1"
    )
    assert [(r["attempts"], r["claimed_by"], r["n"]) for r in rows] == [(1, "rescuer", 20), (2, "rescuer", 30)]
    assert s.statuses(cdb) == {"sent": 50}


def test_concurrent_senders_ack_each_offer_exactly_once(cdb: Connection, migrated_url: str, tmp_path: Path) -> None:
    ids = offers_to_send(cdb, consenting=3000, withdrawn=200, unpublished=500)
    workers = 4
    procs = [
        subprocess.Popen(
            s.recsys_cmd(
                "send", "--channel", "email", "--adapter", "jsonl", "--once", "--batch", "25",
                "--worker", f"w{k}", "--out", str(tmp_path / f"w{k}.jsonl"),
            ),
            env=s.cli_env(migrated_url, tmp_path),
            stderr=subprocess.PIPE,
            text=True,
            cwd=PROJECT_ROOT,
        )
        for k in range(workers)
    ]  # fmt: skip
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err

    per_worker = {f"w{k}": jsonl_ids(tmp_path / f"w{k}.jsonl") for k in range(workers)}
    counts = Counter(i for got in per_worker.values() for i in got)
    assert sorted(counts) == ids and set(counts.values()) == {1}  # every offer, exactly once
    assert sum(1 for got in per_worker.values() if got) >= 2  # the work was really shared
    holders = {
        r["offer_id"]: r["claimed_by"]
        for r in fetch_all(cdb, "select offer_id, claimed_by from recsys.campaign_offers where status = 'sent'")
    }
    assert all(holders[i] == w for w, got in per_worker.items() for i in got)  # acked by the one that sent it
    assert fetch_value(cdb, "select max(attempts) from recsys.campaign_offers where status = 'sent'") == 1
    assert (
        fetch_value(cdb, "select count(*) from recsys.campaign_offers where status = 'sent' and sent_at < scheduled_at")
        == 0
    )
    assert run_statuses(cdb) == [
        ("hidden", "scheduled", 500),
        ("r", "cancelled", 200),
        ("r", "sent", 3000),
    ]
