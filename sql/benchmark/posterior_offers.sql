-- The logged offers the posterior ceiling (recsys.benchmark.posterior) learns from: every offer of
-- recsys.v_offer_log sent before the as-of moment, with its local send hour (the user's time zone)
-- and the weekday of its campaign night (the UTC date it was sent: releases and delays fall inside
-- that UTC day). Ordered by user and send time.
with logged as (
    select
        o.user_id,
        o.sent_at,
        o.offer_type,
        o.offer_value,
        o.channel,
        o.opened,
        o.clicked,
        o.converted,
        o.revenue,
        coalesce(u.timezone, 'UTC') as timezone
    from recsys.v_offer_log as o
    left join recsys.users as u on o.user_id = u.user_id
    where o.sent_at < %(as_of)s::timestamptz
),

final as (
    select
        user_id,
        offer_type,
        channel,
        offer_value::double precision as offer_value,
        coalesce(opened, false) as opened,
        coalesce(clicked, false) as clicked,
        coalesce(converted, false) as converted,
        coalesce(revenue, 0)::double precision as revenue,
        (sent_at at time zone 'UTC')::date - %(as_of)s::date as night_day,
        extract(isodow from (sent_at at time zone 'UTC')) - 1 as night_weekday,
        extract(epoch from (sent_at at time zone timezone)::time) / 3600.0 as send_local_hour
    from logged
)

select * from final
order by user_id, night_day
