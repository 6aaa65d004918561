-- a run that cannot attach its own hash sub-partitions of a sharded date fills the missing ones
select
    recsys.complete_date_partition('campaign_offers', %(day)s, %(shards)s) as offers_created,
    recsys.complete_date_partition('campaign_decisions', %(day)s, %(shards)s) as decisions_created
