"""Retention: drop date partitions older than the configured windows (`recsys db retention`).

Behaviour events are kept `event_retention_days` (whole monthly partitions only), features
`feature_retention_days` (per `as_of`). Dropping a partition is instant and leaves no bloat, which
is why both tables are partitioned by date. Called by the CLI and, later, the nightly run.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from recsys.db import Connection, fetch_value
from recsys.features import drop_old_features
from recsys.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetentionResult:
    event_partitions: int
    feature_partitions: int

    def describe(self) -> str:
        return (
            f"retention: dropped {self.event_partitions} behavior_events and "
            f"{self.feature_partitions} user_features partition(s)"
        )


def apply_retention(conn: Connection, settings: Settings, today: dt.date) -> RetentionResult:
    """Drop what is older than the retention windows, counted back from `today`; commits."""
    cutoff = dt.datetime.combine(today - dt.timedelta(days=settings.event_retention_days), dt.time(), dt.UTC)
    events = int(fetch_value(conn, "select recsys.drop_event_partitions_before(%s)", (cutoff,)))
    conn.commit()
    features = drop_old_features(conn, settings, today)
    result = RetentionResult(events, features)
    log.info("%s", result.describe())
    return result
