-- a re-run replaces: the shard's recorded decisions of the date go (the insert that follows writes them anew)
delete from recsys.campaign_decisions as d
where d.campaign_date = %(day)s and (%(shards)s = 1 or recsys.in_campaign_shard(d.user_id, %(shards)s, %(shard)s))
