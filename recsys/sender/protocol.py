"""Client of the sender protocol (contract section 3): claim, ack, fail and release offers via the SQL functions.

Used by the reference sender (`recsys send`); any other sender can call the same functions
from its own language with only the sender role's privileges. Each call is its own transaction
(autocommit), so a claim is visible to other senders at once and a crash leaves only leases that
run out.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

import psycopg2
import psycopg2.extensions

from recsys.config.catalog import ALLOWED_CHANNELS
from recsys.db import open_connection
from recsys.errors import RecsysError

CHANNELS = ALLOWED_CHANNELS


@dataclass(frozen=True)
class Offer:
    """One claimed offer, as `claim_offers` returns it (the last two fields are added by the sender:
    an email's unsubscribe link and headers, see `recsys.sender.unsubscribe`)."""

    offer_id: int
    user_id: int
    channel: str
    address: str
    subject: str | None
    body: str
    offer_type: str
    offer_value: Decimal
    scheduled_at: dt.datetime
    expires_at: dt.datetime
    attempts: int
    unsubscribe_url: str | None = None
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def idempotency_key(self) -> str:
        """What a provider deduplicates on: the offer id, stable across retries and senders."""
        return f"recsys-offer-{self.offer_id}"

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["offer_value"] = float(self.offer_value)
        out["scheduled_at"] = self.scheduled_at.isoformat()
        out["expires_at"] = self.expires_at.isoformat()
        out["idempotency_key"] = self.idempotency_key
        # only emails have these: the JSON of sms and push offers stays as it was
        if self.unsubscribe_url is None:
            del out["unsubscribe_url"]
        if self.headers:
            out["headers"] = dict(self.headers)
        else:
            del out["headers"]
        return out

    def to_json(self) -> str:
        return json.dumps(self.as_json(), ensure_ascii=False, sort_keys=True)


class ProtocolClient:
    """A worker's connection to the protocol functions."""

    def __init__(self, url: str, *, channel: str, worker: str, lease_seconds: int) -> None:
        if channel not in CHANNELS:
            raise RecsysError(f"--channel {channel!r}: expected one of {', '.join(CHANNELS)}")
        if lease_seconds <= 0:
            raise RecsysError(f"lease of {lease_seconds} s: must be > 0")
        self.channel = channel
        self.worker = worker
        self.lease = dt.timedelta(seconds=lease_seconds)
        self.conn = open_connection(url, application_name=f"recsys-sender {worker}")
        self.conn.autocommit = True
        with self.conn.cursor() as cur:
            cur.execute("set time zone 'UTC'")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> ProtocolClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def claim(self, max_rows: int) -> list[Offer]:
        """Lease up to `max_rows` due offers of this client's channel."""
        rows = self._call(
            "select * from recsys.claim_offers(%s, %s, %s, %s)", (self.channel, self.worker, max_rows, self.lease)
        )
        return [Offer(*row) for row in rows]

    def ack(self, offer_id: int) -> bool:
        """Mark sent; False when this worker no longer holds the claim (someone re-claimed it)."""
        return bool(self._call("select recsys.ack_offer(%s, %s)", (offer_id, self.worker))[0][0])

    def fail(self, offer_id: int, error: str, retry_after: dt.timedelta | None = None) -> bool:
        """Report a failed send: retried after a back-off until the attempts run out."""
        return bool(
            self._call("select recsys.fail_offer(%s, %s, %s, %s)", (offer_id, self.worker, error, retry_after))[0][0]
        )

    def release(self, offer_id: int, reason: str | None = None, retry_after: dt.timedelta | None = None) -> bool:
        """Give back a claimed offer that was not tried (its channel is down), without using an
        attempt; claimable again after `retry_after`. False when this worker no longer holds it."""
        rows = self._call("select recsys.release_offer(%s, %s, %s, %s)", (offer_id, self.worker, retry_after, reason))
        return bool(rows[0][0])

    def record_event(
        self, offer_id: int, event: str, event_at: dt.datetime, revenue: Decimal | float | None = None
    ) -> bool:
        """Record an outcome; True if it was new (the first report of this event for this offer wins)."""
        return bool(
            self._call("select recsys.record_offer_event(%s, %s, %s, %s)", (offer_id, event, event_at, revenue))[0][0]
        )

    def _call(self, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        try:
            with self.conn.cursor() as cur:
                cur.execute(query, params)
                return cur.fetchall()
        except psycopg2.errors.InsufficientPrivilege as e:
            raise RecsysError(f"the database role may not call the sender protocol: {e.pgerror.strip()}") from e
        except psycopg2.errors.UndefinedFunction as e:
            raise RecsysError("the sender protocol functions are missing: run `recsys db migrate`") from e
        except psycopg2.errors.InvalidParameterValue as e:
            raise RecsysError((e.diag.message_primary or str(e)).strip()) from e
