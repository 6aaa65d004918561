delete from recsys.campaign_holdout as o
where o.campaign_date = %(day)s and (%(shards)s = 1 or recsys.in_campaign_shard(o.user_id, %(shards)s, %(shard)s))
