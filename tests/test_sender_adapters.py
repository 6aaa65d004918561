"""The reference sender's adapters against real servers: an aiosmtpd SMTP server and an
http.server webhook, each started by the test; and the jsonl file."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import sender_support as s
from aiosmtpd.controller import Controller

from recsys.db import Connection, connect, fetch_all
from recsys.sender import run_sender
from recsys.sender.adapters import JsonlAdapter, SmtpAdapter, WebhookAdapter, make_adapter
from recsys.sender.protocol import ProtocolClient
from recsys.settings import Settings, load_settings

DAY = dt.date(2026, 11, 21)


@pytest.fixture
def cdb(migrated_url: str) -> Iterator[Connection]:
    with connect(migrated_url) as conn:
        s.reset(conn)
        yield conn


def client(url: str, channel: str = "email", worker: str = "t") -> ProtocolClient:
    return ProtocolClient(url, channel=channel, worker=worker, lease_seconds=60)


# --------------------------------------------------------------------------------------------
# SMTP


class Mailbox:
    """aiosmtpd handler: keeps every message; refuses recipients at refused.example.com."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.endswith("@refused.example.com"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted"


@pytest.fixture
def smtp_server() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    with socket.socket() as probe:  # a free port (the controller's readiness check needs a real one)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


def test_smtp_adapter_sends_real_mail(cdb: Connection, migrated_url: str, smtp_server: tuple[Mailbox, int]) -> None:
    box, port = smtp_server
    s.add_users(cdb, 1, 3)
    with cdb.cursor() as cur:
        cur.execute("update recsys.users set email = 'u3@refused.example.com' where user_id = 3")
    cdb.commit()
    s.add_run(cdb, "r", DAY)
    ids = s.add_offers(cdb, "r", DAY, 1, 3)
    settings = load_settings(env={}, smtp_host="127.0.0.1", smtp_port=port, smtp_from="shop@example.org")
    adapter = make_adapter("smtp", settings, channel="email")
    assert isinstance(adapter, SmtpAdapter)
    with client(migrated_url) as c:
        stats = run_sender(c, adapter, batch=10, once=True, poll_seconds=1)
    adapter.close()
    assert (stats.sent, stats.failed) == (2, 1)

    assert len(box.messages) == 2
    by_to = {rcpt[0]: email.message_from_bytes(data, policy=email.policy.default) for _, rcpt, data in box.messages}
    assert sorted(by_to) == ["u1@example.com", "u2@example.com"]
    m = by_to["u1@example.com"]
    assert (m["From"], m["To"], m["Subject"]) == ("shop@example.org", "u1@example.com", "Offer 1")
    assert m["Message-ID"] == f"<recsys-offer-{ids[0]}@example.org>"
    assert m["Idempotency-Key"] == f"recsys-offer-{ids[0]}"
    assert m.get_body(("html",)).get_content().strip() == "<p>Hello 1</p>"
    assert m.get_body(("plain",)).get_content().strip() == "Hello 1"

    rows = fetch_all(cdb, "select user_id, status, attempts, last_error from recsys.campaign_offers order by user_id")
    assert [(r["user_id"], r["status"]) for r in rows] == [(1, "sent"), (2, "sent"), (3, "scheduled")]
    assert "u3@refused.example.com refused" in rows[2]["last_error"]


def test_smtp_server_down_fails_the_offer_for_a_retry(cdb: Connection, migrated_url: str) -> None:
    s.add_users(cdb, 1, 1)
    s.add_run(cdb, "r", DAY)
    s.add_offers(cdb, "r", DAY, 1, 1)
    settings = load_settings(env={}, smtp_host="127.0.0.1", smtp_port=1)  # nothing listens on port 1
    with client(migrated_url) as c:
        stats = run_sender(c, SmtpAdapter(settings), batch=10, once=True, poll_seconds=1)
    assert (stats.sent, stats.failed) == (0, 1)
    row = fetch_all(cdb, "select status, last_error from recsys.campaign_offers")[0]
    assert row["status"] == "scheduled" and "SMTP server 127.0.0.1:1" in row["last_error"]


# --------------------------------------------------------------------------------------------
# Webhook


class Hook:
    """What the webhook server received; answers 500 to the first request for each offer."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], dict]] = []
        self.seen: set[int] = set()
        self.lock = threading.Lock()


@pytest.fixture
def webhook() -> Iterator[tuple[Hook, str]]:
    hook = Hook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with hook.lock:
                hook.requests.append((dict(self.headers), body))
                first = body["offer_id"] not in hook.seen
                hook.seen.add(body["offer_id"])
            self.send_response(500 if first else 202)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook, f"http://127.0.0.1:{server.server_address[1]}/offers"
    finally:
        server.shutdown()
        server.server_close()


def test_webhook_posts_json_with_idempotency_key_and_retries_after_500(
    cdb: Connection, migrated_url: str, webhook: tuple[Hook, str]
) -> None:
    hook, url = webhook
    s.add_users(cdb, 1, 2)
    s.add_run(cdb, "r", DAY)
    ids = s.add_offers(cdb, "r", DAY, 1, 2, channel="push")
    adapter = WebhookAdapter(load_settings(env={}, webhook_url=url))
    with client(migrated_url, channel="push") as c:
        first = run_sender(c, adapter, batch=10, once=True, poll_seconds=1)
        assert (first.sent, first.failed) == (0, 2)
        rows = fetch_all(cdb, "select status, attempts, last_error from recsys.campaign_offers")
        assert {(r["status"], r["attempts"], r["last_error"]) for r in rows} == {
            ("scheduled", 1, "webhook answered HTTP 500 Internal Server Error")
        }
        assert run_sender(c, adapter, batch=10, once=True, poll_seconds=1).sent == 0  # backing off
        s.end_leases(cdb)
        second = run_sender(c, adapter, batch=10, once=True, poll_seconds=1)
    assert (second.sent, second.failed) == (2, 0)
    assert s.statuses(cdb) == {"sent": 2}
    keys = sorted((h["Idempotency-Key"], b["offer_id"]) for h, b in hook.requests)
    assert keys == sorted([(f"recsys-offer-{i}", i) for i in ids] * 2)  # the same key on the retry
    headers, body = hook.requests[-1]
    assert headers["Content-Type"] == "application/json"
    assert body["address"] == f"tok{body['user_id']}" and body["channel"] == "push"
    assert body["attempts"] == 2


def test_webhook_needs_an_http_url() -> None:
    from recsys.errors import RecsysError

    with pytest.raises(RecsysError, match="needs a URL: set RECSYS_WEBHOOK_URL"):
        WebhookAdapter(Settings())
    with pytest.raises(RecsysError, match="expected an http:// or https:// URL"):
        WebhookAdapter(Settings(webhook_url="file:///etc/passwd"))


# --------------------------------------------------------------------------------------------
# jsonl


def test_jsonl_adapter_appends_one_object_per_offer(cdb: Connection, migrated_url: str, tmp_path: Path) -> None:
    s.add_users(cdb, 1, 5)
    s.add_run(cdb, "r", DAY)
    ids = s.add_offers(cdb, "r", DAY, 1, 5, channel="sms")
    out = tmp_path / "out" / "sms.jsonl"
    out.parent.mkdir()
    out.write_text('{"earlier": true}\n')
    adapter = JsonlAdapter(out)
    with client(migrated_url, channel="sms") as c:
        stats = run_sender(c, adapter, batch=2, once=True, poll_seconds=1)
    adapter.close()
    assert stats.sent == 5 and stats.claimed == 5
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines[0] == {"earlier": True}
    assert sorted(line["offer_id"] for line in lines[1:]) == ids
    assert {line["idempotency_key"] for line in lines[1:]} == {f"recsys-offer-{i}" for i in ids}
    assert s.statuses(cdb) == {"sent": 5}
