-- scheduled_at from the publish moment for every (time zone, timing, channel) the publish may re-time,
-- computed once each: the released zones that users are in (one pass over the users), and UTC when
-- released (users in a zone PostgreSQL does not know, or without a users row, are scheduled in UTC).
-- Empty: nothing to re-time
with zones as (
    select distinct u.timezone as tz
    from recsys.users as u
    inner join publish_released as r on u.timezone = r.tz
    union
    select r.tz from publish_released as r
    where r.tz = 'UTC'
)

insert into publish_schedule
select
    z.tz,
    t.timing,
    q.channel,
    sch.scheduled_at
from zones as z
cross join publish_timings as t
cross join publish_quiet as q
cross join
    lateral recsys.offer_schedule(
        %(day)s, z.tz, %(send_time)s, %(now)s, t.delay_minutes, q.quiet_start, q.quiet_end
    ) as sch
