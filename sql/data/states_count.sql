-- how many users have features as of %(as_of)s (the population a bounded sample of states is drawn from)
select count(*)
from recsys.user_features as f
where f.as_of = %(as_of)s
