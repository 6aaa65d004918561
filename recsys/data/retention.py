"""Retention: drop date partitions older than the configured windows (`recsys db retention`).

Behaviour events are kept `event_retention_days` (whole monthly partitions only), features
`feature_retention_days` (per `as_of`), campaign offers and decisions the `[campaign] retention_days`
of the config file (daily partitions, with their holdout rows). Dropping a partition is instant and leaves no
bloat, which is why these tables are partitioned by date. Called by the CLI and, later, the nightly run.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from recsys.config.rules import CampaignRules
from recsys.db import Connection, fetch_value
from recsys.data.features import drop_old_features
from recsys.config.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetentionResult:
    event_partitions: int
    feature_partitions: int
    campaign_partitions: int = 0

    def describe(self) -> str:
        return (
            f"retention: dropped {self.event_partitions} behavior_events, {self.feature_partitions} "
            f"user_features and {self.campaign_partitions} campaign_offers partition(s)"
        )


def apply_retention(conn: Connection, settings: Settings, rules: CampaignRules, today: dt.date) -> RetentionResult:
    """Drop what is older than the retention windows (the settings' for events and features, the
    campaign rules' for offers), counted back from `today`; commits."""
    cutoff = dt.datetime.combine(today - dt.timedelta(days=settings.event_retention_days), dt.time(), dt.UTC)
    events = int(fetch_value(conn, "select recsys.drop_event_partitions_before(%s)", (cutoff,)))
    conn.commit()
    features = drop_old_features(conn, settings, today)
    # campaign_offers: daily partitions older than [campaign] retention_days (with their holdout rows)
    campaign_cutoff = today - dt.timedelta(days=rules.retention_days)
    campaigns = int(fetch_value(conn, "select recsys.drop_campaign_partitions_before(%s)", (campaign_cutoff,)))
    conn.commit()
    result = RetentionResult(events, features, campaigns)
    log.info("%s", result.describe())
    return result
