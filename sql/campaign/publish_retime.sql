-- still-scheduled offers of the run whose time zone's send time precedes the publish moment: re-timed
-- from it by joining the schedule of their (time zone, timing, channel, local send time), never
-- computed per offer
-- (materialized: the zone is joined with the schedule on all three keys at once, never fanned out by timing)
with zoned as materialized (
    select
        o.offer_id,
        o.timing,
        o.channel,
        coalesce(z.tz, 'UTC') as tz,
        coalesce(b.send_time, %(send_time)s::time) as send_time
    from recsys.campaign_offers as o
    left join recsys.users as u on o.user_id = u.user_id
    left join publish_timezones as z on u.timezone = z.tz
    left join publish_best_times as b on o.offer_id = b.offer_id
    where o.run_id = %(run_id)s and o.campaign_date = %(day)s and o.status = 'scheduled'
),

timed as (
    select
        zoned.offer_id,
        s.scheduled_at
    from zoned
    inner join publish_schedule as s
        on
            zoned.tz = s.tz and zoned.timing = s.timing and zoned.channel = s.channel
            and zoned.send_time = s.send_time
)

update recsys.campaign_offers as o
set
    scheduled_at = timed.scheduled_at,
    expires_at = timed.scheduled_at + make_interval(hours => %(validity)s),
    updated_at = clock_timestamp()
from timed
where
    o.campaign_date = %(day)s and o.offer_id = timed.offer_id
    and o.scheduled_at is distinct from timed.scheduled_at
