update recsys.campaign_runs
set state = 'published', published_at = %(published_at)s, finished_at = coalesce(finished_at, clock_timestamp())
where run_id = %(run_id)s
