-- Feature dates built before migration 013 (or by an older build): their rows hold null in the
-- prior-shrunk columns, which every build since fills (email_open_rate is never null there). From
-- since (null: every date), oldest first. Read by recsys.data.features.backfill_features.
select distinct as_of
from recsys.user_features
where
    email_open_rate is null
    and (%(since)s::date is null or as_of >= %(since)s::date)
order by as_of
