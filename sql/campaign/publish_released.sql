-- the zones PostgreSQL knows whose send time on the date precedes the publish moment; none: nothing
-- to re-time. A run with the best_hour timing: every zone (a user's best hour may precede the
-- publish moment in any of them)
insert into publish_released
select z.tz
from publish_timezones as z
where
    %(best_hour)s
    or recsys.offer_release(%(day)s, z.tz, %(send_time)s, %(now)s)
    > recsys.offer_release(%(day)s, z.tz, %(send_time)s, '-infinity')
