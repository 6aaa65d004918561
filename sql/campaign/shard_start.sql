insert into recsys.campaign_run_shards (run_id, shard, shard_count)
values (%(run_id)s, %(shard)s, %(shards)s)
on conflict (run_id, shard) do update
    set state = 'scoring', started_at = clock_timestamp(), finished_at = null
