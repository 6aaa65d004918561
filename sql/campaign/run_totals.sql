update recsys.campaign_runs
set
    counts = %(counts)s,
    timings = %(timings)s,
    finished_at = case
        when (
            select count(*) from recsys.campaign_run_shards
            where run_id = %(run_id)s and state = 'done'
        ) = shard_count
            then clock_timestamp()
    end,
    message = case when %(dry_run)s then 'dry run: nothing written' else message end
where run_id = %(run_id)s
