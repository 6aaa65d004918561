-- still-scheduled offers of the run whose time zone's send time precedes the publish moment: re-timed
-- from it by joining the schedule of their (time zone, timing, channel, local send time), never
-- computed per offer. Only the users of the zones publish_schedule has (the released ones) are read,
-- each with their zone and local send time (a best_hour offer's own, publish_best_times, else the
-- configured one), and the offers are read once: the update joins them with those users and the
-- schedule. A user in a zone PostgreSQL does not know is scheduled in UTC; a user without a users
-- row too (the second branch, read only when UTC is released).
with zoned as materialized (
    select
        u.user_id,
        coalesce(z.tz, 'UTC') as tz,
        coalesce(b.send_time, %(send_time)s::time) as send_time
    from recsys.users as u
    left join publish_timezones as z on u.timezone = z.tz
    left join publish_best_times as b on u.user_id = b.user_id
    where coalesce(z.tz, 'UTC') in (select s.tz from publish_schedule as s)
    union all
    select
        o.user_id,
        'UTC' as tz,
        coalesce(b.send_time, %(send_time)s::time) as send_time
    from recsys.campaign_offers as o
    left join publish_best_times as b on o.user_id = b.user_id
    where
        exists (
            select from publish_schedule as s
            where s.tz = 'UTC'
        )
        and o.run_id = %(run_id)s and o.campaign_date = %(day)s and o.status = 'scheduled'
        and not exists (
            select from recsys.users as u
            where u.user_id = o.user_id
        )
)

update recsys.campaign_offers as o
set
    scheduled_at = s.scheduled_at,
    expires_at = s.scheduled_at + make_interval(hours => %(validity)s),
    updated_at = clock_timestamp()
from zoned, publish_schedule as s
where
    o.run_id = %(run_id)s and o.campaign_date = %(day)s and o.status = 'scheduled'
    and o.user_id = zoned.user_id
    and s.tz = zoned.tz and s.timing = o.timing and s.channel = o.channel and s.send_time = zoned.send_time
    and o.scheduled_at is distinct from s.scheduled_at
