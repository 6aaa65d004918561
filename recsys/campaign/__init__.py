"""Campaigns: score every active user for a campaign date, write scheduled offers, publish the run.

The API the CLI and the Airflow DAGs call, each with a connection it opened through recsys.db and
the product config (`recsys.config.load_config`):

- `score_campaign(conn, settings, campaign_date, *, config, run_id=None, shard=None, shards=1,
  dry_run=False, model_version=None, publish_at=None) -> dict`: scores the date (or shard K of N)
  and, unsharded, publishes it;
- `publish_run(conn, settings, run_id, *, published_at=None) -> dict`: makes a sharded run's offers
  claimable once every shard is done.
"""

from __future__ import annotations

from recsys.campaign.score import publish_run, score_campaign
from recsys.config.rules import CampaignRules, load_rules

__all__ = ["CampaignRules", "load_rules", "publish_run", "score_campaign"]
