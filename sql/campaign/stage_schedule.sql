-- scheduled_at depends only on (time zone, action): computed once per pair in use, then joined
create temp table stage_schedule on commit drop as
select
    z.tz,
    a.action_id,
    sch.scheduled_at
from stage_timezones as z
cross join stage_actions as a
inner join stage_timings as t on a.timing = t.timing
inner join stage_quiet as q on a.channel = q.channel
cross join
    lateral recsys.offer_schedule(
        %(day)s, z.tz, %(send_time)s, %(publish_at)s, t.delay_minutes, q.quiet_start, q.quiet_end
    ) as sch
where z.tz = 'UTC' or z.tz in (select distinct u.timezone from recsys.users as u)
