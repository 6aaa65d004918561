"""Delivery adapters of the reference sender: where a claimed offer goes.

Each adapter's `send(offer)` either delivers the offer or raises `SendError` (the sender then calls
`fail_offer`, and the offer is retried after a back-off). Every adapter hands the provider the
offer's idempotency key (`recsys-offer-<offer_id>`), so a retry after a crash between sending and
acking can be deduplicated downstream.

- `stdout`: one JSON line per offer on standard output (a dry run you can pipe).
- `jsonl`: appends one JSON object per offer to a file, flushed after each (one write per line, so
  several sender processes can share the file).
- `smtp`: a real email to the user's address (stdlib smtplib), Message-ID derived from the offer id.
- `webhook`: an HTTP POST of the offer as JSON with an `Idempotency-Key` header; non-2xx fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import smtplib
import sys
import urllib.error
import urllib.request
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path
from typing import Protocol, TextIO

from recsys.errors import RecsysError
from recsys.sender.protocol import Offer
from recsys.settings import Settings

ADAPTERS = ("stdout", "jsonl", "smtp", "webhook")
_HTML_TAG = re.compile(r"<(html|body|p|div|br|a|table|span|h[1-6]|strong|em)\b", re.IGNORECASE)


class SendError(Exception):
    """The offer could not be delivered this time (the sender reports it with `fail_offer`)."""


class Adapter(Protocol):
    name: str

    def send(self, offer: Offer) -> None: ...

    def close(self) -> None: ...


class StdoutAdapter:
    name = "stdout"

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def send(self, offer: Offer) -> None:
        self.stream.write(offer.to_json() + "\n")
        self.stream.flush()

    def close(self) -> None:
        pass


class JsonlAdapter:
    name = "jsonl"

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_APPEND and one os.write per line: concurrent senders never interleave within a line.
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def send(self, offer: Offer) -> None:
        try:
            os.write(self.fd, (offer.to_json() + "\n").encode("utf-8"))
        except OSError as e:
            raise SendError(f"cannot append to {self.path}: {e.strerror or e}") from e

    def close(self) -> None:
        os.close(self.fd)


class SmtpAdapter:
    """One SMTP connection per sender, reopened once if the server dropped it."""

    name = "smtp"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.domain = settings.smtp_from.rpartition("@")[2] or "recsys.invalid"
        self.smtp: smtplib.SMTP | None = None

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        try:
            smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=30)
            if s.smtp_starttls:
                smtp.starttls()
            if s.smtp_user:
                smtp.login(s.smtp_user, s.smtp_password)
        except (OSError, smtplib.SMTPException) as e:
            raise SendError(f"SMTP server {s.smtp_host}:{s.smtp_port}: {e}") from e
        return smtp

    def message(self, offer: Offer) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self.settings.smtp_from
        msg["To"] = offer.address
        msg["Subject"] = offer.subject or "An offer for you"
        msg["Date"] = formatdate(usegmt=True)
        # The same offer always gets the same Message-ID: a retry is recognisably the same message.
        msg["Message-ID"] = f"<{offer.idempotency_key}@{self.domain}>"
        msg["X-Recsys-Offer-Id"] = str(offer.offer_id)
        msg["Idempotency-Key"] = offer.idempotency_key
        if _HTML_TAG.search(offer.body):
            msg.set_content(re.sub(r"<[^>]+>", "", offer.body))
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
                    raise SendError(f"SMTP server disconnected: {e}") from e
            except smtplib.SMTPRecipientsRefused as e:
                raise SendError(f"recipient {offer.address} refused: {e.recipients}") from e
            except (smtplib.SMTPException, OSError) as e:
                self.close()
                raise SendError(f"SMTP: {e}") from e

    def close(self) -> None:
        if self.smtp is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self.smtp.quit()
            self.smtp = None


class WebhookAdapter:
    name = "webhook"

    def __init__(self, settings: Settings) -> None:
        if not settings.webhook_url:
            raise RecsysError("the webhook adapter needs a URL: set RECSYS_WEBHOOK_URL")
        if not settings.webhook_url.startswith(("http://", "https://")):
            raise RecsysError(f"RECSYS_WEBHOOK_URL {settings.webhook_url!r}: expected an http:// or https:// URL")
        self.url = settings.webhook_url
        self.timeout = settings.webhook_timeout_seconds or 10

    def send(self, offer: Offer) -> None:
        request = urllib.request.Request(
            self.url,
            data=json.dumps(offer.as_json(), ensure_ascii=False).encode("utf-8"),
            headers={"Content-Type": "application/json", "Idempotency-Key": offer.idempotency_key},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
                status = response.status
        except urllib.error.HTTPError as e:
            raise SendError(f"webhook answered HTTP {e.code} {e.reason}") from e
        except (urllib.error.URLError, OSError) as e:
            raise SendError(f"webhook {self.url}: {getattr(e, 'reason', e)}") from e
        if not 200 <= status < 300:
            raise SendError(f"webhook answered HTTP {status}")

    def close(self) -> None:
        pass


def make_adapter(name: str, settings: Settings, *, out: Path | None = None, channel: str = "email") -> Adapter:
    """The adapter called `name`; `out` is the jsonl file (default data/outbox/<channel>.jsonl)."""
    if name == "stdout":
        return StdoutAdapter()
    if name == "jsonl":
        return JsonlAdapter(out or settings.data_dir / "outbox" / f"{channel}.jsonl")
    if name == "smtp":
        if channel != "email":
            raise RecsysError(f"the smtp adapter sends email, not {channel}")
        return SmtpAdapter(settings)
    if name == "webhook":
        return WebhookAdapter(settings)
    raise RecsysError(f"--adapter {name!r}: expected one of {', '.join(ADAPTERS)}")
