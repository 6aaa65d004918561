-- the zones PostgreSQL knows whose send time on the date precedes the publish moment; none: nothing
-- to re-time
insert into publish_released
select z.tz
from publish_timezones as z
where
    recsys.offer_release(%(day)s, z.tz, %(send_time)s, %(now)s)
    > recsys.offer_release(%(day)s, z.tz, %(send_time)s, '-infinity')
