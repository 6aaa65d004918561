"""Signature of the webhook adapter's requests, and its check for receivers written in Python.

Every POST carries two headers:

- `X-Recsys-Timestamp`: the Unix time (whole seconds) the request was signed at;
- `X-Recsys-Signature`: `sha256=` and the hex HMAC-SHA256, keyed with the shared secret
  (`RECSYS_WEBHOOK_SECRET`), of the timestamp, a dot, and the exact body bytes: `b"<timestamp>." + body`.

A receiver recomputes the HMAC over the raw body it read (before any JSON parsing), compares it in
constant time, and refuses a timestamp further than a few minutes from its clock, so a captured
request cannot be replayed later (the same scheme as Stripe's and Slack's webhooks). Within that
window a replay is the same offer with the same `Idempotency-Key`, which the receiver deduplicates.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

SIGNATURE_HEADER = "X-Recsys-Signature"
TIMESTAMP_HEADER = "X-Recsys-Timestamp"
TOLERANCE_SECONDS = 300


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The `X-Recsys-Signature` value for a body sent at `timestamp`."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def signed_headers(secret: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """Both headers for a request about to be sent."""
    timestamp = int(time.time() if now is None else now)
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: sign(secret, timestamp, body)}


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_seconds: int = TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """True when the request was signed with `secret` over exactly `body`, recently enough.

    `headers` must look names up case-insensitively (as HTTP frameworks' header objects do).
    Malformed headers (not ASCII, a timestamp that is not a plain number) are False, never an error."""
    timestamp, signature = headers.get(TIMESTAMP_HEADER), headers.get(SIGNATURE_HEADER)
    if not timestamp or not signature or not _plain_ascii(signature):
        return False
    # ASCII digits only (str.isdigit also takes other scripts' digits and superscripts), and no
    # longer than a Unix time could be (int() refuses thousands of digits)
    if not (_plain_ascii(timestamp) and timestamp.isdigit() and len(timestamp) <= 12):
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body).encode("ascii"), signature.encode("ascii"))


def _plain_ascii(value: str) -> bool:
    return isinstance(value, str) and value.isascii()
