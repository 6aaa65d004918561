update recsys.campaign_run_shards
set state = 'done', counts = %(counts)s, timings = %(timings)s, finished_at = clock_timestamp()
where run_id = %(run_id)s and shard = %(shard)s
