-- send dates of the logged offers in the window without any point-in-time feature row
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
order by d.as_of
