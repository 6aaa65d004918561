-- scheduled_at from the publish moment for every (time zone, timing, channel, local send time) the
-- publish may re-time (the configured send time; best_hour: the send times of its offers),
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
),

send_times as (
    select
        %(send_time)s::time as send_time,
        false as is_best_hour
    union all
    select distinct
        b.send_time,
        true as is_best_hour
    from publish_best_times as b
)

insert into publish_schedule
select
    z.tz,
    t.timing,
    q.channel,
    st.send_time,
    sch.scheduled_at
from zones as z
cross join publish_timings as t
inner join send_times as st on (t.timing = 'best_hour') = st.is_best_hour
cross join publish_quiet as q
cross join
    lateral recsys.offer_schedule(
        %(day)s, z.tz, st.send_time, %(now)s, t.delay_minutes, q.quiet_start, q.quiet_end,
        st.is_best_hour, %(validity)s
    ) as sch
