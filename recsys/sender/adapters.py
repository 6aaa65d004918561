"""Delivery adapters of the reference sender: where a claimed offer goes.

Each adapter's `send(offer)` either delivers the offer or raises `SendError` (the sender then calls
`fail_offer`, and the offer is retried after a back-off, or after the provider's `Retry-After`).
`ChannelDown`, a `SendError`, says the server or endpoint itself is unreachable or asks everyone to
wait: the sender stops that batch there (see `recsys.sender.run_sender`). Every adapter hands the
provider the offer's idempotency key (`recsys-offer-<offer_id>`), so a retry after a crash between
sending and acking can be deduplicated downstream. Email offers get their unsubscribe link and
`List-Unsubscribe` headers from `recsys.sender.unsubscribe` on every adapter.

- `stdout`: one JSON line per offer on standard output (a dry run you can pipe).
- `jsonl`: appends one JSON object per offer to a file, flushed after each (one write per line, so
  several sender processes can share the file).
- `smtp`: a real email to the user's address (stdlib smtplib) over one connection per sender, TLS
  verified (STARTTLS or implicit TLS), never a login in plain text; Message-ID derived from the offer id.
- `webhook`: an HTTPS POST of the offer as JSON (plain http only to a receiver on this machine;
  httpx, one keep-alive client per sender) with an `Idempotency-Key` header and an HMAC-SHA256
  signature (`recsys.sender.signature`); only a 2xx answer delivers: a redirect is not followed
  and fails the offer with its status.

Recipient addresses never appear in full in logs or `last_error`: `mask_address`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.errors
import email.utils
import html
import ipaddress
import json
import os
import re
import smtplib
import ssl
import sys
import urllib.parse
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol, TextIO

import httpx

from recsys.config.settings import Settings
from recsys.errors import RecsysError
from recsys.sender.protocol import Offer
from recsys.sender.signature import signed_headers
from recsys.sender.unsubscribe import UnsubscribeLinks

ADAPTERS = ("stdout", "jsonl", "smtp", "webhook")
_HTML_TAG = re.compile(r"<(html|body|p|div|br|a|table|span|h[1-6]|strong|em)\b", re.IGNORECASE)
_ANCHOR = re.compile(r"<a\s[^>]*?href=\"([^\"]*)\"[^>]*>(.*?)</a>", re.IGNORECASE | re.DOTALL)
SMTPS_PORT = 465


class SendError(Exception):
    """The offer could not be delivered this time (the sender reports it with `fail_offer`)."""

    def __init__(self, message: str, *, retry_after: dt.timedelta | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        """Not before this: the provider's `Retry-After`, passed on to `fail_offer`."""


class ChannelDown(SendError):
    """Not this offer's fault: the server cannot be reached or asks to wait, so the rest of the batch
    would fail the same way."""


def mask_address(address: str) -> str:
    """An address as logs and `last_error` show it: `j***@example.com`, a phone or token `***01`."""
    local, at, domain = address.rpartition("@")
    if at and local:
        return f"{local[0]}***@{domain}"
    return "***" + (address[-2:] if len(address) > 4 else "")


def scrub(text: str, address: str) -> str:
    """`text` with every occurrence of `address` (any case) masked."""
    if not address:
        return text
    masked = mask_address(address)
    # a function, not a replacement template: a mask ending in \1 or \g<0> is text, not a group reference
    return re.sub(re.escape(address), lambda _: masked, text, flags=re.IGNORECASE)


class Adapter(Protocol):
    name: str

    def send(self, offer: Offer) -> None: ...

    def close(self) -> None: ...


class StdoutAdapter:
    name = "stdout"

    def __init__(self, stream: TextIO | None = None, links: UnsubscribeLinks | None = None) -> None:
        self.stream = stream or sys.stdout
        self.links = links

    def send(self, offer: Offer) -> None:
        if self.links is not None:
            offer = self.links.apply(offer)
        self.stream.write(offer.to_json() + "\n")
        self.stream.flush()

    def close(self) -> None:
        pass


class JsonlAdapter:
    name = "jsonl"

    def __init__(self, path: Path, links: UnsubscribeLinks | None = None) -> None:
        self.path = path
        self.links = links
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_APPEND and one os.write per line: concurrent senders never interleave within a line.
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def send(self, offer: Offer) -> None:
        if self.links is not None:
            offer = self.links.apply(offer)
        try:
            os.write(self.fd, (offer.to_json() + "\n").encode("utf-8"))
        except OSError as e:
            raise SendError(f"cannot append to {self.path}: {e.strerror or e}") from e

    def close(self) -> None:
        os.close(self.fd)


def html_to_text(body: str) -> str:
    """The plain-text alternative of an html body: links kept as "text (url)", tags dropped."""
    text = _ANCHOR.sub(lambda m: f"{m.group(2)} ({m.group(1)})", body)
    return html.unescape(re.sub(r"<[^>]+>", "", text))


class SmtpAdapter:
    """One SMTP connection per sender, reopened once if the server dropped it.

    TLS: `RECSYS_SMTP_STARTTLS` upgrades the connection, `RECSYS_SMTP_SSL` (or port 465) speaks TLS
    from the start; either way with `ssl.create_default_context()` (certificate chain and host name
    verified), trusting `RECSYS_SMTP_CA_FILE` as well when set. A login (`RECSYS_SMTP_USER`) without
    TLS is refused when the adapter is made, before any offer is claimed.

    A problem with one offer (a header value with a line break, an address that is not one, a
    recipient or message the server refuses) fails that offer only; a connection that cannot be
    opened, verified or kept raises `ChannelDown`.
    """

    name = "smtp"

    def __init__(self, settings: Settings, links: UnsubscribeLinks | None = None) -> None:
        s = settings
        self.settings = settings
        self.server = f"SMTP server {s.smtp_host}:{s.smtp_port}"
        self.domain = s.smtp_from.rpartition("@")[2] or "recsys.invalid"
        self.links = links or UnsubscribeLinks.from_settings(settings)
        if s.smtp_ssl and s.smtp_starttls:
            raise RecsysError(
                "RECSYS_SMTP_SSL and RECSYS_SMTP_STARTTLS are both set: choose one "
                "(SSL for implicit TLS, usually port 465; STARTTLS, usually port 587)"
            )
        self.implicit_tls = s.smtp_ssl or (s.smtp_port == SMTPS_PORT and not s.smtp_starttls)
        self.tls = self.implicit_tls or s.smtp_starttls
        if s.smtp_user and not self.tls:
            raise RecsysError(
                f"RECSYS_SMTP_USER is set but the connection to {s.smtp_host}:{s.smtp_port} would be plain text: "
                "set RECSYS_SMTP_STARTTLS=true (or RECSYS_SMTP_SSL=true for port 465); "
                "the password is never sent without TLS"
            )
        self.context = self._tls_context() if self.tls else None
        self.smtp: smtplib.SMTP | None = None

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        ca_file = self.settings.smtp_ca_file
        if ca_file:
            try:
                context.load_verify_locations(cafile=ca_file)
            except (OSError, ssl.SSLError) as e:
                raise RecsysError(f"RECSYS_SMTP_CA_FILE {ca_file}: cannot load CA certificates: {e}") from e
        return context

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        smtp: smtplib.SMTP | None = None
        try:
            if self.implicit_tls:
                smtp = smtplib.SMTP_SSL(s.smtp_host, s.smtp_port, timeout=30, context=self.context)
            else:
                smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=30)
                if s.smtp_starttls:
                    smtp.starttls(context=self.context)
            if s.smtp_user:
                smtp.login(s.smtp_user, s.smtp_password)
        except ssl.SSLCertVerificationError as e:
            self._drop(smtp)
            raise ChannelDown(
                f"{self.server}: TLS certificate not trusted ({e.verify_message}); "
                "set RECSYS_SMTP_CA_FILE to trust a private CA"
            ) from e
        except smtplib.SMTPNotSupportedError as e:
            self._drop(smtp)
            raise ChannelDown(f"{self.server}: {e} (the server offers no STARTTLS)") from e
        except smtplib.SMTPAuthenticationError as e:
            self._drop(smtp)
            raise ChannelDown(f"{self.server}: login refused: {e.smtp_code} {_text(e.smtp_error)}") from e
        except (OSError, smtplib.SMTPException) as e:
            self._drop(smtp)
            raise ChannelDown(f"{self.server}: {e}") from e
        return smtp

    @staticmethod
    def _drop(smtp: smtplib.SMTP | None) -> None:
        if smtp is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                smtp.close()

    def message(self, offer: Offer) -> EmailMessage:
        """The email of one offer; SendError when a value cannot go into a header as it is."""
        offer = self.links.apply(offer)
        try:
            Address(addr_spec=offer.address)
        except (ValueError, email.errors.MessageError) as e:
            raise SendError(f"recipient {mask_address(offer.address)} is not a usable email address: {e}") from e
        msg = EmailMessage()
        headers = [
            ("From", self.settings.smtp_from),
            ("To", offer.address),
            ("Subject", offer.subject or "An offer for you"),
            ("Date", email.utils.formatdate(usegmt=True)),
            # The same offer always gets the same Message-ID: a retry is recognisably the same message.
            ("Message-ID", f"<{offer.idempotency_key}@{self.domain}>"),
            ("X-Recsys-Offer-Id", str(offer.offer_id)),
            ("Idempotency-Key", offer.idempotency_key),
            *offer.headers,
        ]
        for name, value in headers:
            if "\r" in value or "\n" in value:
                raise SendError(f"the {name} header would contain a line break: offer {offer.offer_id} not sent")
            try:
                msg[name] = value
            except (ValueError, email.errors.MessageError) as e:
                raise SendError(f"the {name} header: {e}") from e
        if _HTML_TAG.search(offer.body):
            msg.set_content(html_to_text(offer.body))
            msg.add_alternative(offer.body, subtype="html")
        else:
            msg.set_content(offer.body)
        return msg

    def send(self, offer: Offer) -> None:
        msg = self.message(offer)
        for attempt in (1, 2):
            if self.smtp is None:
                self.smtp = self._connect()
            try:
                self.smtp.send_message(msg)
                return
            except smtplib.SMTPServerDisconnected as e:
                self.smtp = None
                if attempt == 2:
                    raise ChannelDown(f"{self.server} disconnected: {e}") from e
            except smtplib.SMTPRecipientsRefused as e:
                self._forget_if_closed()
                codes = "; ".join(f"{code} {_text(text)}" for code, text in e.recipients.values())
                raise SendError(f"recipient {mask_address(offer.address)} refused: {codes}") from e
            except smtplib.SMTPDataError as e:
                # the server took the connection's commands but refused this message
                self._forget_if_closed()
                raise SendError(f"message refused: {e.smtp_code} {_text(e.smtp_error)}") from e
            except smtplib.SMTPNotSupportedError as e:
                raise SendError(f"cannot send this message: {e}") from e
            except smtplib.SMTPSenderRefused as e:
                self.close()
                raise ChannelDown(
                    f"{self.server}: sender {self.settings.smtp_from} refused: {e.smtp_code} {_text(e.smtp_error)}"
                ) from e
            except (smtplib.SMTPException, OSError) as e:
                self.close()
                raise ChannelDown(f"{self.server}: {e}") from e

    def _forget_if_closed(self) -> None:
        """smtplib closes the socket itself on some answers (421): reconnect next time."""
        if self.smtp is not None and getattr(self.smtp, "sock", None) is None:
            self.smtp = None

    def close(self) -> None:
        if self.smtp is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self.smtp.quit()
            self.smtp = None


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def parse_retry_after(value: str | None, now: dt.datetime | None = None) -> dt.timedelta | None:
    """A `Retry-After` header (seconds, or an HTTP date) as a delay; None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return dt.timedelta(seconds=int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(when - (now or dt.datetime.now(dt.UTC)), dt.timedelta(0))


def _is_loopback(host: str) -> bool:
    """localhost, or a loopback address (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WebhookAdapter:
    """POSTs each offer as JSON over one keep-alive connection, signed; only a 2xx delivers."""

    name = "webhook"

    def __init__(self, settings: Settings, links: UnsubscribeLinks | None = None) -> None:
        if not settings.webhook_url:
            raise RecsysError("the webhook adapter needs a URL: set RECSYS_WEBHOOK_URL")
        parts = urllib.parse.urlsplit(settings.webhook_url)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise RecsysError(f"RECSYS_WEBHOOK_URL {settings.webhook_url!r}: expected an http:// or https:// URL")
        # what messages show: no user:password@ or query string from the setting
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        self.shown_url = f"{parts.scheme.lower()}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"
        # The body carries the recipient's address and the offer, and the signature proves only who
        # sent it: over plain http anyone on the way reads them. A receiver on this machine is the
        # one exception (a local relay, the tests).
        if parts.scheme.lower() == "http" and not _is_loopback(parts.hostname):
            raise RecsysError(
                f"RECSYS_WEBHOOK_URL {self.shown_url}: plain http:// only to this machine "
                "(127.0.0.1, ::1, localhost): use https://"
            )
        if not settings.webhook_secret:
            raise RecsysError(
                "the webhook adapter signs every request: set RECSYS_WEBHOOK_SECRET to the secret "
                "shared with the receiver (see docs/integrate-a-sender.md, 'Webhook')"
            )
        self.url = settings.webhook_url
        self.secret = settings.webhook_secret
        self.links = links or UnsubscribeLinks.from_settings(settings)
        timeout = settings.webhook_timeout_seconds or 10
        # One client per sender: its connection pool keeps the connection alive between offers.
        # Redirects are never followed: a 30x is not a delivery (following a 302/303 turns the POST
        # into a body-less GET whose 200 would be taken for an ack).
        self.client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            headers={"User-Agent": "recsys-sender"},
        )

    def send(self, offer: Offer) -> None:
        offer = self.links.apply(offer)
        body = json.dumps(offer.as_json(), ensure_ascii=False).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": offer.idempotency_key,
            **signed_headers(self.secret, body),
        }
        try:
            response = self.client.post(self.url, content=body, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as e:
            raise ChannelDown(f"webhook {self.shown_url}: cannot connect: {e}") from e
        except httpx.HTTPError as e:
            raise SendError(f"webhook {self.shown_url}: {type(e).__name__}: {e}") from e
        status = response.status_code
        if 200 <= status < 300:
            return
        answer = f"webhook answered HTTP {status} {response.reason_phrase}".rstrip()
        if 300 <= status < 400:
            location = response.headers.get("Location", "")[:200]
            raise SendError(
                f"{answer}: a redirect{f' to {location}' if location else ''} is not a delivery and is not "
                "followed; set RECSYS_WEBHOOK_URL to the final URL"
            )
        if status in (429, 503):
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if retry_after is not None:
                answer += f", retry after {int(retry_after.total_seconds())} s"
            raise ChannelDown(answer, retry_after=retry_after)
        raise SendError(answer)

    def close(self) -> None:
        self.client.close()


def make_adapter(name: str, settings: Settings, *, out: Path | None = None, channel: str = "email") -> Adapter:
    """The adapter called `name`; `out` is the jsonl file (default data/outbox/<channel>.jsonl).

    Settings are checked here, so a sender refuses to start on a bad one before claiming anything."""
    links = UnsubscribeLinks.from_settings(settings) if channel == "email" else None
    if name == "stdout":
        return StdoutAdapter(links=links)
    if name == "jsonl":
        return JsonlAdapter(out or settings.data_dir / "outbox" / f"{channel}.jsonl", links=links)
    if name == "smtp":
        if channel != "email":
            raise RecsysError(f"the smtp adapter sends email, not {channel}")
        return SmtpAdapter(settings, links=links)
    if name == "webhook":
        return WebhookAdapter(settings, links=links)
    raise RecsysError(f"--adapter {name!r}: expected one of {', '.join(ADAPTERS)}")
