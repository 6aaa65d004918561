-- send dates of the logged offers in the window without any point-in-time feature row, or whose
-- rows were built before migration 013 (null in its prior-shrunk columns, which every build since
-- fills: email_open_rate is never null there; one row tells, a date is built in one statement)
with send_dates as (
    select distinct features_as_of as as_of
    from recsys.v_offer_log
    where sent_at < %(before)s and (%(after)s::timestamptz is null or sent_at >= %(after)s)
)

select d.as_of
from send_dates as d
where
    not exists (
        select from recsys.user_features as f
        where f.as_of = d.as_of
    )
    or (
        select f.email_open_rate is null
        from recsys.user_features as f
        where f.as_of = d.as_of
        limit 1
    )
order by d.as_of
