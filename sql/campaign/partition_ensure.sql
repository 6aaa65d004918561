-- the date's campaign_offers and campaign_decisions partitions, created if missing (shards share them:
-- sub-partitioned by hash of user_id, each shard attaching its own)
select
    recsys.ensure_campaign_partition(%(day)s, %(shards)s) as offers_created,
    recsys.ensure_decisions_partition(%(day)s, %(shards)s) as decisions_created
