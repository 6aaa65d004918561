select shard from recsys.campaign_run_shards
where run_id = %(run_id)s and state = 'done'
