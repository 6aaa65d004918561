-- Whether the date has features, and whether they were built before migration 013 (null in its
-- prior-shrunk columns, which every build since fills; one row tells: a date is built in one
-- statement). null: no features at all.
select f.email_open_rate is null as before_priors
from recsys.user_features as f
where f.as_of = %(day)s
limit 1
