-- Analysts' view of the campaign runs: one row per run with its state, model, timings and what it
-- wrote (offers per channel, offer type and timing counted from campaign_offers; holdout users
-- counted from campaign_holdout; skipped users per reason as the run recorded them). The Campaigns
-- page in the Airflow UI reads it. The counts are lateral subqueries on the run_id indexes, so a
-- query for a few runs reads only their offers.

create or replace view recsys.v_campaign_runs as
with final as (
    select
        r.run_id,
        r.campaign_date,
        r.state,
        r.dry_run,
        r.model_version,
        r.shard_count,
        r.features_as_of,
        coalesce(o.offers, 0) as offers,
        coalesce(h.holdout_users, 0) as holdout_users,
        coalesce(o.offers_by_channel, '{}'::jsonb) as offers_by_channel,
        coalesce(o.offers_by_offer_type, '{}'::jsonb) as offers_by_offer_type,
        coalesce(o.offers_by_timing, '{}'::jsonb) as offers_by_timing,
        coalesce(r.counts -> 'skipped', '{}'::jsonb) as skipped_by_reason,
        o.first_scheduled_at,
        o.last_scheduled_at,
        r.counts,
        r.timings,
        r.message,
        r.created_at,
        r.published_at,
        r.finished_at
    from recsys.campaign_runs as r
    left join lateral (
        select
            sum(g.n) filter (where g.channel is null and g.offer_type is null and g.timing is null)::bigint as offers,
            min(g.first_at) as first_scheduled_at,
            max(g.last_at) as last_scheduled_at,
            jsonb_object_agg(g.channel, g.n) filter (where g.channel is not null) as offers_by_channel,
            jsonb_object_agg(g.offer_type, g.n) filter (where g.offer_type is not null) as offers_by_offer_type,
            jsonb_object_agg(g.timing, g.n) filter (where g.timing is not null) as offers_by_timing
        from (
            select
                co.channel,
                co.offer_type,
                co.timing,
                count(*) as n,
                min(co.scheduled_at) as first_at,
                max(co.scheduled_at) as last_at
            from recsys.campaign_offers as co
            where co.run_id = r.run_id
            group by grouping sets ((co.channel), (co.offer_type), (co.timing), ())
        ) as g
    ) as o on true
    left join lateral (
        select count(*) as holdout_users
        from recsys.campaign_holdout as ch
        where ch.run_id = r.run_id
    ) as h on true
)

select * from final;

comment on view recsys.v_campaign_runs is
'One row per campaign run: state, model, offers by channel / offer type / timing (from campaign_offers), '
'holdout users, skipped users by reason (campaign_runs.counts -> ''skipped''), timings.';
