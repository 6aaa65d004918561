"""The reference sender's adapters against real servers, each started by the test: an aiosmtpd
SMTP server (plain, and STARTTLS with a certificate of a CA made by the test), an HTTP server as the
webhook receiver (keep-alive, verifying the signature, answering redirects and Retry-After); and
the jsonl file. Email offers carry List-Unsubscribe headers and a working unsubscribe link."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import email.utils
import hashlib
import hmac
import json
import logging
import re
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import sender_support as s
from aiosmtpd.controller import Controller

from recsys.campaign.messages import UNSUBSCRIBE_MARKER, Renderer
from recsys.config.catalog import load_catalog
from recsys.config.rules import load_rules
from recsys.config.settings import Settings, load_settings
from recsys.db import Connection, fetch_all, fetch_value
from recsys.errors import RecsysError
from recsys.sender import run_sender
from recsys.sender.adapters import (
    JsonlAdapter,
    SmtpAdapter,
    WebhookAdapter,
    make_adapter,
    mask_address,
    parse_retry_after,
    scrub,
)
from recsys.sender.protocol import ProtocolClient
from recsys.sender.signature import signed_headers, verify

DAY = dt.date(2026, 11, 21)
SECRET = "test-webhook-secret"


def client(url: str, channel: str = "email", worker: str = "t") -> ProtocolClient:
    return ProtocolClient(url, channel=channel, worker=worker, lease_seconds=60)


def set_column(conn: Connection, table: str, column: str, user_id: int, value: str) -> None:
    """One value of a test row (column names are literals of this file)."""
    with conn.cursor() as cur:
        cur.execute(f"update recsys.{table} set {column} = %s where user_id = %s", (value, user_id))  # noqa: S608
    conn.commit()


def free_port() -> int:
    with socket.socket() as probe:  # the SMTP controller's readiness check needs a real port
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --------------------------------------------------------------------------------------------
# SMTP


class Mailbox:
    """aiosmtpd handler: keeps every message; refuses recipients at refused.example.com and
    messages whose subject says "reject me"."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.endswith("@refused.example.com"):
            return f"550 5.1.1 <{address}>: no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if b"reject me" in envelope.content:
            return "554 5.7.1 message refused as spam"
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted"

    def parsed(self) -> dict[str, email.message.EmailMessage]:
        return {rcpt[0]: email.message_from_bytes(data, policy=email.policy.default) for _, rcpt, data in self.messages}


@pytest.fixture
def smtp_server() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


@pytest.fixture
def starttls_server(tmp_path: Path) -> Iterator[tuple[Mailbox, int, Path]]:
    """An SMTP server that requires STARTTLS, with a certificate of a CA made here (no system trusts it)."""
    ca, cert, key = s.tls_files(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True)
    controller.start()
    try:
        yield box, port, ca
    finally:
        controller.stop()


def test_smtp_adapter_sends_real_mail(
    cdb: Connection, migrated_url: str, smtp_server: tuple[Mailbox, int], caplog: pytest.LogCaptureFixture
) -> None:
    box, port = smtp_server
    s.add_users(cdb, 1, 3)
    set_column(cdb, "users", "email", 2, "u2@refused.example.com")
    s.add_run(cdb, "r", DAY)
    ids = s.add_offers(cdb, "r", DAY, 1, 3)
    settings = load_settings(env={}, smtp_host="127.0.0.1", smtp_port=port, smtp_from="shop@example.org")
    adapter = make_adapter("smtp", settings, channel="email")
    assert isinstance(adapter, SmtpAdapter)
    with caplog.at_level(logging.INFO), client(migrated_url) as c:
        stats = run_sender(c, adapter, batch=10, once=True, poll_seconds=1)
    adapter.close()
    assert (stats.sent, stats.failed) == (2, 1)

    by_to = box.parsed()
    assert sorted(by_to) == ["u1@example.com", "u3@example.com"]  # the offer after the refused one still went
    m = by_to["u1@example.com"]
    assert (m["From"], m["To"], m["Subject"]) == ("shop@example.org", "u1@example.com", "Offer 1")
    assert m["Message-ID"] == f"<recsys-offer-{ids[0]}@example.org>"
    assert m["Idempotency-Key"] == f"recsys-offer-{ids[0]}"
    assert m.get_body(("html",)).get_content().strip() == "<p>Hello 1</p>"
    assert m.get_body(("plain",)).get_content().strip() == "Hello 1"

    rows = fetch_all(cdb, "select user_id, status, attempts, last_error from recsys.campaign_offers order by user_id")
    assert [(r["user_id"], r["status"]) for r in rows] == [(1, "sent"), (2, "scheduled"), (3, "sent")]
    # the address is masked where people read it: last_error and the log, the server's text included
    assert (
        rows[1]["last_error"]
        == "recipient u***@refused.example.com refused: 550 5.1.1 <u***@refused.example.com>: no such user"
    )
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("recsys"))
    assert "u***@refused.example.com" in ours and "u2@refused.example.com" not in ours


def test_smtp_per_offer_errors_fail_that_offer_and_the_sender_goes_on(
    cdb: Connection, migrated_url: str, smtp_server: tuple[Mailbox, int]
) -> None:
    box, port = smtp_server
    s.published_offers(cdb, DAY, 5)
    set_column(cdb, "campaign_offers", "subject", 1, "Jane\r\nBcc: everyone@example.net, 10% off")  # header injection
    set_column(cdb, "users", "email", 2, "not an address")
    set_column(cdb, "campaign_offers", "subject", 3, "please reject me")  # the server refuses the message
    settings = load_settings(env={}, smtp_host="127.0.0.1", smtp_port=port)
    adapter = make_adapter("smtp", settings, channel="email")
    with client(migrated_url) as c:
        stats = run_sender(c, adapter, batch=10, once=True, poll_seconds=1)
    adapter.close()
    assert (stats.sent, stats.failed, stats.channel_down) == (2, 3, None)
    assert sorted(box.parsed()) == ["u4@example.com", "u5@example.com"]
    assert all(b"everyone@example.net" not in data for _, _, data in box.messages)
    rows = fetch_all(cdb, "select user_id, status, last_error from recsys.campaign_offers order by user_id")
    assert [r["status"] for r in rows] == ["scheduled", "scheduled", "scheduled", "sent", "sent"]
    assert "the Subject header would contain a line break" in rows[0]["last_error"]
    assert rows[1]["last_error"].startswith("recipient ***ss is not a usable email address")
    assert rows[2]["last_error"] == "message refused: 554 5.7.1 message refused as spam"


def test_smtp_starttls_refuses_an_untrusted_certificate_and_delivers_with_the_ca_file(
    cdb: Connection, migrated_url: str, starttls_server: tuple[Mailbox, int, Path]
) -> None:
    box, port, ca = starttls_server
    s.published_offers(cdb, DAY, 2)
    untrusted = load_settings(env={}, smtp_host="127.0.0.1", smtp_port=port, smtp_starttls=True)
    with client(migrated_url) as c:
        stats = run_sender(c, make_adapter("smtp", untrusted), batch=10, once=True, poll_seconds=1)
    assert (stats.sent, stats.failed, stats.released) == (0, 1, 1) and box.messages == []
    errors = [r["last_error"] for r in fetch_all(cdb, "select last_error from recsys.campaign_offers order by 1")]
    assert all("TLS certificate not trusted" in e and "RECSYS_SMTP_CA_FILE" in e for e in errors), errors
    assert s.statuses(cdb) == {"scheduled": 2}

    s.end_leases(cdb)
    trusted = load_settings(env={}, smtp_host="127.0.0.1", smtp_port=port, smtp_starttls=True, smtp_ca_file=str(ca))
    adapter = make_adapter("smtp", trusted)
    with client(migrated_url) as c:
        stats = run_sender(c, adapter, batch=10, once=True, poll_seconds=1)
    adapter.close()
    assert (stats.sent, stats.failed) == (2, 0)
    assert sorted(box.parsed()) == ["u1@example.com", "u2@example.com"]
    assert s.statuses(cdb) == {"sent": 2}


def test_smtp_never_logs_in_without_tls(tmp_path: Path) -> None:
    with pytest.raises(RecsysError, match=r"RECSYS_SMTP_USER is set but the connection .* would be plain text"):
        make_adapter("smtp", load_settings(env={}, smtp_user="shop", smtp_password="pw"))
    with pytest.raises(RecsysError, match="choose one"):
        make_adapter("smtp", load_settings(env={}, smtp_user="shop", smtp_ssl=True, smtp_starttls=True))
    with pytest.raises(RecsysError, match=r"RECSYS_SMTP_CA_FILE .*cannot load CA certificates"):
        make_adapter("smtp", load_settings(env={}, smtp_starttls=True, smtp_ca_file=str(tmp_path / "none.pem")))
    # with TLS the login is allowed; port 465 means implicit TLS
    assert make_adapter("smtp", load_settings(env={}, smtp_user="shop", smtp_starttls=True)) is not None
    implicit = make_adapter("smtp", load_settings(env={}, smtp_user="shop", smtp_port=465))
    assert isinstance(implicit, SmtpAdapter) and implicit.implicit_tls


def test_smtp_server_down_stops_the_batch_for_a_retry(cdb: Connection, migrated_url: str) -> None:
    s.published_offers(cdb, DAY, 3)
    settings = load_settings(env={}, smtp_host="127.0.0.1", smtp_port=1)  # nothing listens on port 1
    with client(migrated_url) as c:
        stats = run_sender(c, SmtpAdapter(settings), batch=10, once=True, poll_seconds=1)
    assert (stats.sent, stats.failed, stats.released, stats.claimed) == (0, 1, 2, 3)
    assert stats.channel_down is not None and "SMTP server 127.0.0.1:1" in stats.channel_down
    rows = fetch_all(cdb, "select status, attempts, last_error from recsys.campaign_offers order by user_id")
    assert {r["status"] for r in rows} == {"scheduled"}
    assert rows[0]["last_error"].startswith("SMTP server 127.0.0.1:1")
    assert all(r["last_error"].startswith("not tried: SMTP server 127.0.0.1:1") for r in rows[1:])
    assert [r["attempts"] for r in rows] == [1, 0, 0]  # only the offer that met the outage used an attempt


def test_an_outage_of_several_batches_uses_no_attempt_of_untried_offers(cdb: Connection, migrated_url: str) -> None:
    """The SMTP server is down for as many batches as an offer has attempts: in each batch only the
    offer that met the outage used an attempt; the others were given back untried, so no offer
    failed for good unless it was itself tried on every attempt."""
    s.published_offers(cdb, DAY, 4, max_attempts=3)
    settings = load_settings(env={}, smtp_host="127.0.0.1", smtp_port=1)  # nothing listens on port 1
    with client(migrated_url) as c:
        for _ in range(3):
            stats = run_sender(c, SmtpAdapter(settings), batch=10, once=True, poll_seconds=1)
            assert (stats.claimed, stats.sent, stats.failed) == (stats.released + 1, 0, 1)
            s.end_leases(cdb)  # the back-off runs out before the next batch
    rows = fetch_all(cdb, "select offer_id, status, attempts from recsys.campaign_offers order by offer_id")
    assert sum(r["attempts"] for r in rows) == 3  # one per batch
    assert all(r["status"] == "scheduled" or (r["status"], r["attempts"]) == ("failed", 3) for r in rows), rows
    # once the server is back, every offer still open is claimed on its next attempt
    with client(migrated_url) as c:
        claimed = sorted((o.offer_id, o.attempts) for o in c.claim(10))
    assert claimed == [(r["offer_id"], r["attempts"] + 1) for r in rows if r["status"] == "scheduled"]


def test_mask_address() -> None:
    assert mask_address("jane.doe@example.com") == "j***@example.com"
    assert mask_address("+15550000042") == "***42"
    assert mask_address("tok") == "***"


def test_scrub_masks_an_address_that_looks_like_a_replacement_template() -> None:
    # a push token ending in a backslash and a digit: its mask ***\1 is text, not a group reference
    token = "tok-abc\\1"
    assert scrub(f"push to {token} refused; {token.upper()} again", token) == "push to ***\\1 refused; ***\\1 again"
    assert scrub("to x\\g<0>", "x\\g<0>") == "to ***0>"


# --------------------------------------------------------------------------------------------
# Unsubscribe (RFC 2369 / RFC 8058)


def rendered_email_body() -> str:
    """A body as a campaign writes it: the shipped template, with the link left for the sender."""
    rules = load_rules()
    renderer = Renderer(
        load_catalog(), rules.templates_dir, fallback="there", sms_max_chars=160, validity_hours=rules.validity_hours
    )
    body = renderer.render("email", "discount", 10.0, None).fallback_body
    assert UNSUBSCRIBE_MARKER in body
    return body


def send_rendered_emails(cdb: Connection, url: str, settings: Settings, *, users: int) -> list[int]:
    """Offers to users 1..`users` whose body is a rendered email (with its unsubscribe marker), all
    sent once through the smtp adapter of `settings`; returns their offer ids."""
    s.add_users(cdb, 1, users)
    s.add_run(cdb, "r", DAY)
    ids = s.add_offers(cdb, "r", DAY, 1, users)
    with cdb.cursor() as cur:
        cur.execute("update recsys.campaign_offers set body = %s", (rendered_email_body(),))
    cdb.commit()
    adapter = make_adapter("smtp", settings)
    with client(url) as c:
        assert run_sender(c, adapter, batch=10, once=True, poll_seconds=1).sent == users
    adapter.close()
    return ids


def test_emails_carry_list_unsubscribe_headers_and_a_working_link(
    cdb: Connection, migrated_url: str, smtp_server: tuple[Mailbox, int], tmp_path: Path
) -> None:
    box, port = smtp_server
    settings = load_settings(
        env={},
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_from="shop@example.org",
        unsubscribe_url="https://shop.example/unsubscribe?offer={offer_id}&token={token}",
        unsubscribe_secret="unsub-secret",
    )
    ids = send_rendered_emails(cdb, migrated_url, settings, users=2)

    m = box.parsed()["u1@example.com"]
    token = hmac.new(b"unsub-secret", str(ids[0]).encode(), hashlib.sha256).hexdigest()
    url = f"https://shop.example/unsubscribe?offer={ids[0]}&token={token}"
    assert m["List-Unsubscribe"] == f"<{url}>"
    assert m["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    html_body = m.get_body(("html",)).get_content()
    assert f'<a href="{url.replace("&", "&amp;")}">Unsubscribe</a>' in html_body
    assert UNSUBSCRIBE_MARKER not in html_body and "Valid for 24 hours." in html_body
    assert f"Unsubscribe ({url})" in m.get_body(("plain",)).get_content()

    # the shop's endpoint: verify the token of the URL it got, then record the unsubscribe
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    offer_id = int(query["offer"][0])
    expected = hmac.new(b"unsub-secret", str(offer_id).encode(), hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, query["token"][0])
    assert not hmac.compare_digest(expected, hmac.new(b"unsub-secret", b"999", hashlib.sha256).hexdigest())
    with client(migrated_url) as c:
        assert c.record_event(offer_id, "unsubscribed", dt.datetime.now(dt.UTC))
    s.add_run(cdb, "next", DAY + dt.timedelta(days=1))
    s.add_offers(cdb, "next", DAY + dt.timedelta(days=1), 1, 2)
    with client(migrated_url) as c:
        jsonl = make_adapter("jsonl", settings, out=tmp_path / "email.jsonl")
        again = run_sender(c, jsonl, batch=10, once=True, poll_seconds=1)
    jsonl.close()
    assert again.sent == 1  # user 1 unsubscribed: the next day's offer was cancelled, not sent
    assert (
        fetch_value(cdb, "select status from recsys.campaign_offers where run_id = 'next' and user_id = 1")
        == "cancelled"
    )


def test_without_an_unsubscribe_url_emails_get_a_mailto(
    cdb: Connection, migrated_url: str, smtp_server: tuple[Mailbox, int]
) -> None:
    box, port = smtp_server
    settings = load_settings(env={}, smtp_host="127.0.0.1", smtp_port=port, smtp_from="shop@example.org")
    ids = send_rendered_emails(cdb, migrated_url, settings, users=1)
    m = box.parsed()["u1@example.com"]
    mailto = f"mailto:shop@example.org?subject=unsubscribe%20{ids[0]}"
    assert m["List-Unsubscribe"] == f"<{mailto}>"
    assert m["List-Unsubscribe-Post"] is None  # one-click (RFC 8058) needs an https URL
    assert f'<a href="{mailto}">Unsubscribe</a>' in m.get_body(("html",)).get_content()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"unsubscribe_url": "http://shop.example/u?o={offer_id}&t={token}"}, "expected an https:// URL"),
        ({"unsubscribe_url": "https://shop.example/u?o={offer_id}", "unsubscribe_secret": "k"}, "must contain {token}"),
        ({"unsubscribe_url": "https://shop.example/u/{offer_id}/{token}"}, "set RECSYS_UNSUBSCRIBE_SECRET"),
        (
            {"unsubscribe_url": "https://shop.example/u/{offer_id}/{token}/{user}", "unsubscribe_secret": "k"},
            "only {offer_id} and {token}",
        ),
        ({"unsubscribe_mailbox": "not a mailbox"}, "expected a plain address"),
    ],
)
def test_bad_unsubscribe_settings_stop_the_sender_before_it_claims(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(RecsysError, match=re.escape(message)):
        make_adapter("stdout", load_settings(env={}, **overrides), channel="email")
    make_adapter("stdout", load_settings(env={}, **overrides), channel="sms")  # only email has the link


# --------------------------------------------------------------------------------------------
# Webhook


@dataclass
class Hook:
    """What the webhook receiver got, and how it answers: `answer(path, headers, body)` gives
    (status, extra headers); by default 500 to the first request for each offer, then 202."""

    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    connections: set[int] = field(default_factory=set)
    seen: set[int] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    answer: Callable[[str, dict[str, str], bytes], tuple[int, dict[str, str]]] | None = None

    def default_answer(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str]]:
        offer_id = json.loads(body)["offer_id"]
        first = offer_id not in self.seen
        self.seen.add(offer_id)
        return (500 if first else 202), {}


def verify_signature(secret: str, headers: dict[str, str], body: bytes, now: float) -> bool:
    """The receiver's check, written from the sender guide's description (not the package's code)."""
    timestamp = headers.get("X-Recsys-Timestamp", "")
    signature = headers.get("X-Recsys-Signature", "")
    if not timestamp.isdigit() or abs(now - int(timestamp)) > 300:
        return False
    expected = "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


@pytest.fixture
def webhook() -> Iterator[tuple[Hook, str]]:
    hook = Hook()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver

        def _handle(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = dict(self.headers)
            with hook.lock:
                hook.requests.append((self.command, self.path, headers, body))
                hook.connections.add(self.client_address[1])
                status, extra = (hook.answer or hook.default_answer)(self.path, headers, body)
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        do_POST = _handle
        do_GET = _handle

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook, f"http://127.0.0.1:{server.server_address[1]}/offers"
    finally:
        server.shutdown()
        server.server_close()


def webhook_adapter(url: str, **overrides: object) -> WebhookAdapter:
    return WebhookAdapter(load_settings(env={}, webhook_url=url, webhook_secret=SECRET, **overrides))


def test_webhook_posts_json_with_idempotency_key_and_retries_after_500(
    cdb: Connection, migrated_url: str, webhook: tuple[Hook, str]
) -> None:
    hook, url = webhook
    ids = s.published_offers(cdb, DAY, 2, channel="push")
    adapter = webhook_adapter(url)
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
    adapter.close()
    assert (second.sent, second.failed) == (2, 0)
    assert s.statuses(cdb) == {"sent": 2}
    keys = sorted((h["Idempotency-Key"], json.loads(b)["offer_id"]) for _, _, h, b in hook.requests)
    assert keys == sorted([(f"recsys-offer-{i}", i) for i in ids] * 2)  # the same key on the retry
    _, _, headers, raw = hook.requests[-1]
    body = json.loads(raw)
    assert headers["Content-Type"] == "application/json"
    assert body["address"] == f"tok{body['user_id']}" and body["channel"] == "push"
    assert body["attempts"] == 2 and "unsubscribe_url" not in body  # only emails have the link
    assert len(hook.connections) == 1  # one keep-alive connection for all four requests


def test_webhook_signature_verifies_and_a_tampered_body_does_not(
    cdb: Connection, migrated_url: str, webhook: tuple[Hook, str]
) -> None:
    hook, url = webhook
    now = dt.datetime.now(dt.UTC).timestamp()

    def answer(path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str]]:
        return (202 if verify_signature(SECRET, headers, body, now) else 401), {}

    hook.answer = answer
    ids = s.published_offers(cdb, DAY, 3)
    adapter = webhook_adapter(url)
    with client(migrated_url) as c:
        stats = run_sender(c, adapter, batch=10, once=True, poll_seconds=1)
    adapter.close()
    assert (stats.sent, stats.failed) == (3, 0)  # the receiver verified every request
    assert s.statuses(cdb) == {"sent": 3}
    _, _, headers, body = hook.requests[0]
    assert headers["X-Recsys-Signature"].startswith("sha256=")
    assert json.loads(body)["offer_id"] in ids
    # what a receiver must refuse: another body, another secret, an old request replayed
    tampered = body.replace(b'"offer_value": 10.0', b'"offer_value": 90.0')
    assert tampered != body and not verify_signature(SECRET, headers, tampered, now)
    assert not verify_signature("another secret", headers, body, now)
    assert not verify_signature(SECRET, headers, body, now + 3600)
    # email offers carry their unsubscribe link and headers for whoever sends the email
    payload = json.loads(body)
    assert payload["unsubscribe_url"].startswith("mailto:offers@example.com?subject=unsubscribe")
    assert payload["headers"] == {"List-Unsubscribe": f"<{payload['unsubscribe_url']}>"}


def test_the_packaged_verify_refuses_malformed_headers_without_raising() -> None:
    body = b'{"offer_id": 1}'
    now = 1_790_000_000
    good = signed_headers(SECRET, body, now=now)
    assert verify(SECRET, good, body, now=now)
    bad = [
        {**good, "X-Recsys-Signature": "sha256=\u00e9" + good["X-Recsys-Signature"][8:]},  # not ASCII
        {**good, "X-Recsys-Signature": "sha256=\udcff"},  # a lone surrogate (undecodable bytes)
        {**good, "X-Recsys-Timestamp": "\u0661\u0667\u0669\u0660"},  # digits, but not ASCII ones
        {**good, "X-Recsys-Timestamp": "\u00b2"},  # isdigit() yet no int
        {**good, "X-Recsys-Timestamp": "1" * 5000},  # longer than int() converts
        {**good, "X-Recsys-Timestamp": ""},
    ]
    for headers in bad:
        assert verify(SECRET, headers, body, now=now) is False, headers


def test_webhook_redirect_is_a_failure_not_an_ack(
    cdb: Connection, migrated_url: str, webhook: tuple[Hook, str]
) -> None:
    hook, url = webhook

    def answer(path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str]]:
        return (302, {"Location": "/moved"}) if path == "/offers" else (200, {})

    hook.answer = answer
    s.published_offers(cdb, DAY, 2, channel="push")
    adapter = webhook_adapter(url)
    with client(migrated_url, channel="push") as c:
        stats = run_sender(c, adapter, batch=10, once=True, poll_seconds=1)
    adapter.close()
    assert (stats.sent, stats.failed) == (0, 2)
    assert s.statuses(cdb) == {"scheduled": 2}
    errors = {r["last_error"] for r in fetch_all(cdb, "select last_error from recsys.campaign_offers")}
    assert len(errors) == 1 and errors.pop().startswith("webhook answered HTTP 302 Found: a redirect to /moved")
    assert [(m, p) for m, p, _, _ in hook.requests] == [("POST", "/offers")] * 2  # /moved never asked


def test_webhook_retry_after_sets_the_offers_retry_time(
    cdb: Connection, migrated_url: str, webhook: tuple[Hook, str]
) -> None:
    hook, url = webhook
    retry_after = {"Retry-After": "900"}
    hook.answer = lambda path, headers, body: (429, retry_after)
    s.published_offers(cdb, DAY, 3, channel="push")
    adapter = webhook_adapter(url)

    def retry_in_seconds() -> list[float]:
        rows = fetch_all(
            cdb,
            "select extract(epoch from lease_until - clock_timestamp())::float as s from recsys.campaign_offers "
            "where status = 'scheduled' order by user_id",
        )
        cdb.commit()
        return [r["s"] for r in rows]

    with client(migrated_url, channel="push") as c:
        stats = run_sender(c, adapter, batch=10, once=True, poll_seconds=1)
        assert (stats.sent, stats.failed, stats.released) == (0, 1, 2)
        assert len(hook.requests) == 1  # asked to wait: the rest of the batch was not tried
        waits = retry_in_seconds()
        assert len(waits) == 3 and all(800 < w <= 900 for w in waits), waits  # not the 1-minute back-off
        assert "HTTP 429 Too Many Requests, retry after 900 s" in stats.channel_down

        s.end_leases(cdb)
        later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=30)
        retry_after["Retry-After"] = email.utils.format_datetime(later, usegmt=True)
        hook.answer = lambda path, headers, body: (503, retry_after)
        again = run_sender(c, adapter, batch=10, once=True, poll_seconds=1)
        assert (again.failed, again.released) == (1, 2)
    adapter.close()
    waits = retry_in_seconds()
    assert len(waits) == 3 and all(1700 < w <= 1800 for w in waits), waits


def test_parse_retry_after() -> None:
    now = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)
    assert parse_retry_after("120", now) == dt.timedelta(seconds=120)
    assert parse_retry_after("Sat, 21 Nov 2026 12:05:00 GMT", now) == dt.timedelta(minutes=5)
    assert parse_retry_after("Sat, 21 Nov 2026 11:00:00 GMT", now) == dt.timedelta(0)
    assert parse_retry_after("soon", now) is None and parse_retry_after(None, now) is None


def test_webhook_needs_an_http_url_and_a_secret() -> None:
    with pytest.raises(RecsysError, match="needs a URL: set RECSYS_WEBHOOK_URL"):
        WebhookAdapter(Settings())
    with pytest.raises(RecsysError, match="expected an http:// or https:// URL"):
        WebhookAdapter(Settings(webhook_url="file:///etc/passwd"))
    with pytest.raises(RecsysError, match="signs every request: set RECSYS_WEBHOOK_SECRET"):
        WebhookAdapter(Settings(webhook_url="https://shop.example/offers"))


def test_webhook_requires_https_except_to_this_machine() -> None:
    for url in ("http://shop.example/offers", "HTTP://user:pw@10.0.0.5:8080/offers?k=1", "http://127.0.0.1.nip.io/x"):
        with pytest.raises(RecsysError) as refused:
            WebhookAdapter(Settings(webhook_url=url, webhook_secret=SECRET))
        message = str(refused.value)
        assert "plain http:// only to this machine" in message and "use https://" in message, message
        assert "pw" not in message and "k=1" not in message  # no credentials or query string shown
    for url in (
        "https://shop.example/offers",
        "http://127.0.0.1:8080/offers",
        "http://[::1]:8080/offers",
        "http://localhost/offers",
        "http://LocalHost:9000/offers",
    ):
        WebhookAdapter(Settings(webhook_url=url, webhook_secret=SECRET)).close()


# --------------------------------------------------------------------------------------------
# jsonl


def test_jsonl_adapter_appends_one_object_per_offer(cdb: Connection, migrated_url: str, tmp_path: Path) -> None:
    ids = s.published_offers(cdb, DAY, 5, channel="sms")
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
