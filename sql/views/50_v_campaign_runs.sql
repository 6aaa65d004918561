-- Analysts' view of the campaign runs: one row per run with its state, model, timings and what it
-- scored, as the run recorded it in campaign_runs.counts (users, eligible, offers, rested and holdout users;
-- offers per channel, offer type and timing; skipped users per reason; summed over shards). Reading
-- the recorded counts keeps a list of many runs cheap; what happened to the offers since is in
-- v_campaign_summary and v_campaign_schedule. The Campaigns page in the Airflow UI reads it.

-- Dropped and created (not replaced): nothing depends on it, and a replace cannot change its
-- columns. `recsys db migrate` grants the analyst role select on it again.
drop view if exists recsys.v_campaign_runs;

create view recsys.v_campaign_runs as
with final as (
    select
        r.run_id,
        r.campaign_date,
        r.state,
        r.dry_run,
        r.model_version,
        r.shard_count,
        r.features_as_of,
        (r.counts ->> 'users')::bigint as users,
        (r.counts ->> 'eligible')::bigint as eligible_users,
        coalesce((r.counts ->> 'offers')::bigint, 0) as offers,
        coalesce((r.counts ->> 'rests')::bigint, 0) as rested_users,
        coalesce((r.counts ->> 'holdout')::bigint, 0) as holdout_users,
        (r.counts ->> 'exploration')::bigint as exploration_offers,
        coalesce(r.counts -> 'channel', '{}'::jsonb) as offers_by_channel,
        coalesce(r.counts -> 'offer_type', '{}'::jsonb) as offers_by_offer_type,
        coalesce(r.counts -> 'timing', '{}'::jsonb) as offers_by_timing,
        coalesce(r.counts -> 'skipped', '{}'::jsonb) as skipped_by_reason,
        r.timings,
        r.message,
        r.created_at,
        r.published_at,
        r.finished_at
    from recsys.campaign_runs as r
)

select * from final;

comment on view recsys.v_campaign_runs is
'One row per campaign run: state, model, and what it scored from campaign_runs.counts: users, eligible_users, '
'offers, rested_users (eligible, not held out, no offer tonight: the policy chose the rest), holdout_users, '
'exploration_offers, offers_by_channel / offers_by_offer_type / offers_by_timing '
'(json objects name -> offers), skipped_by_reason (json object reason -> users); timings in seconds per stage.';
