-- A step of a date's feature build (recsys.data.features), once per date after every shard's
-- user_stats.sql: each time zone's releases in the feature window, the sum of their local hours' unit
-- vectors (user_stats.sql sums each user's; here the users of the zone are summed in user_id order).
-- user_features.sql's local_release_hour is their circular mean. The zone of a user without a users
-- row is UTC; a zone whose users had no offer in the window has null sums.
--
-- Identifiers: {stats}, every shard's user_stats.sql rows in user_id order.

select
    s.timezone,
    sum(s.release_cos) as hour_cos,
    sum(s.release_sin) as hour_sin
from {stats} as s
group by s.timezone
