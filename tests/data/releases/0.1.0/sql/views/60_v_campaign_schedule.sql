-- When a run's offers fall due: offers per run, channel and hour (UTC) of scheduled_at, with how
-- many of them were sent so far. The Campaigns page draws its scheduled-time histogram from it.

-- Dropped and created (not replaced): nothing depends on it, and a replace cannot change its
-- columns. `recsys db migrate` grants the analyst role select on it again.
drop view if exists recsys.v_campaign_schedule;

create view recsys.v_campaign_schedule as
with hours as (
    select
        o.run_id,
        o.campaign_date,
        o.channel,
        date_trunc('hour', o.scheduled_at, 'UTC') as scheduled_hour,
        count(*) as offers,
        count(*) filter (where o.status = 'sent') as sent
    from recsys.campaign_offers as o
    group by o.run_id, o.campaign_date, o.channel, date_trunc('hour', o.scheduled_at, 'UTC')
),

final as (
    select * from hours
)

select * from final;

comment on view recsys.v_campaign_schedule is
'Offers per run, channel and scheduled hour (scheduled_hour: scheduled_at truncated to the hour, shown in UTC), '
'and how many of them were sent so far.';
