-- the date's campaign_offers and campaign_decisions partitions, created if missing (shards share them)
select
    recsys.ensure_campaign_partition(%(day)s) as offers_created,
    recsys.ensure_decisions_partition(%(day)s) as decisions_created
