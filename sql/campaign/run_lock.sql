select
    campaign_date,
    shard_count,
    state,
    dry_run,
    model_version
from recsys.campaign_runs
where run_id = %(run_id)s
for update
