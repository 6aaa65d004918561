"""The reference sender (`recsys send`): claims due offers in batches, delivers each through an
adapter, and acks or fails it through the sender protocol (contract section 3).

It holds no state of its own: everything is in `campaign_offers`. Stopping (SIGINT/SIGTERM) finishes
the offer being delivered and acks it; offers claimed but not yet delivered are left to their lease,
after which any sender claims them again, so nothing is lost and nothing is sent twice by us.

A failure of one offer (`SendError`) fails that offer and the sender goes on with the next. When
the server or endpoint itself is down or asks to wait (`ChannelDown`), the offer that met it is
failed (it was tried: the attempt counts), the rest of the batch is given back untried with
`release_offer` (each would only wait for the same timeout; their attempts are not used up, so an
outage of any length fails no offer that was never tried), and the sender pauses: `--once` ends the
run, a polling sender waits before claiming again.
Addresses are masked in every log line and `last_error`.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from recsys.sender.adapters import Adapter, ChannelDown, SendError, mask_address, scrub
from recsys.sender.protocol import ProtocolClient

log = logging.getLogger(__name__)


@dataclass
class SendStats:
    """What one sender run did."""

    claimed: int = 0
    sent: int = 0
    failed: int = 0
    released: int = 0
    """Claimed offers given back untried because their channel was down (no attempt used)."""
    refused_acks: int = 0
    channel_down: str | None = None
    """The last error that stopped a batch (server or endpoint down), if any."""
    seconds: float = 0.0
    claim_seconds: float = 0.0
    deliver_seconds: float = 0.0
    report_seconds: float = 0.0
    stopped: bool = False

    def describe(self) -> str:
        rate = self.sent / self.seconds if self.seconds > 0 else 0.0
        text = f"claimed {self.claimed:,}, sent {self.sent:,}, failed {self.failed:,}"
        if self.released:
            text += f", {self.released:,} given back untried (channel down)"
        if self.refused_acks:
            text += f", {self.refused_acks:,} acks refused (claim taken over)"
        text += f" in {self.seconds:.1f} s ({rate:,.0f} offers/s"
        if self.seconds > 0:
            text += (
                f"; claiming {self.claim_seconds / self.seconds:.0%}"
                f", delivering {self.deliver_seconds / self.seconds:.0%}"
                f", acking {self.report_seconds / self.seconds:.0%}"
            )
        text += ")"
        if self.channel_down:
            text += f"; last batch stopped: {self.channel_down}"
        return text + (" - stopped by signal" if self.stopped else "")


# the longest a polling sender waits after its server was down or asked it to wait
MAX_PAUSE_SECONDS = 300.0


def default_worker() -> str:
    """A worker name unique per process: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def run_sender(
    client: ProtocolClient,
    adapter: Adapter,
    *,
    batch: int,
    once: bool,
    poll_seconds: float,
    stop: threading.Event | None = None,
) -> SendStats:
    """Claim, deliver, ack/fail until nothing is due (`once`) or `stop` is set."""
    stop = stop or threading.Event()
    stats = SendStats()
    started = time.perf_counter()
    try:
        while not stop.is_set():
            t0 = time.perf_counter()
            offers = client.claim(batch)
            stats.claim_seconds += time.perf_counter() - t0
            stats.claimed += len(offers)
            if not offers:
                if once:
                    break
                stop.wait(poll_seconds)
                continue
            pause: float | None = None
            for i, offer in enumerate(offers):
                if stop.is_set():
                    break  # the rest of the batch stays claimed until its lease runs out
                t0 = time.perf_counter()
                try:
                    adapter.send(offer)
                except SendError as e:
                    t1 = time.perf_counter()
                    error = scrub(str(e), offer.address)
                    log.warning("offer %s to %s failed: %s", offer.offer_id, mask_address(offer.address), error)
                    client.fail(offer.offer_id, error, e.retry_after)
                    stats.failed += 1
                    if isinstance(e, ChannelDown):
                        rest = offers[i + 1 :]
                        for other in rest:
                            client.release(other.offer_id, f"not tried: {error}", e.retry_after)
                        stats.released += len(rest)
                        stats.channel_down = error
                        log.warning("batch stopped, %d offers given back untried for a retry: %s", len(rest), error)
                        wait = e.retry_after.total_seconds() if e.retry_after else 0.0
                        pause = min(max(poll_seconds, wait), MAX_PAUSE_SECONDS)
                    stats.deliver_seconds += t1 - t0
                    stats.report_seconds += time.perf_counter() - t1
                    if pause is not None:
                        break
                    continue
                t1 = time.perf_counter()
                acked = client.ack(offer.offer_id)
                stats.deliver_seconds += t1 - t0
                stats.report_seconds += time.perf_counter() - t1
                if acked:
                    stats.sent += 1
                else:
                    stats.refused_acks += 1
                    log.warning("offer %s: ack refused, another sender holds it now", offer.offer_id)
            if pause is not None:
                if once:
                    break
                stop.wait(pause)
    finally:
        stats.stopped = stop.is_set()
        stats.seconds = time.perf_counter() - started
    return stats


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM while the block runs (the previous handlers come back after)."""
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        log.info("%s: finishing the current offer, then stopping", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
