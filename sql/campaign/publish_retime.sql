-- still-scheduled offers of the run released before the publish moment: re-timed from it
with timed as (
    select
        o.campaign_date,
        o.offer_id,
        sch.scheduled_at
    from recsys.campaign_offers as o
    inner join publish_timings as t on o.timing = t.timing
    inner join publish_quiet as q on o.channel = q.channel
    left join recsys.users as u on o.user_id = u.user_id
    left join publish_timezones as z on u.timezone = z.tz
    cross join
        lateral recsys.offer_schedule(
            o.campaign_date, coalesce(z.tz, 'UTC'), %(send_time)s, %(now)s, t.delay_minutes, q.quiet_start,
            q.quiet_end
        ) as sch
    where
        o.run_id = %(run_id)s and o.campaign_date = %(day)s and o.status = 'scheduled'
        and recsys.offer_release(o.campaign_date, coalesce(z.tz, 'UTC'), %(send_time)s, %(now)s)
        > recsys.offer_release(o.campaign_date, coalesce(z.tz, 'UTC'), %(send_time)s, '-infinity')
)

update recsys.campaign_offers as o
set
    scheduled_at = timed.scheduled_at,
    expires_at = timed.scheduled_at + make_interval(hours => %(validity)s),
    updated_at = clock_timestamp()
from timed
where
    o.campaign_date = timed.campaign_date and o.offer_id = timed.offer_id
    and o.scheduled_at is distinct from timed.scheduled_at
