-- the earliest local send time of the date over every zone PostgreSQL knows
select min(recsys.offer_release(%(day)s, tz, %(send_time)s, '-infinity'))
from publish_timezones
