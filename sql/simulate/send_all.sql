-- the simulated sender: every scheduled offer of the night's published runs, sent at the time it would
-- have gone out had the run been published at publish_at (same schedule function as the scoring)
with timing as (
    select * from unnest(%(timings)s::text[], %(delays)s::integer[]) as t (timing, delay_minutes)
),

quiet as (
    select * from unnest(%(channels)s::text[], %(quiet_start)s::time[], %(quiet_end)s::time[])
        as q (channel, quiet_start, quiet_end)
),

due as (
    select
        o.campaign_date,
        o.offer_id,
        recsys.offer_schedule(
            o.campaign_date, coalesce(z.name, 'UTC'),
            case
                when o.timing = 'best_hour'
                    then recsys.best_send_time(
                        f.preferred_local_hour, f.preferred_hour_certainty, %(min_certainty)s, %(best_default)s
                    )
                else %(send_time)s::time
            end,
            %(publish_at)s, t.delay_minutes, q.quiet_start, q.quiet_end, o.timing = 'best_hour', %(validity)s
        ) as send_at
    from recsys.campaign_offers as o
    inner join recsys.campaign_runs as r on o.run_id = r.run_id and r.state = 'published'
    inner join timing as t on o.timing = t.timing
    left join quiet as q on o.channel = q.channel
    left join recsys.users as u on o.user_id = u.user_id
    left join pg_timezone_names as z on u.timezone = z.name
    left join recsys.user_features as f
        on o.timing = 'best_hour' and o.features_as_of = f.as_of and o.user_id = f.user_id
    where o.campaign_date = %(night)s and o.status = 'scheduled'
)

update recsys.campaign_offers as o
set
    status = 'sent',
    sent_at = d.send_at,
    attempts = o.attempts + 1,
    claimed_by = %(worker)s,
    claimed_at = d.send_at,
    updated_at = clock_timestamp()
from due as d
where o.campaign_date = d.campaign_date and o.offer_id = d.offer_id
returning o.offer_id, o.user_id, o.action_id, extract(epoch from d.send_at)::bigint as sent_at
