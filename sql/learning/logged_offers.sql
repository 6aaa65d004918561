-- logged offers sent in [after, before) with the features the system had when each was sent, the
-- action as catalog indices (null: not in the catalog) and the consent of the send: opted in now, or
-- sent an offer on the channel since (consent is not versioned); outcomes and features are column
-- lists composed by the caller (the view's outcome columns; its feature columns but purchase_count,
-- which comes from the same user_features row)
with later_offers as (
    select
        user_id,
        max(sent_at) filter (where channel = 'email') as email_last_at,
        max(sent_at) filter (where channel = 'sms') as sms_last_at,
        max(sent_at) filter (where channel = 'push') as push_last_at
    from recsys.v_offer_log
    where sent_at < %(before)s
    group by user_id
)

select
    o.user_id,
    o.features_as_of - date '1970-01-01' as send_day,
    o.has_features::int as has_features,
    array_position(%(types)s::text[], o.offer_type) - 1 as type_idx,
    o.offer_value::double precision as offer_value,
    array_position(%(channels)s::text[], o.channel) - 1 as channel_idx,
    array_position(%(timings)s::text[], o.timing) - 1 as timing_idx,
    {outcomes},
    o.revenue::double precision as revenue,
    {features},
    f.purchase_count,
    (coalesce(u.email_opt_in, false) or coalesce(l.email_last_at >= o.sent_at, false))::int as email_consent,
    (coalesce(u.sms_opt_in, false) or coalesce(l.sms_last_at >= o.sent_at, false))::int as sms_consent,
    (coalesce(u.push_opt_in, false) or coalesce(l.push_last_at >= o.sent_at, false))::int as push_consent
from recsys.v_logged_offers as o
left join recsys.user_features as f on o.features_as_of = f.as_of and o.user_id = f.user_id
left join recsys.users as u on o.user_id = u.user_id
left join later_offers as l on o.user_id = l.user_id
where o.sent_at < %(before)s and (%(after)s::timestamptz is null or o.sent_at >= %(after)s)
order by o.sent_at, o.offer_id
