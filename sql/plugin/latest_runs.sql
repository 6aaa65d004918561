-- The Campaigns page: the newest campaign runs (by campaign date, then start) with what each scored,
-- from the counts the runs recorded (cheap however many users a night has). Params: max_rows.
select
    run_id,
    campaign_date,
    state,
    dry_run,
    model_version,
    shard_count,
    features_as_of,
    users,
    eligible_users,
    offers,
    rested_users,
    holdout_users,
    exploration_offers,
    offers_by_channel,
    offers_by_offer_type,
    offers_by_timing,
    skipped_by_reason,
    timings,
    message,
    created_at,
    published_at,
    finished_at
from recsys.v_campaign_runs
order by campaign_date desc, created_at desc
limit %(max_rows)s
