-- scheduled_at depends only on (time zone, action, local send time): computed once per combination
-- in use, then joined. Every timing but best_hour has the one configured send time; best_hour has
-- the distinct send times of its offers (stage_best_times).
create temp table stage_schedule on commit drop as
with send_times as (
    select
        %(send_time)s::time as send_time,
        false as is_best_hour
    union all
    select distinct
        b.send_time,
        true as is_best_hour
    from stage_best_times as b
)

select
    z.tz,
    a.action_id,
    st.send_time,
    sch.scheduled_at
from stage_timezones as z
cross join stage_actions as a
inner join stage_timings as t on a.timing = t.timing
inner join stage_quiet as q on a.channel = q.channel
inner join send_times as st on (a.timing = 'best_hour') = st.is_best_hour
cross join
    lateral recsys.offer_schedule(
        %(day)s, z.tz, st.send_time, %(publish_at)s, t.delay_minutes, q.quiet_start, q.quiet_end,
        st.is_best_hour, %(validity)s
    ) as sch
where z.tz = 'UTC' or z.tz in (select distinct u.timezone from recsys.users as u)
