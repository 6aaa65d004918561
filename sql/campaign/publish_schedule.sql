-- scheduled_at from the publish moment for every (time zone, timing, channel) the publish may re-time,
-- computed once each: the zones PostgreSQL knows that users are in and whose send time on the date
-- precedes the publish moment, and UTC when its send time does (users in a zone PostgreSQL does not
-- know, or without a users row, are scheduled in UTC). Empty: nothing to re-time
insert into publish_schedule
select
    z.tz,
    t.timing,
    q.channel,
    sch.scheduled_at
from publish_timezones as z
cross join publish_timings as t
cross join publish_quiet as q
cross join
    lateral recsys.offer_schedule(
        %(day)s, z.tz, %(send_time)s, %(now)s, t.delay_minutes, q.quiet_start, q.quiet_end
    ) as sch
where
    recsys.offer_release(%(day)s, z.tz, %(send_time)s, %(now)s)
    > recsys.offer_release(%(day)s, z.tz, %(send_time)s, '-infinity')
    -- evaluated only for a released zone: no scan of the users while none is
    and (z.tz = 'UTC' or z.tz in (select u.timezone from recsys.users as u))
